"""LightningModules: DNA language-model pretraining (causal or masked) and sequence classification.

Both reuse `ssmkit.train.TaskBase` (AdamW, weight-decay groups, warm-up + cosine). Parameters flagged by the
models (`_no_weight_decay` / `_optim`, e.g. Hyena's implicit filters), norms and biases get no weight decay.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.train import TaskBase

from .tokenizer import A, MASK, PAD, T

LN2 = math.log(2.0)


def mlm_mask(ids: torch.Tensor, generator: Optional[torch.Generator] = None, rate: float = 0.15):
    """BERT masking on nucleotide ids: select `rate` of the non-pad positions; of those 80% -> [MASK], 10% -> a
    random base, 10% unchanged. Returns (inputs, targets) with targets = PAD (ignored) where not selected."""
    u = torch.rand(ids.shape, generator=generator, device=ids.device)
    selected = (u < rate) & (ids != PAD)
    v = torch.rand(ids.shape, generator=generator, device=ids.device)
    inputs = ids.clone()
    inputs[selected & (v < 0.8)] = MASK
    random_base = torch.randint(A, T + 1, ids.shape, generator=generator, device=ids.device)
    swap = selected & (v >= 0.8) & (v < 0.9)
    inputs[swap] = random_base[swap]
    targets = torch.where(selected, ids, torch.full_like(ids, PAD))
    return inputs, targets


class DNAPretrainTask(TaskBase):
    """Pretrain a DNA LM on windows (B, L) of token ids.

    objective "clm": predict base t+1 from bases <= t (inputs ids[:, :-1], targets ids[:, 1:]); "mlm": BERT
    masking (15%, 80/10/10), loss on the selected positions only. Metrics per nucleotide: loss (nats),
    perplexity exp(loss) and bits per base loss / ln 2, on val and test summed over all targets of the epoch
    (not averaged per batch). Targets equal to N are scored too (none in E. coli).
    """

    def __init__(self, model: nn.Module, objective: str = "clm", lr: float = 6e-4, weight_decay: float = 0.1,
                 warmup_steps: int = 0, scheduler: Optional[str] = "cosine", min_lr_ratio: float = 0.1,
                 betas=(0.9, 0.999), mask_rate: float = 0.15):
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler, warmup_steps=warmup_steps,
                         min_lr_ratio=min_lr_ratio, betas=tuple(betas))
        if objective not in ("clm", "mlm"):
            raise ValueError(f"objective must be 'clm' or 'mlm', got {objective!r}")
        if objective == "clm" and not getattr(model, "causal", False):
            raise ValueError(f"objective 'clm' needs a causal model; {type(model).__name__} is bidirectional")
        self.save_hyperparameters()
        self.model, self.objective, self.mask_rate = model, objective, mask_rate
        self._sums: Dict[str, torch.Tensor] = {}

    def forward(self, ids):
        return self.model(ids)

    def inputs_targets(self, ids: torch.Tensor, generator=None):
        if self.objective == "clm":
            return ids[:, :-1], ids[:, 1:]
        return mlm_mask(ids, generator, self.mask_rate)

    def token_losses(self, ids, generator=None):
        """(sum of per-token cross-entropies in nats, number of scored tokens)."""
        inputs, targets = self.inputs_targets(ids, generator)
        logits = self.model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                               ignore_index=PAD, reduction="sum")
        return loss, (targets != PAD).sum()

    def training_step(self, batch, batch_idx):
        total, count = self.token_losses(batch)
        loss = total / count.clamp(min=1)
        self.log_metrics("train", {"loss": loss, "bits_per_base": loss / LN2})
        return loss

    def _eval_step(self, stage, batch, batch_idx):
        gen = None
        if self.objective == "mlm":  # the same masks every evaluation
            gen = torch.Generator(device=batch.device).manual_seed(batch_idx)
        total, count = self.token_losses(batch, gen)
        sums = self._sums.setdefault(stage, torch.zeros(2, dtype=torch.float64, device=batch.device))
        sums += torch.stack([total.double().detach(), count.double()])

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch, batch_idx)

    def _eval_end(self, stage):
        sums = self._sums.pop(stage, None)
        if sums is None:
            return
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self.trainer.world_size > 1 else sums
        loss = sums[0] / sums[1].clamp(min=1)
        for name, value in {"loss": loss, "perplexity": loss.exp(), "bits_per_base": loss / LN2}.items():
            self.log(f"{stage}/{name}", value.float(), prog_bar=True)

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_end(self):
        self._eval_end("test")



def classification_metrics(confusion: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Accuracy, Matthews correlation (multi-class R_K) and macro F1 from a (C, C) confusion matrix
    (rows = true class, columns = prediction)."""
    cm = confusion.double()
    n = cm.sum()
    correct = cm.diag().sum()
    t, p = cm.sum(1), cm.sum(0)
    denom = ((n * n - (p * p).sum()) * (n * n - (t * t).sum())).sqrt()
    mcc = (correct * n - (t * p).sum()) / denom if denom > 0 else cm.new_zeros(())
    f1 = 2 * cm.diag() / (t + p).clamp(min=1)
    present = (t + p) > 0
    return {"accuracy": correct / n.clamp(min=1), "mcc": mcc, "f1": f1[present].mean()}


