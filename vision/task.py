"""Image classification with any timm model (ours register on import): cross-entropy with optional label
smoothing, top-1 / top-5 accuracy, AdamW with weight-decay groups and warm-up + cosine (from TaskBase)."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn.functional as F

import ssmkit.vision.models  # noqa: F401  (registers the presets)
from ssmkit.train import TaskBase


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose target is among the k largest logits (k capped at the class count)."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == target.unsqueeze(-1)).any(-1).float().mean()


class ImageClassificationTask(TaskBase):
    """`timm.create_model(model_name, num_classes, in_chans, **model_kwargs)` trained on (images, labels).

    channels_last converts the model and the images to torch.channels_last memory format.
    """

    def __init__(self, model_name: str = "vim_tiny_patch16_224", num_classes: int = 10, in_chans: int = 1,
                 model_kwargs: Optional[Dict[str, Any]] = None, label_smoothing: float = 0.0,
                 channels_last: bool = False, lr: float = 1e-3, weight_decay: float = 0.05,
                 optimizer: str = "adamw", scheduler: Optional[str] = "cosine", warmup_steps: int = 0,
                 min_lr_ratio: float = 0.0, betas: Tuple[float, float] = (0.9, 0.999)):
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler,
                         warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, betas=betas)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters()
        self.label_smoothing, self.channels_last = label_smoothing, channels_last
        self.model = timm.create_model(model_name, num_classes=num_classes, in_chans=in_chans,
                                       **(model_kwargs or {}))
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def _shared_step(self, batch, stage: str) -> torch.Tensor:
        images, target = batch
        logits = self(images)
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        self.log_metrics(stage, {"loss": loss, "top1": topk_accuracy(logits, target, 1),
                                 "top5": topk_accuracy(logits, target, 5)}, batch_size=len(target))
        return loss

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._shared_step(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self(batch[0]).softmax(-1)
