"""AutoregressiveAudioTask (bits/sample, optimiser groups), generate() and `ssmkit generate` end to end."""
import importlib
import json
import math
import pathlib

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from ssmkit import cli
from ssmkit.audio import AutoregressiveAudioTask, FSDDDataModule, SaShiMi, generate
from ssmkit.audio.data import IGNORE_INDEX
from ssmkit.audio.generate import _nucleus, main
from ssmkit.audio.quantize import SILENCE
from ssmkit.core.layers import S4, S4D

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "audio"
TINY = {"class_path": "ssmkit.audio.SaShiMi", "init_args": {"d_model": 8, "n_layers": 1, "d_state": 4}}


def _fsdd(root, n=3):
    root.mkdir()
    rng = np.random.default_rng(0)
    for d in range(2):
        for take in range(n + 5):
            t = np.arange(150 + 7 * take) / 8000
            x = 0.4 * np.sin(2 * np.pi * (300 + 100 * d) * t) + 0.01 * rng.standard_normal(t.shape)
            sf.write(root / f"{d}_spk_{take}.wav", x.astype(np.float32), 8000, subtype="PCM_16")
    return root


def test_optimizer_groups_split_ssm_parameters():
    spec = {"class_path": "ssmkit.audio.SaShiMi", "init_args": {**TINY["init_args"], "ssm_lr": 1e-3}}
    task = AutoregressiveAudioTask(spec, lr=4e-3, weight_decay=0.1, scheduler=None)
    groups = task.configure_optimizers().param_groups
    kernels = [m.kernel for m in task.model.modules() if isinstance(m, (S4, S4D))]
    ssm = {id(p) for k in kernels for n, p in k.named_parameters() if n in ("inv_dt", "A_real", "A_imag", "B", "P")}
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in task.parameters())  # every parameter exactly once
    ssm_groups = [g for g in groups if any(id(p) in ssm for p in g["params"])]
    assert len(ssm_groups) == 1 and {id(p) for p in ssm_groups[0]["params"]} == ssm
    assert ssm_groups[0].get("lr") == 1e-3 and ssm_groups[0]["weight_decay"] == 0.0
    decayed = [g for g in groups if g["weight_decay"] == 0.1]
    assert len(decayed) == 1 and decayed[0]["lr"] == 4e-3
    assert id(task.model.head.weight) in {id(p) for p in decayed[0]["params"]}


def test_validation_bits_per_sample_is_the_exact_average(tmp_path):
    torch.manual_seed(0)
    dm = FSDDDataModule(str(_fsdd(tmp_path / "rec")), window=64, batch_size=3, eval_batch_size=5, val_fraction=0.3)
    task = AutoregressiveAudioTask(TINY)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(task, dm)
    got = trainer.validate(task, dm, verbose=False)[0]["val/bits_per_sample"]
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in dm.datasets["val"]:
            logp = F.log_softmax(task.model.double()(x[None])[0], -1)
            keep = y != IGNORE_INDEX
            total -= float(logp[keep].gather(-1, y[keep, None]).sum())
            count += int(keep.sum())
    assert abs(got - total / count / math.log(2)) < 1e-4
    assert task.hparams.audio_sample_rate == 8000 and task.hparams.audio_quantization == "mu-law"


def test_nucleus_keeps_the_smallest_top_mass_set():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.3, 0.15]]))
    kept = torch.isfinite(_nucleus(logits, 0.7))
    assert kept.tolist() == [[False, True, True, False]]  # 0.5 + 0.3 >= 0.7
    assert torch.isfinite(_nucleus(logits, 1.0)).all() and torch.isfinite(_nucleus(logits, 0.01)).sum() == 1


