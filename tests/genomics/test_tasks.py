"""Tasks: MLM masking proportions, exact per-token eval metrics, no weight decay on Hyena filters/norms/biases,
classification metrics against brute force, pooling over real tokens, fine-tuning from a pretraining checkpoint,
and `ssmkit dna sample` end to end."""
import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssmkit.genomics.cli import dna_main
from ssmkit.genomics.data import GenomeDataModule
from ssmkit.genomics.models import CNN, DNAxLSTM, HyenaDNA
from ssmkit.genomics.sample import kmer_spectrum
from ssmkit.genomics.store import build_genome_store
from ssmkit.genomics.task import DNAPretrainTask, SequenceClassificationTask, classification_metrics, mlm_mask
from ssmkit.genomics.tokenizer import MASK, PAD


def test_genomics_mlm_mask_is_bert_80_10_10():
    ids = torch.randint(7, 11, (200, 500))
    ids[:, :50] = PAD
    inputs, targets = mlm_mask(ids, torch.Generator().manual_seed(0))
    sel = targets != PAD
    assert (ids[:, :50][sel[:, :50]]).numel() == 0  # padding is never selected
    assert abs(sel[:, 50:].float().mean().item() - 0.15) < 0.005
    assert torch.equal(targets[sel], ids[sel])
    masked = (inputs[sel] == MASK).float().mean().item()
    unchanged = (inputs[sel] == ids[sel]).float().mean().item()  # 10% kept + random draws equal to the base
    assert abs(masked - 0.8) < 0.01 and abs(unchanged - (0.1 + 0.1 / 4)) < 0.01
    assert torch.equal(inputs[~sel], ids[~sel])


