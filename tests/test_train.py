"""Training glue: weight-decay groups, warm-up schedules, TaskBase's optimiser set-up, the selective-copying
batches, and a few Trainer steps of SelectiveCopyTask with a finite, moving loss."""
import math

import lightning as L
import pytest
import torch
import torch.nn as nn

from ssmkit.core.blocks import SequenceModel
from ssmkit.core.layers import Mamba
from ssmkit.selective_copy import IGNORE, SelectiveCopyData, SelectiveCopyTask, selective_copy_batch
from ssmkit.data import ResumableDataModule, ResumableSampler, ResumableStream, StreamLoader
from ssmkit.train import (LossHistory, RandomStateCheckpoint, TaskBase, no_weight_decay_names, param_groups,
                          warmup_then)


class WithPosEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def no_weight_decay(self):
        return {"pos_embed"}


def test_no_weight_decay_names():
    model = SequenceModel(10, 16, 2, mixer=lambda i: Mamba(16, d_state=4))
    names = no_weight_decay_names(model)
    for i in range(2):
        p = f"backbone.layers.{i}."
        assert {p + "mixer.A_log", p + "mixer.D", p + "mixer.dt_proj.bias", p + "mixer.conv1d.bias",
                p + "norm.weight"} <= names
        assert not {p + "mixer.in_proj.weight", p + "mixer.out_proj.weight", p + "mixer.conv1d.weight"} & names
    assert "backbone.norm_f.weight" in names and "backbone.embedding.weight" not in names
    wrapped = nn.Sequential(WithPosEmbed())
    assert no_weight_decay_names(wrapped) == {"0.pos_embed", "0.proj.bias", "0.norm.weight", "0.norm.bias"}


def test_param_groups_partition_trainable_parameters():
    model = nn.Sequential(WithPosEmbed(), nn.Linear(8, 3))
    model[1].weight.requires_grad_(False)
    groups = param_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert decay == {id(model[0].proj.weight)}
    assert no_decay == {id(p) for p in (model[0].pos_embed, model[0].proj.bias, model[0].norm.weight,
                                        model[0].norm.bias, model[1].bias)}
    only_biases = param_groups(nn.Sequential(nn.LayerNorm(3)), 0.1)
    assert len(only_biases) == 1 and only_biases[0]["weight_decay"] == 0.0