def test_generate_reports_the_models_own_log_likelihood():
    torch.manual_seed(0)
    model = SaShiMi(d_model=8, n_layers=1, d_state=4).eval()
    codes, bits = generate(model, n=3, length=40, batch_size=2, seed=1, progress=False)
    assert codes.shape == (3, 40) and codes.min() >= 0 and codes.max() < 256
    with torch.no_grad():
        inputs = F.pad(codes[:, :-1], (1, 0), value=SILENCE)
        logp = F.log_softmax(model(inputs).double(), -1).gather(-1, codes[..., None]).squeeze(-1)
    torch.testing.assert_close(bits, logp.mean(1) / math.log(2), rtol=1e-4, atol=1e-4)
    again, _ = generate(model, n=3, length=40, batch_size=2, seed=1, progress=False)
    assert torch.equal(codes, again)  # seeded
    cold, _ = generate(model, n=2, length=40, temperature=1e-4, seed=2, progress=False)
    with torch.no_grad():
        greedy = model(F.pad(cold[:, :-1], (1, 0), value=SILENCE)).argmax(-1)
    assert torch.equal(cold, greedy)
    with pytest.raises(ValueError, match="no step mode"):
        generate(torch.nn.Linear(2, 2), 1, 4)


class _StepOnly(torch.nn.Module):
    """A SaShiMi seen through `initial_state` / `step` only (no `stepper`): generate's functional path."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def initial_state(self, batch_size):
        return self.model.initial_state(batch_size)

    def step(self, code, state):
        return self.model.step(code, state)


def test_generate_uses_the_current_weights_across_chunks(monkeypatch):
    monkeypatch.setattr(importlib.import_module("ssmkit.audio.generate"), "GUMBEL_CHUNK", 16)  # chunks 16, 16, 8
    torch.manual_seed(0)
    model = SaShiMi(d_model=8, n_layers=1, d_state=4).eval()

    def forward_bits(codes):  # oracle: the convolutional forward on the drawn codes, teacher-forced
        with torch.no_grad():
            logp = F.log_softmax(model(F.pad(codes[:, :-1], (1, 0), value=SILENCE)).double(), -1)
        return logp.gather(-1, codes[..., None]).squeeze(-1).mean(1) / math.log(2)

    for change in range(2):
        if change:  # in place, as an optimiser step does: the next generate must see it (a stepper per call)
            with torch.no_grad():
                for layer in (m for m in model.modules() if isinstance(m, S4)):
                    layer.kernel.inv_dt.add_(1.0)
                model.head.bias.add_(torch.randn(256))
        codes, bits = generate(model, n=3, length=40, batch_size=2, seed=1, progress=False)
        torch.testing.assert_close(bits, forward_bits(codes), rtol=1e-4, atol=1e-4)
        functional, functional_bits = generate(_StepOnly(model), n=3, length=40, batch_size=2, seed=1, progress=False)
        assert torch.equal(codes, functional)
        torch.testing.assert_close(bits, functional_bits, rtol=1e-5, atol=1e-5)


def test_fit_config_then_generate_command_writes_ranked_wavs(tmp_path, capsys):
    root = _fsdd(tmp_path / "rec")
    assert cli.main(["fit", "--config", str(CONFIGS / "sashimi_small_fsdd.yaml"), "--data.root", str(root),
                     "--data.window=64", "--data.batch_size=4", "--trainer.max_epochs=1",
                     "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false",
                     "--trainer.default_root_dir", str(tmp_path / "run")]) == 0
    ckpt, = (tmp_path / "run").rglob("best.ckpt")
    out = tmp_path / "samples"
    assert cli.main(["generate", "--checkpoint", str(ckpt), "--seconds", "0.05", "--n", "3", "--out", str(out),
                     "--top-p", "0.9", "--no-progress"]) == 0
    printed = capsys.readouterr().out.split()
    record = json.loads((out / "samples.json").read_text())
    assert [r["rank"] for r in record] == [0, 1, 2]
    assert [r["nll_bits_per_sample"] for r in record] == sorted(r["nll_bits_per_sample"] for r in record)
    for r in record:
        data, rate = sf.read(out / r["wav"])
        assert rate == 8000 and data.shape == (400,) and np.abs(data).max() <= 1
        assert (out / r["png"]).stat().st_size > 1000
        assert str((out / r["wav"]).resolve()) in printed
    (tmp_path / "bad.ckpt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.ckpt"):
        main(["--checkpoint", str(tmp_path / "bad.ckpt"), "--out", str(out)])
