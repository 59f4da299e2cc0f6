"""Training glue shared by every domain: the LightningModule base (optimiser, schedule, metric logging),
seeding, and the record a demo returns."""
from __future__ import annotations

import math
import pathlib
import random
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import lightning as L
import numpy as np
import torch
import torch.nn as nn

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULERS = (None, "constant", "cosine", "linear")


def seed(value: int = 0) -> int:
    """Seed python, numpy and torch (all workers) through Lightning; returns the seed for the record."""
    return L.seed_everything(value, workers=True, verbose=False)


def no_weight_decay_names(model: nn.Module) -> set:
    """Parameters that get no weight decay: biases, norm/1-D weights, those whose optimiser hint
    (`p._optim`, see `ssmkit.core.init.set_optim`) sets weight_decay 0, and names listed by any submodule's
    timm-style `no_weight_decay()`."""
    names = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    for name, p in model.named_parameters():
        if p.ndim < 2 or getattr(p, "_optim", {}).get("weight_decay", None) == 0.0:
            names.add(name)
    return names


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Optimiser groups: with weight decay, without (see `no_weight_decay_names`), then one group per other
    setting that parameters' hints `p._optim` ask for (e.g. S4's {"weight_decay": 0.0, "lr": 1e-3}).

    A hint's keys override the defaults for its parameter; a group without "lr" takes the optimiser's lr.
    Frozen parameters are left out.
    """
    skip = no_weight_decay_names(model)
    groups: Dict[tuple, Dict] = {(("weight_decay", float(weight_decay)),): {"params": [], "weight_decay": weight_decay},
                                 (("weight_decay", 0.0),): {"params": [], "weight_decay": 0.0}}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        settings = {"weight_decay": 0.0 if name in skip else float(weight_decay), **getattr(p, "_optim", {})}
        key = tuple(sorted(settings.items()))
        groups.setdefault(key, {"params": [], **settings})["params"].append(p)
    return [g for g in groups.values() if g["params"]]


def warmup_then(schedule: Optional[str], warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """lr multiplier per step: linear warm-up, then constant, cosine or linear decay to `min_lr_ratio`."""
    if schedule not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {schedule!r}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule in (None, "constant"):
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return min_lr_ratio + (1 - min_lr_ratio) * shape
    return factor


class TaskBase(L.LightningModule):
    """Base of every ssmkit task: optimiser with weight-decay groups, warm-up + schedule, metric logging.

    Subclasses implement the steps; they may override `configure_optimizers` for a protocol's own schedule.
    """

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, optimizer: str = "adamw",
                 scheduler: Optional[str] = None, warmup_steps: int = 0, min_lr_ratio: float = 0.0,
                 betas: Tuple[float, float] = (0.9, 0.999)):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.lr, self.weight_decay, self.optimizer_name = lr, weight_decay, optimizer
        self.scheduler_name, self.warmup_steps = scheduler, warmup_steps
        self.min_lr_ratio, self.betas = min_lr_ratio, betas

    def extra_param_groups(self) -> List[Dict]:
        """Hook for parameters that need their own group (e.g. Hyena filters); returned groups are removed
        from the default groups."""
        return []

    def configure_optimizers(self):
        extra = self.extra_param_groups()
        taken = {id(p) for g in extra for p in g["params"]}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in taken]}
                  for g in param_groups(self, self.weight_decay)]
        groups = [g for g in groups if g["params"]] + extra
        kwargs = {"lr": self.lr} if self.optimizer_name == "sgd" else {"lr": self.lr, "betas": self.betas}
        opt = OPTIMIZERS[self.optimizer_name](groups, **kwargs)
        if self.scheduler_name is None and self.warmup_steps == 0:
            return opt
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_then(self.scheduler_name, self.warmup_steps, total, self.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_callbacks(self) -> List[L.Callback]:
        """Every task saves and restores the processes' random states, so a resumed run continues exactly."""
        return [RandomStateCheckpoint()]

    def log_metrics(self, stage: str, metrics: Dict[str, torch.Tensor], **kwargs) -> None:
        """Log each metric as `stage/name` (progress bar, epoch aggregates for val/test, synced across ranks).

        Raises FloatingPointError naming the metric and the step when one is NaN or infinite (see `check_finite`).
        """
        check_finite(self, stage, metrics)
        on_step = stage == "train"
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=True, on_step=on_step, on_epoch=not on_step,
                     sync_dist=True, **kwargs)


