"""AutoregressiveAudioTask: next-sample prediction over 256 classes on 8-bit waveform windows.

Loss: cross-entropy over the codes of each window (padding targets = `IGNORE_INDEX` are skipped); validation and test
report the NLL in bits per sample (nats / ln 2), averaged over every real sample of the split. Optimiser: AdamW with
the SaShiMi paper's settings (lr 1e-3, no weight decay on SC09; ReduceLROnPlateau x0.2, patience 20, on val/loss);
the S4/S4D SSM parameters (dt, A, B, P) land in their own group through the core layers' `_optim` hints
(`ssmkit.train.param_groups`): no weight decay and the model's `ssm_lr` (1e-3, the S4 default, lower than the
4e-3 used for music). The model is given as a class_path config (optionally with a `preset`), saved in the
hyper-parameters, so `load_from_checkpoint` rebuilds it; the data module's sample rate and quantisation are recorded
as `audio_sample_rate` / `audio_quantization` (other names than the data module's, which Lightning merges with ours).
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.train import TaskBase

from .data import IGNORE_INDEX
from .quantize import N_CLASSES, QUANTIZATIONS


def build_model(spec: Dict[str, Any]) -> nn.Module:
    """An nn.Module from `{"class_path": ..., "init_args": {...}}`, or `{"class_path", "preset", "init_args"}` for
    `cls.from_preset(preset, **init_args)`."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"model must be a {{class_path, init_args}} config dict, got {spec!r}")
    unknown = set(spec) - {"class_path", "init_args", "preset"}
    if unknown:
        raise ValueError(f"model config has unknown keys {sorted(unknown)}")
    module, _, name = spec["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"model class_path {spec['class_path']!r} cannot be imported: {e}") from e
    kwargs = dict(spec.get("init_args") or {})
    return cls.from_preset(spec["preset"], **kwargs) if spec.get("preset") else cls(**kwargs)


class AutoregressiveAudioTask(TaskBase):
    """LightningModule for any codes (B, L) -> logits (B, L, 256) model (SaShiMi, WaveNet)."""

    def __init__(self, model: Dict[str, Any], lr: float = 1e-3, weight_decay: float = 0.0,
                 scheduler: Optional[str] = "plateau", plateau_factor: float = 0.2, plateau_patience: int = 20,
                 warmup_steps: int = 0, betas: Tuple[float, float] = (0.9, 0.999),
                 audio_sample_rate: Optional[int] = None, audio_quantization: Optional[str] = None):
        if scheduler == "plateau" and warmup_steps:
            raise ValueError(f"warmup_steps must be 0 with scheduler='plateau', got {warmup_steps}")
        if audio_quantization not in (None, *QUANTIZATIONS):
            raise ValueError(f"audio_quantization must be one of {QUANTIZATIONS}, got {audio_quantization!r}")
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer="adamw",
                         scheduler=None if scheduler == "plateau" else scheduler, warmup_steps=warmup_steps,
                         betas=betas)
        self.save_hyperparameters()
        self.model = build_model(model)
        self.plateau = scheduler == "plateau"

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model(codes)

    def setup(self, stage: str) -> None:
        """Record the data's sample rate and quantisation (what `ssmkit generate` needs to write audio)."""
        data = getattr(self.trainer, "datamodule", None)
        for key in ("sample_rate", "quantization"):
            value, mine = getattr(data, key, None), f"audio_{key}"
            if value is None:
                continue
            if self.hparams[mine] not in (None, value):
                raise ValueError(f"task {mine}={self.hparams[mine]!r} but the data module's {key} is {value!r}")
            self.hparams[mine] = value

    def nll(self, batch) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mean NLL in nats over the real targets of the batch, their number)."""
        inputs, targets = batch
        logits = self(inputs)
        if logits.shape != (*targets.shape, N_CLASSES):
            raise ValueError(f"model output must be {(*targets.shape, N_CLASSES)}, got {tuple(logits.shape)}")
        n = (targets != IGNORE_INDEX).sum()
        loss = F.cross_entropy(logits.reshape(-1, N_CLASSES).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum") / n.clamp(min=1)
        return loss, n

    def training_step(self, batch, batch_idx):
        loss, n = self.nll(batch)
        self.log_metrics("train", {"loss": loss}, batch_size=int(n))
        return loss

    def _eval_step(self, stage: str, batch):
        loss, n = self.nll(batch)
        if n > 0:  # sample-weighted epoch mean: the exact per-sample average over the split
            self.log_metrics(stage, {"loss": loss, "bits_per_sample": loss / math.log(2)}, batch_size=int(n))
        return loss

    def validation_step(self, batch, batch_idx):
        return self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        return self._eval_step("test", batch)

    def configure_optimizers(self):
        config = super().configure_optimizers()
        if not self.plateau:
            return config
        opt = config["optimizer"] if isinstance(config, dict) else config
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=self.hparams.plateau_factor,
                                                           patience=self.hparams.plateau_patience)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"}}
