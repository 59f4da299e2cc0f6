"""Image classification with any timm model (ours register on import), with the DeiT / Swin ImageNet recipe
built from timm's own parts: `Mixup` (mixup / cutmix with label smoothing folded into soft targets) and
`SoftTargetCrossEntropy`, `ModelEmaV3` (an exponential moving average of the weights, evaluated next to them),
drop path through `model_kwargs`, AdamW with weight-decay groups and warm-up + cosine (from TaskBase).
Augmentation of the images themselves (RandAugment, random erasing, ...) is the data module's `create_transform`.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import timm
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3

import ssmkit.vision.models  # noqa: F401  (registers the presets)
from ssmkit.train import TaskBase


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose target is among the k largest logits (k capped at the class count)."""
    k = min(k, logits.shape[-1])
    return (logits.topk(k, dim=-1).indices == target.unsqueeze(-1)).any(-1).float().mean()


class ImageClassificationTask(TaskBase):
    """`timm.create_model(model_name, num_classes, in_chans, **model_kwargs)` trained on (images, labels).

    mixup / cutmix > 0 turn on timm's `Mixup` (alphas; `mixup_prob` per batch, `mixup_switch_prob` chance of
    cutmix when both are on, `mixup_mode` 'batch' | 'pair' | 'elem'); the training loss is then
    `SoftTargetCrossEntropy` on the mixed targets, which carry `label_smoothing`. Without them the loss is
    cross-entropy with `label_smoothing`. Batches must have an even size for mixup (loaders drop the last).

    ema_decay (e.g. 0.9999) keeps `model_ema`, timm's `ModelEmaV3` of the weights and buffers, updated after
    every optimiser step (`ema_warmup`: timm's decay warm-up 1 - (1 + step)^(-2/3), capped at ema_decay, for
    short runs). Validation and test then also report the EMA model as `val_ema/*` and `test_ema/*`; the
    checkpoint holds both (`ssmkit export` takes the EMA weights).

    channels_last converts the model and the images to torch.channels_last memory format.
    """

    def __init__(self, model_name: str = "vim_tiny_patch16_224", num_classes: int = 10, in_chans: int = 1,
                 model_kwargs: Optional[Dict[str, Any]] = None, label_smoothing: float = 0.0,
                 mixup: float = 0.0, cutmix: float = 0.0, mixup_prob: float = 1.0, mixup_switch_prob: float = 0.5,
                 mixup_mode: str = "batch", ema_decay: Optional[float] = None, ema_warmup: bool = False,
                 channels_last: bool = False, lr: float = 1e-3, weight_decay: float = 0.05,
                 optimizer: str = "adamw", scheduler: Optional[str] = "cosine", warmup_steps: int = 0,
                 min_lr_ratio: float = 0.0, betas: Tuple[float, float] = (0.9, 0.999)):
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer, scheduler=scheduler,
                         warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, betas=betas)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup < 0 or cutmix < 0:
            raise ValueError(f"mixup and cutmix must be >= 0 (Beta alphas; 0 turns one off), got {mixup}, {cutmix}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        self.save_hyperparameters()
        self.label_smoothing, self.channels_last = label_smoothing, channels_last
        self.model = timm.create_model(model_name, num_classes=num_classes, in_chans=in_chans,
                                       **(model_kwargs or {}))
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.mixup_fn = None
        if mixup > 0 or cutmix > 0:
            self.mixup_fn = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob,
                                  switch_prob=mixup_switch_prob, mode=mixup_mode, label_smoothing=label_smoothing,
                                  num_classes=num_classes)
            self.soft_loss = SoftTargetCrossEntropy()
        self.model_ema = None
        if ema_decay is not None:
            self.model_ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=ema_warmup)
            self.model_ema.requires_grad_(False)  # never optimised; left out of the parameter groups

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._images(images))

    def training_step(self, batch, batch_idx):
        images, target = batch
        if self.mixup_fn is not None:
            if len(target) % 2:
                raise ValueError(f"mixup / cutmix need an even batch size, got a batch of {len(target)}")
            images, soft = self.mixup_fn(images, target)
            logits = self(images)
            loss = self.soft_loss(logits, soft)
        else:
            logits = self(images)
            loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        self.log_metrics("train", {"loss": loss, "top1": topk_accuracy(logits, target, 1)}, batch_size=len(target))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def _evaluate(self, batch, stage: str) -> None:
        images, target = batch
        models = [(stage, self.model)]
        if self.model_ema is not None:
            models.append((f"{stage}_ema", self.model_ema.module))
        for name, model in models:
            logits = model(self._images(images))
            self.log_metrics(name, {"loss": F.cross_entropy(logits, target), "top1": topk_accuracy(logits, target, 1),
                                    "top5": topk_accuracy(logits, target, 5)}, batch_size=len(target))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx):
        model = self.model_ema.module if self.model_ema is not None else self.model
        return model(self._images(batch[0])).softmax(-1)