def test_warmup_then_schedules():
    f = warmup_then("cosine", 4, 14, min_lr_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    lin = warmup_then("linear", 0, 10)
    assert [lin(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    const = warmup_then(None, 2, 10)
    assert [const(s) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="scheduler must be one of"):
        warmup_then("step", 0, 10)


def test_taskbase_optimizer_setup_without_trainer():
    task = SelectiveCopyTask(d_model=8, n_layer=1, d_state=4, lr=1e-2, weight_decay=0.1)
    opt = task.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(g["lr"] == 1e-2 for g in opt.param_groups)
    n_params = sum(1 for p in task.parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == n_params
    sched = SelectiveCopyTask(d_model=8, n_layer=1, d_state=4, scheduler="cosine", warmup_steps=2)
    cfg = sched.configure_optimizers()
    assert cfg["lr_scheduler"]["interval"] == "step"
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TaskBase(optimizer="lion")
    with pytest.raises(ValueError, match="scheduler must be one of"):
        TaskBase(scheduler="exp")


def test_extra_param_groups_are_taken_out_of_the_defaults():
    class Task(TaskBase):
        def __init__(self):
            super().__init__(lr=0.1, weight_decay=0.5, optimizer="sgd")
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def extra_param_groups(self):
            return [{"params": [self.b.weight], "lr": 0.01, "weight_decay": 0.0}]

    task = Task()
    opt = task.configure_optimizers()
    groups = [({id(p) for p in g["params"]}, g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert groups == [({id(task.a.weight)}, 0.1, 0.5), ({id(task.a.bias), id(task.b.bias)}, 0.1, 0.0),
                      ({id(task.b.weight)}, 0.01, 0.0)]


def test_selective_copy_batch_layout():
    tokens, targets = selective_copy_batch(0, 0, range(3), 12, 4, 5)
    assert tokens.shape == targets.shape == (3, 16)
    for b in range(3):
        context = tokens[b, :12]
        data = context[context != 0]
        assert len(data) == 4 and ((data >= 1) & (data <= 5)).all()
        assert (tokens[b, 12:] == 6).all()
        assert torch.equal(targets[b, 12:], data)  # the i-th marker's output is the i-th data token
        assert (targets[b, :12] == IGNORE).all()
    # an example depends on (seed, stream, index) only: any process can make any example
    again = selective_copy_batch(0, 0, [2, 0], 12, 4, 5)
    assert torch.equal(again[0], tokens[[2, 0]]) and torch.equal(again[1], targets[[2, 0]])
    other = selective_copy_batch(1, 0, range(3), 12, 4, 5)[0]
    assert not torch.equal(other, tokens)
    with pytest.raises(ValueError, match="n_tokens=5 must be <= seq_len=4"):
        selective_copy_batch(0, 0, range(1), 4, 5, 5)


def test_selective_copy_fit_few_steps(tmp_path):
    L.seed_everything(0, verbose=False)
    data = SelectiveCopyData(seq_len=12, n_tokens=3, vocab=4, batch_size=8, val_batches=1)
    task = SelectiveCopyTask(vocab=4, d_model=16, n_layer=1, d_state=4, lr=1e-2, scheduler="cosine", warmup_steps=2)
    before = [p.detach().clone() for p in task.parameters()]
    history = LossHistory()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[history], limit_val_batches=1, val_check_interval=4, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data)
    assert len(history.losses) == 4 and all(math.isfinite(x) for x in history.losses)
    assert math.isfinite(float(trainer.callback_metrics["val/loss"]))
    assert 0.0 <= float(trainer.callback_metrics["val/accuracy"]) <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 4  # stepped once per optimiser step
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * warmup_then("cosine", 2, 4)(4))


def test_resumable_sampler_shards_like_one_process_and_skips_what_was_trained():
    data = list(range(23))
    one = list(ResumableSampler(data, seed=5))
    assert sorted(one) == data
    ranks = [list(ResumableSampler(data, num_replicas=2, rank=r, seed=5)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 12  # DistributedSampler pads to equal shards
    # step i of 2 ranks at batch 3 reads exactly what step i of one process at batch 6 reads
    for i in range(3):
        assert sorted(ranks[0][3 * i:3 * i + 3] + ranks[1][3 * i:3 * i + 3]) == sorted(one[6 * i:6 * i + 6])
    assert not set(ranks[0][:9]) & set(ranks[1][:9])
    later = ResumableSampler(data, seed=5)
    later.set_epoch(1)
    epoch1 = list(later)
    assert epoch1 != one and sorted(epoch1) == data
    resumed = ResumableSampler(data, seed=5, skip_epoch=1, skip_samples=8)
    assert list(resumed) == epoch1[8:] and len(resumed) == 23  # Lightning counts the skipped batches itself
    resumed.set_epoch(2)
    later.set_epoch(2)
    assert list(resumed) == list(later)


class RangeData(ResumableDataModule):
    def __init__(self, num_workers):
        super().__init__()
        self.num_workers = num_workers

    def loader(self, split):
        return self.split_loader(list(range(10 if split == "train" else 4)), split == "train", 3, 7, self.num_workers)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_split_loaders_read_the_sampler_order_without_drawing_on_the_global_random_state(num_workers):
    dm = RangeData(num_workers)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    train = [b.tolist() for b in dm.train_dataloader()]
    assert sum(train, []) == list(ResumableSampler(list(range(10)), seed=7))
    assert [b.tolist() for b in dm.test_dataloader()] == [[0, 1, 2], [3]] == [b.tolist() for b in dm.val_dataloader()]
    assert torch.equal(torch.get_rng_state(), before)  # a loader without its own generator draws a base seed here


def test_a_data_module_without_splits_names_the_missing_split():
    with pytest.raises(NotImplementedError, match="ResumableDataModule serves no 'test' split"):
        ResumableDataModule().test_dataloader()


class IndexStream(ResumableStream):
    def make_batch(self, indices):
        return torch.tensor(list(indices))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stream_is_sharded_by_rank_and_worker_and_starts_at_its_position(num_workers):
    def steps(rank, world, batch, start, n):
        loader = StreamLoader(IndexStream(batch, rank, world), lambda: start, num_workers=num_workers)
        it = iter(loader)
        return [next(it).tolist() for _ in range(n)]
    one = steps(0, 1, 4, 0, 4)
    assert one == [list(range(4 * s, 4 * s + 4)) for s in range(4)]
    r0, r1 = steps(0, 2, 2, 0, 4), steps(1, 2, 2, 0, 4)
    for s in range(4):
        assert sorted(r0[s] + r1[s]) == one[s] and not set(r0[s]) & set(r1[s])
    assert steps(1, 2, 2, 3, 1) == [r1[3]]
    with pytest.raises(ValueError, match="persistent_workers"):
        StreamLoader(IndexStream(2), lambda: 0, num_workers=1, persistent_workers=True)


def _fit_selective_copy(tmp_path, max_steps, ckpt_path=None, every=None):
    L.seed_everything(0, verbose=False)
    data = SelectiveCopyData(seq_len=12, n_tokens=3, vocab=4, batch_size=4, val_batches=1)
    task = SelectiveCopyTask(vocab=4, d_model=8, n_layer=1, d_state=4, lr=1e-2)
    history = LossHistory()
    callbacks = [history]
    if every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=every,
                                                             save_top_k=-1))
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=bool(every), enable_progress_bar=False, enable_model_summary=False,
                        callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(task, datamodule=data, ckpt_path=ckpt_path)
    return history.losses, trainer


def test_selective_copy_resume_in_process_continues_the_stream(tmp_path):
    full, _ = _fit_selective_copy(tmp_path / "a", 6, every=3)
    ckpt = tmp_path / "a" / "epoch=0-step=3.ckpt"
    state = torch.load(ckpt, weights_only=False)["SelectiveCopyData"]
    assert state == {"epoch": 0, "batches": 3, "total_batches": 3}
    resumed, _ = _fit_selective_copy(tmp_path / "b", 6, ckpt_path=str(ckpt))
    assert resumed == full[3:]


class NaNAtStep(TaskBase):
    def __init__(self, bad_step, metric="loss"):
        super().__init__(lr=1e-2)
        self.lin, self.bad_step, self.metric = nn.Linear(2, 1), bad_step, metric

    def training_step(self, batch, batch_idx):
        loss = self.lin(batch[0]).pow(2).mean()
        other = torch.tensor(0.5)
        if self.global_step == self.bad_step:
            if self.metric == "loss":
                loss = loss * float("nan")
            else:
                other = torch.tensor(float("inf"))
        self.log_metrics("train", {"loss": loss, "other": other})
        return loss


@pytest.mark.parametrize("metric", ["loss", "other"])
def test_training_stops_at_the_first_non_finite_loss_or_metric(tmp_path, metric):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 2)), batch_size=2)
    task = NaNAtStep(3, metric)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    value = "nan" if metric == "loss" else "inf"
    with pytest.raises(FloatingPointError, match=rf"non-finite train/{metric} = {value} at global step 3 \(epoch 0\)"):
        trainer.fit(task, data)
    assert trainer.global_step == 3  # the step with the NaN did not update the weights
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_random_states_are_saved_and_restored_per_process():
    import random

    import numpy as np
    cb = RandomStateCheckpoint()
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    state = cb.state_dict()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    cb.load_state_dict(state)

    class T:
        global_rank = 0
    cb.on_train_start(T(), None)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


class FirstRows(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rows.append(batch[0][:, :12].clone())


def test_stream_continues_across_epochs_under_limit_train_batches(tmp_path):
    """An endless stream cut into epochs by limit_train_batches continues where the last epoch stopped."""
    L.seed_everything(0, verbose=False)
    data = SelectiveCopyData(seq_len=12, n_tokens=3, vocab=4, batch_size=2, val_batches=1)
    seen = FirstRows()
    trainer = L.Trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[seen], default_root_dir=tmp_path)
    trainer.fit(SelectiveCopyTask(vocab=4, d_model=8, n_layer=1, d_state=4), datamodule=data)
    expected = [selective_copy_batch(0, 0, range(2 * s, 2 * s + 2), 12, 3, 4)[0][:, :12] for s in range(6)]
    assert len(seen.rows) == 6 and all(torch.equal(a, b) for a, b in zip(seen.rows, expected))