POOLINGS = ("mean", "last", "first")


class SequenceClassificationTask(TaskBase):
    """Classify DNA sequences (left-padded ids) with any backbone that has `hidden(ids)` and `d_output`.

    pooling: "mean" over the real (non-pad) tokens, "last" token, or "first" real token; then Linear(d, classes).
    init_from: a DNAPretrainTask checkpoint whose `model.*` weights initialise the backbone (its LM head is not
    used); the whole backbone is fine-tuned. rc_conjoin: average the logits on x and RC(x) at val/test (the
    "Ph" treatment). Metrics: accuracy, MCC and macro F1 over the whole val/test set.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 2, pooling: str = "mean",
                 init_from: Optional[str] = None, lr: float = 6e-4, weight_decay: float = 0.1,
                 warmup_steps: int = 0, scheduler: Optional[str] = "cosine", min_lr_ratio: float = 0.0,
                 rc_conjoin: bool = False, head_dropout: float = 0.0):
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler, warmup_steps=warmup_steps,
                         min_lr_ratio=min_lr_ratio)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.save_hyperparameters()
        self.backbone, self.pooling, self.num_classes, self.rc_conjoin = backbone, pooling, num_classes, rc_conjoin
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(backbone.d_output, num_classes)
        if init_from:
            self.load_backbone(init_from)
        self._confusion: Dict[str, torch.Tensor] = {}

    def load_backbone(self, checkpoint: str) -> None:
        """Copy the `model.*` weights of a pretraining checkpoint into the backbone (all backbone weights except
        an LM head must be present with the same shapes)."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        own = self.backbone.state_dict()
        missing = [k for k in own if k not in weights and not k.startswith("lm_head.")]
        wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
        if missing or wrong:
            raise ValueError(f"{checkpoint}: does not fit the backbone: missing {missing[:5]}, "
                             f"shapes differ {wrong[:5]}")
        self.backbone.load_state_dict({k: weights[k] for k in own if k in weights}, strict=False)

    def pool(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        real = (ids != PAD)
        if self.pooling == "mean":
            w = real.to(hidden.dtype).unsqueeze(-1)
            return (hidden * w).sum(1) / w.sum(1).clamp(min=1)
        if self.pooling == "last":
            return hidden[:, -1]
        first = real.float().argmax(1)  # left padding: the first real token
        return hidden[torch.arange(len(ids), device=ids.device), first]

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.backbone.hidden(ids), ids)))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.rc_conjoin and not self.training:
            from .models.rc import rc_average
            return rc_average(self.logits, ids)
        return self.logits(ids)

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        loss = F.cross_entropy(self(ids), labels)
        self.log_metrics("train", {"loss": loss})
        return loss

    def _eval_step(self, stage, batch):
        ids, labels = batch
        logits = self(ids)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), prog_bar=True, on_epoch=True, sync_dist=True)
        k = self.num_classes
        cm = torch.bincount(labels * k + logits.argmax(-1), minlength=k * k).view(k, k)
        self._confusion[stage] = self._confusion.get(stage, 0) + cm

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _eval_end(self, stage):
        cm = self._confusion.pop(stage, None)
        if cm is None:
            return
        if self.trainer.world_size > 1:
            cm = self.trainer.strategy.reduce(cm, reduce_op="sum")
        for name, value in classification_metrics(cm).items():
            self.log(f"{stage}/{name}", value.float(), prog_bar=True)

    def on_validation_epoch_end(self):
        self._eval_end("val")

    def on_test_epoch_end(self):
        self._eval_end("test")
