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
from ssmkit.train import LossHistory, TaskBase, no_weight_decay_names, param_groups, warmup_then


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
    g = torch.Generator().manual_seed(0)
    tokens, targets = selective_copy_batch(g, 3, 12, 4, 5)
    assert tokens.shape == targets.shape == (3, 16)
    for b in range(3):
        context = tokens[b, :12]
        data = context[context != 0]
        assert len(data) == 4 and ((data >= 1) & (data <= 5)).all()
        assert (tokens[b, 12:] == 6).all()
        assert torch.equal(targets[b, 12:], data)  # the i-th marker's output is the i-th data token
        assert (targets[b, :12] == IGNORE).all()
    again = selective_copy_batch(torch.Generator().manual_seed(0), 3, 12, 4, 5)
    assert torch.equal(again[0], tokens) and torch.equal(again[1], targets)
    with pytest.raises(ValueError, match="n_tokens=5 must be <= seq_len=4"):
        selective_copy_batch(g, 1, 4, 5, 5)


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