def check_finite(module: L.LightningModule, stage: str, metrics: Dict[str, torch.Tensor]) -> None:
    """Raise FloatingPointError naming `stage/name`, its value, the global step, epoch and batch when any metric is
    NaN or infinite: training must stop at the first non-finite loss or metric, not report it at the end.

    One device synchronisation for all metrics together.
    """
    values = {name: torch.as_tensor(v).detach() for name, v in metrics.items()}
    if not values or bool(torch.stack([v.isfinite().all() for v in values.values()]).all()):
        return
    bad = {name: v for name, v in values.items() if not bool(v.isfinite().all())}
    where = (f"at global step {module.global_step} (epoch {module.current_epoch})" if stage == "train"
             else f"during {stage} after global step {module.global_step} (epoch {module.current_epoch})")
    shown = ", ".join(f"{stage}/{name} = {v.item() if v.numel() == 1 else v.tolist()}" for name, v in bad.items())
    raise FloatingPointError(f"non-finite {shown} {where}: stopping; lower the learning rate, check the data for "
                             f"NaN/inf, or resume from the last checkpoint")


def _random_states() -> Dict:
    """This process's python / numpy / torch (CPU and initialised CUDA) random states, as plain lists and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state(),
              "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_random_states(states: Dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStateCheckpoint(L.Callback):
    """Keeps every process's random states in each checkpoint and puts them back when the resumed training
    starts (after the sanity check and the loaders' set-up, just before the next batch), so dropout and random
    augmentation continue as in the uninterrupted run. Lightning restores weights, optimiser and loops, not these.
    """

    def __init__(self):
        self._trainer: Optional[L.Trainer] = None
        self._pending: Optional[List[Dict]] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> Dict:
        states = _random_states()
        world = self._trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: List = [None] * world
            torch.distributed.all_gather_object(gathered, states)  # checkpoints are dumped on every rank
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: Dict) -> None:
        self._pending = state_dict.get("per_rank")

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending:
            _set_random_states(self._pending[trainer.global_rank % len(self._pending)])
            self._pending = None


@dataclass
class DemoResult:
    """One row of the `ssmkit demo` summary table."""
    model: str
    task: str
    steps: int
    first_loss: float
    last_loss: float
    metric_name: str
    metric: float
    seconds: float
    outputs: List[pathlib.Path] = field(default_factory=list)


class LossHistory(L.Callback):
    """Records the training loss of every step (demos report the first and last)."""

    def __init__(self):
        self.losses: List[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss.detach()))


def smoothed(values: Iterable[float], n: int = 10) -> Tuple[float, float]:
    """Mean of the first and of the last n values: a fair 'first loss' and 'last loss' for a noisy curve."""
    values = list(values)
    n = max(1, min(n, len(values) // 2 or 1))
    return sum(values[:n]) / n, sum(values[-n:]) / n


def demo_trainer(out_dir: pathlib.Path, max_steps: int, callbacks: Iterable[L.Callback] = (), **kwargs) -> L.Trainer:
    """A quiet CPU/GPU trainer for demos: CSV logs and a checkpoint under out_dir."""
    return L.Trainer(max_steps=max_steps, default_root_dir=str(out_dir),
                     logger=L.pytorch.loggers.CSVLogger(str(out_dir)),
                     callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                     log_every_n_steps=10, num_sanity_val_steps=0, **kwargs)
