"""SequentialRecTask: next-item training with full-softmax cross-entropy over tied item embeddings (RecBole
`loss_type: CE`), full-sort evaluation over all items (only the padding column masked; items already in the
history are *not* excluded, as RecBole does for sequential models), HR / NDCG / MRR @ {10, 20}, and fine-tuning
from a checkpoint on new interactions (the item table grows, old rows and ids are kept).

Model selection on `val/ndcg@10` and early stopping come from Lightning's ModelCheckpoint / EarlyStopping in the
configs (RecBole: `valid_metric: NDCG@10`, `stopping_step` 10 or 20).
"""
from __future__ import annotations

import importlib
import pathlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric

from ssmkit.train import TaskBase

from .data import save_item_map
from .loss import tied_cross_entropy
from .models.base import SequentialRecommender


def build_model(spec: Dict[str, Any]) -> SequentialRecommender:
    """{"class_path": "ssmkit.recsys.models.sasrec.SASRec", "init_args": {...}} -> the model."""
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def full_sort_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among all items: 1 + #items scored strictly higher (column 0, the padding,
    never counts). scores (B, n_items + 1), targets (B,) in 1..n_items."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    target_scores = scores.gather(1, targets.view(-1, 1))
    return 1 + (scores > target_scores).sum(1)


def rank_metrics(ranks: torch.Tensor, ks: Sequence[int] = (10, 20)) -> Dict[str, torch.Tensor]:
    """Per-sample HR@k = 1[rank <= k], NDCG@k = 1/log2(rank + 1), MRR@k = 1/rank (0 beyond k)."""
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = (ranks <= k).double()
        out[f"hr@{k}"] = hit
        out[f"ndcg@{k}"] = hit / torch.log2(ranks + 1)
        out[f"mrr@{k}"] = hit / ranks
    return out


class SequentialRecTask(TaskBase):
    """LightningModule around a `SequentialRecommender`.

    n_items of the model is set from the datamodule at setup (a model built with n_items=0 is sized there).
    `init_from`: a checkpoint of this task to fine-tune; its item map is kept and extended by the datamodule, its
    weights are loaded exactly and the new items' rows are drawn fresh. With `freeze_pretrained_items` (default)
    the pretrained items' rows get no gradient, so with weight_decay=0 they stay exactly as pretrained (Adam's
    moments for them stay 0); set it False to let them adapt.
    """

    def __init__(self, model: SequentialRecommender, lr: float = 1e-3, weight_decay: float = 0.0,
                 optimizer: str = "adam", init_from: Optional[str] = None, freeze_pretrained_items: bool = True,
                 topk: Tuple[int, ...] = (10, 20)):
        super().__init__(lr=lr, weight_decay=weight_decay, optimizer=optimizer)
        if init_from and freeze_pretrained_items and weight_decay:
            raise ValueError("freeze_pretrained_items keeps the pretrained item rows only with weight_decay=0, "
                             f"got weight_decay={weight_decay}")
        self.freeze_pretrained_items = freeze_pretrained_items
        if isinstance(model, dict):  # rebuilt from a checkpoint's hyperparameters
            model = build_model(model)
        self.save_hyperparameters(ignore=["model"])
        self.hparams["model"] = model.spec()
        self.model, self.topk, self.init_from = model, tuple(topk), init_from
        self.item_ids: List[str] = []
        self.pretrained_item_ids: Optional[List[str]] = None
        self._pretrained: Optional[Dict[str, Any]] = None
        self.n_pretrained_items: Optional[int] = None
        if init_from:
            ckpt = torch.load(init_from, map_location="cpu", weights_only=False)
            if "recsys" not in ckpt:
                raise ValueError(f"init_from={init_from!r} is not a SequentialRecTask checkpoint (no 'recsys' entry)")
            self._pretrained = ckpt
            self.pretrained_item_ids = list(ckpt["recsys"]["item_ids"])
        names = [f"{m}@{k}" for k in self.topk for m in ("hr", "ndcg", "mrr")]
        self.metrics = nn.ModuleDict({f"{stage}_{n}": MeanMetric() for stage in ("val", "test") for n in names})

    # sizing, fine-tuning, checkpoints
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not getattr(dm, "item_ids", None):
            return
        if self._pretrained is not None:
            self._load_pretrained()
        if self.model.n_items > dm.n_items:
            raise ValueError(f"the model has {self.model.n_items} items but the data only {dm.n_items}: "
                             f"use the item map the model was trained with (SequentialDataModule item_map=...)")
        self.model.grow_items(dm.n_items)
        self.item_ids = list(dm.item_ids)

    def _load_pretrained(self) -> None:
        ckpt, self._pretrained = self._pretrained, None
        spec = ckpt["recsys"]["model"]
        if spec["class_path"] != self.model.spec()["class_path"]:
            raise ValueError(f"init_from holds a {spec['class_path']}, the config builds "
                             f"{self.model.spec()['class_path']}")
        n_old = len(ckpt["recsys"]["item_ids"])
        self.model.grow_items(n_old)
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        self.model.load_state_dict(state)
        self.n_pretrained_items = n_old

    def _freeze_pretrained_rows(self) -> None:
        """Zero the gradient of the pretrained item rows (padding row included) for the rest of training."""
        n = self.n_pretrained_items
        if n is None or not self.freeze_pretrained_items:
            return

        def keep_old_rows(grad: torch.Tensor) -> torch.Tensor:
            grad = grad.clone()
            grad[: n + 1] = 0
            return grad
        self.model.item_embedding.weight.register_hook(keep_old_rows)

    def on_fit_start(self) -> None:
        self._freeze_pretrained_rows()
        self._save_item_map()

    @rank_zero_only
    def _save_item_map(self) -> None:
        if self.item_ids and self.trainer.log_dir:
            save_item_map(self.item_ids, pathlib.Path(self.trainer.log_dir) / "item_map.json")

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        checkpoint["recsys"] = {"model": self.model.spec(), "item_ids": list(self.item_ids),
                                "max_len": getattr(dm, "max_len", None)}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        info = checkpoint.get("recsys")
        if not info:
            return
        ids = list(info["item_ids"])
        if self.item_ids and self.item_ids != ids:
            raise ValueError(f"the data's item map ({len(self.item_ids)} items) differs from the checkpoint's "
                             f"({len(ids)} items): pass the checkpoint's map, SequentialDataModule(item_map="
                             f"'<run folder>/item_map.json'), or --model.init_from to fine-tune")
        self.model.grow_items(len(ids))
        self.item_ids = ids

    # steps
    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(batch["items"], batch["length"], batch.get("times"))

    def training_step(self, batch, batch_idx):
        h = self.model.represent(batch["items"], batch["length"], batch.get("times"))
        loss = tied_cross_entropy(h, self.model.item_embedding.weight, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(h))
        return loss

    def _evaluate(self, stage: str, batch) -> None:
        ranks = full_sort_ranks(self(batch).float(), batch["target"])
        for name, values in rank_metrics(ranks, self.topk).items():
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(values.float())
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "ndcg@10",
                     batch_size=len(ranks))

    def validation_step(self, batch, batch_idx):
        self._evaluate("val", batch)

    def test_step(self, batch, batch_idx):
        self._evaluate("test", batch)