def test_genomics_pretrain_eval_metrics_are_per_token_over_the_epoch():
    torch.manual_seed(0)
    model = HyenaDNA(d_model=16, n_layer=1, l_max=40, embed_dropout=0.0).eval()
    task = DNAPretrainTask(model)
    batches = [torch.randint(7, 11, (3, 20)), torch.randint(7, 11, (1, 20))]
    for i, b in enumerate(batches):
        task._eval_step("val", b, i)
    total = sum(F.cross_entropy(model(b[:, :-1]).reshape(-1, 16), b[:, 1:].reshape(-1), reduction="sum").item()
                for b in batches)
    sums = task._sums["val"]
    assert sums[1].item() == 4 * 19
    assert math.isclose(sums[0].item(), total, rel_tol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        DNAPretrainTask(DNAxLSTM(d_model=16, n_layer=1, bidirectional=True), objective="clm")


def test_genomics_no_weight_decay_on_hyena_filters_norms_biases():
    task = DNAPretrainTask(HyenaDNA(d_model=16, n_layer=2, l_max=40), weight_decay=0.1, scheduler=None)
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in task.named_parameters():
        no_decay = "implicit_filter" in name or p.ndim < 2 or "norm" in name
        assert (decay_of[id(p)] == 0.0) == no_decay, name


def test_genomics_classification_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    cm = torch.zeros(3, 3, dtype=torch.long)
    for a, b in zip(y, p):
        cm[a, b] += 1
    m = classification_metrics(cm)
    assert math.isclose(m["accuracy"].item(), float((y == p).mean()))
    f1s = []
    for c in range(3):
        tp = ((y == c) & (p == c)).sum()
        prec, rec = tp / max(1, (p == c).sum()), tp / max(1, (y == c).sum())
        f1s.append(0 if tp == 0 else 2 * prec * rec / (prec + rec))
    assert math.isclose(m["f1"].item(), float(np.mean(f1s)), rel_tol=1e-9)
    # binary MCC from its textbook formula
    y2, p2 = y % 2, p % 2
    tp, tn = ((y2 == 1) & (p2 == 1)).sum(), ((y2 == 0) & (p2 == 0)).sum()
    fp, fn = ((y2 == 0) & (p2 == 1)).sum(), ((y2 == 1) & (p2 == 0)).sum()
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    cm2 = torch.tensor([[tn, fp], [fn, tp]])
    assert math.isclose(classification_metrics(cm2)["mcc"].item(), mcc, rel_tol=1e-9)


def test_genomics_mean_pooling_ignores_left_padding():
    task = SequenceClassificationTask(CNN(d_model=8, n_layer=1), pooling="mean")
    hidden = torch.randn(2, 5, 8)
    ids = torch.tensor([[PAD, PAD, 7, 8, 9], [7, 8, 9, 10, 7]])
    torch.testing.assert_close(task.pool(hidden, ids)[0], hidden[0, 2:].mean(0))
    task.pooling = "first"
    torch.testing.assert_close(task.pool(hidden, ids), torch.stack([hidden[0, 2], hidden[1, 0]]))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    rng = np.random.default_rng(0)
    fa = d / "g.fa"
    fa.write_text(">c1\n" + "".join(rng.choice(list("ACGT"), 4000)) + "\n")
    build_genome_store([fa], d / "g.zarr")
    L.seed_everything(0)
    task = DNAPretrainTask(HyenaDNA(d_model=16, n_layer=1, l_max=66), lr=3e-3, scheduler=None)
    dm = GenomeDataModule(str(d / "g.zarr"), seq_len=64, batch_size=4, batches_per_epoch=3)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(task, dm)
    trainer.save_checkpoint(d / "pre.ckpt")
    assert dm.state_dict()["batches_done"] == 3
    return d, task


def test_genomics_finetune_loads_pretrained_backbone(pretrained):
    d, task = pretrained
    fresh = HyenaDNA(d_model=16, n_layer=1, l_max=66)
    clf = SequenceClassificationTask(fresh, num_classes=2, init_from=str(d / "pre.ckpt"))
    for (k, a), b in zip(clf.backbone.state_dict().items(), task.model.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="does not fit"):
        SequenceClassificationTask(HyenaDNA(d_model=8, n_layer=1, l_max=66), init_from=str(d / "pre.ckpt"))


def test_genomics_dna_sample_cli(pretrained, tmp_path, capsys):
    d, _ = pretrained
    out = tmp_path / "s.fa"
    assert dna_main(["sample", "--checkpoint", str(d / "pre.ckpt"), "--length", "30", "--n", "2", "--out", str(out),
                     "--genome", str(d / "g.zarr"), "--k", "3"]) == 0
    from Bio import SeqIO
    recs = list(SeqIO.parse(out, "fasta"))
    assert len(recs) == 2 and all(len(r.seq) == 30 and set(str(r.seq)) <= set("ACGT") for r in recs)
    text = capsys.readouterr().out
    assert "GC content" in text and "kmer3_tv_samples" in text


def test_genomics_kmer_spectrum_counts():
    ids = np.array([7, 8, 7, 8, 11, 7, 8])  # ACAC N AC: 2-mers AC, CA, AC, (CN, NA skipped), AC
    spec = kmer_spectrum(ids, 2)
    assert spec[0 * 4 + 1] == pytest.approx(3 / 4) and spec[1 * 4 + 0] == pytest.approx(1 / 4)


def test_genomics_step_sampling_equals_recomputed_forward_sampling():
    from ssmkit.genomics.sample import sample
    torch.manual_seed(0)
    model = DNAxLSTM(d_model=16, n_layer=2, s_lstm_at=(1,), chunk_size=4).double().eval()

    class NoStep(torch.nn.Module):  # the same model seen without `step`: full forward per new base
        causal = True

        def forward(self, ids):
            return model(ids)

    a = sample(model, 12, 3, prompt="ACGT", seed=3)
    assert a == sample(NoStep(), 12, 3, prompt="ACGT", seed=3)
    assert all(len(s) == 12 for s in a) and len(set(a)) > 1


@pytest.mark.parametrize("config", sorted(p.name for p in
                                          __import__("pathlib").Path(__file__).parents[2].joinpath(
                                              "configs", "genomics").glob("*.yaml")))
def test_genomics_configs_parse(config, capsys):
    """Every shipped config resolves its classes and arguments (LightningCLI --print_config)."""
    import pathlib

    from ssmkit.cli import lightning_cli
    path = pathlib.Path(__file__).parents[2] / "configs" / "genomics" / config
    with pytest.raises(SystemExit) as e:
        lightning_cli(["fit", "--config", str(path), "--print_config"])
    assert e.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def test_genomics_checkpoint_from_cli_config_loads(tmp_path):
    """`ssmkit fit` stores the model as {class_path, init_args}; sampling must rebuild it from that."""
    from ssmkit.genomics.sample import load_pretrain_checkpoint
    model = HyenaDNA(d_model=16, n_layer=1, l_max=34)
    task = DNAPretrainTask(model)
    hp = {"_class_path": "ssmkit.genomics.task.DNAPretrainTask", "objective": "clm",
          "model": {"class_path": "ssmkit.genomics.models.hyenadna.HyenaDNA",
                    "init_args": {"d_model": 16, "n_layer": 1, "l_max": 34}}}
    torch.save({"hyper_parameters": hp, "state_dict": task.state_dict()}, tmp_path / "cli.ckpt")
    loaded = load_pretrain_checkpoint(tmp_path / "cli.ckpt")
    ids = torch.randint(7, 11, (2, 20))
    torch.testing.assert_close(loaded.model(ids), model.eval()(ids))
