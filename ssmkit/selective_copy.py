"""The selective-copying task of the Mamba paper (Gu & Dao 2023, §4.1.1) and a small Mamba LM that learns it.

A context of `seq_len` noise tokens (0) holds `n_tokens` data tokens (1..vocab) at random positions; then
`n_tokens` marker tokens (vocab + 1) ask the model to emit the data tokens in order. Solving it needs
input-dependent (selective) memory: which positions matter depends on the content, not on the time.
"""
from __future__ import annotations

import pathlib
import time
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from ssmkit.core.blocks import SequenceModel
from ssmkit.core.layers import Mamba
from ssmkit.train import DemoResult, LossHistory, TaskBase, demo_trainer, seed, smoothed

IGNORE = -100


def selective_copy_batch(generator: torch.Generator, batch: int, seq_len: int, n_tokens: int, vocab: int):
    """tokens (batch, seq_len + n_tokens) and targets (same shape, IGNORE except the answer positions)."""
    if n_tokens > seq_len:
        raise ValueError(f"n_tokens={n_tokens} must be <= seq_len={seq_len}")
    data = torch.randint(1, vocab + 1, (batch, n_tokens), generator=generator)
    positions = torch.rand(batch, seq_len, generator=generator).argsort(-1)[:, :n_tokens].sort(-1).values
    context = torch.zeros(batch, seq_len, dtype=torch.long).scatter_(1, positions, data)
    markers = torch.full((batch, n_tokens), vocab + 1, dtype=torch.long)
    tokens = torch.cat([context, markers], dim=1)
    # the i-th marker's output is the i-th data token (a causal model sees the whole context by then)
    targets = torch.cat([torch.full((batch, seq_len), IGNORE, dtype=torch.long), data], dim=1)
    return tokens, targets


class SelectiveCopyStream(IterableDataset):
    """Endless seeded batches (each item is a whole batch)."""

    def __init__(self, batch_size: int, seq_len: int, n_tokens: int, vocab: int, seed: int):
        self.args, self.seed = (batch_size, seq_len, n_tokens, vocab), seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            yield selective_copy_batch(g, *self.args)


class SelectiveCopyData(L.LightningDataModule):
    """Train stream and a fixed validation set of `val_batches` batches (different seeds)."""

    def __init__(self, seq_len: int = 32, n_tokens: int = 4, vocab: int = 8, batch_size: int = 32,
                 val_batches: int = 4, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.vocab_size = vocab + 2

    def train_dataloader(self):
        h = self.hparams
        return DataLoader(SelectiveCopyStream(h.batch_size, h.seq_len, h.n_tokens, h.vocab, h.seed), batch_size=None)

    def val_dataloader(self):
        h = self.hparams
        g = torch.Generator().manual_seed(h.seed + 1)
        return DataLoader([selective_copy_batch(g, h.batch_size, h.seq_len, h.n_tokens, h.vocab)
                           for _ in range(h.val_batches)], batch_size=None)


class SelectiveCopyTask(TaskBase):
    """A Mamba language model trained with cross-entropy on the answer positions; metric: token accuracy."""

    def __init__(self, vocab: int = 8, d_model: int = 64, n_layer: int = 2, d_state: int = 16, lr: float = 3e-3,
                 weight_decay: float = 0.0, scheduler: Optional[str] = None, warmup_steps: int = 0):
        super().__init__(lr=lr, weight_decay=weight_decay, scheduler=scheduler, warmup_steps=warmup_steps)
        self.save_hyperparameters()
        self.model = SequenceModel(vocab + 2, d_model, n_layer, lambda i: Mamba(d_model, d_state=d_state))

    def _loss_and_accuracy(self, batch):
        tokens, targets = batch
        logits = self.model(tokens)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
        answer = targets != IGNORE
        accuracy = (logits.argmax(-1)[answer] == targets[answer]).float().mean()
        return loss, accuracy

    def training_step(self, batch, batch_idx):
        loss, accuracy = self._loss_and_accuracy(batch)
        self.log_metrics("train", {"loss": loss, "accuracy": accuracy})
        return loss

    def validation_step(self, batch, batch_idx):
        loss, accuracy = self._loss_and_accuracy(batch)
        self.log_metrics("val", {"loss": loss, "accuracy": accuracy})


def demo(out_dir: pathlib.Path, steps: int = 300) -> DemoResult:
    """Train a 2-layer Mamba LM on selective copying for `steps` steps; report loss and answer accuracy."""
    seed(0)
    data, task, history = SelectiveCopyData(), SelectiveCopyTask(), LossHistory()
    trainer = demo_trainer(out_dir, steps, [history], val_check_interval=steps, limit_val_batches=4)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    accuracy = float(trainer.callback_metrics["val/accuracy"])
    first, last = smoothed(history.losses)
    outputs = [pathlib.Path(trainer.log_dir) / "metrics.csv", pathlib.Path(trainer.checkpoint_callback.best_model_path)]
    return DemoResult("Mamba LM 2x64", "selective copying", len(history.losses), first, last,
                      "answer accuracy", accuracy, seconds, outputs)
