"""The selective-copying task of the Mamba paper (Gu & Dao 2023, §4.1.1) and a small Mamba LM that learns it.

A context of `seq_len` noise tokens (0) holds `n_tokens` data tokens (1..vocab) at random positions; then
`n_tokens` marker tokens (vocab + 1) ask the model to emit the data tokens in order. Solving it needs
input-dependent (selective) memory: which positions matter depends on the content, not on the time.
"""
from __future__ import annotations

import pathlib
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ssmkit.core.blocks import SequenceModel
from ssmkit.core.layers import Mamba
from ssmkit.data import ResumableDataModule, ResumableStream
from ssmkit.train import DemoResult, LossHistory, TaskBase, demo_trainer, seed, smoothed

IGNORE = -100
TRAIN, VAL = 0, 1  # the two example streams of a seed


def selective_copy_example(seed: int, stream: int, index: int, seq_len: int, n_tokens: int, vocab: int):
    """Example `index` of a stream: tokens (seq_len + n_tokens,) and targets (same shape, IGNORE except the answer
    positions), a pure function of (seed, stream, index) so any process can make any example."""
    if n_tokens > seq_len:
        raise ValueError(f"n_tokens={n_tokens} must be <= seq_len={seq_len}")
    rng = np.random.default_rng([seed, stream, index])
    data = torch.as_tensor(rng.integers(1, vocab + 1, n_tokens), dtype=torch.long)
    positions = torch.as_tensor(np.sort(rng.choice(seq_len, n_tokens, replace=False)), dtype=torch.long)
    context = torch.zeros(seq_len, dtype=torch.long).scatter_(0, positions, data)
    tokens = torch.cat([context, torch.full((n_tokens,), vocab + 1, dtype=torch.long)])
    # the i-th marker's output is the i-th data token (a causal model sees the whole context by then)
    targets = torch.cat([torch.full((seq_len,), IGNORE, dtype=torch.long), data])
    return tokens, targets


def selective_copy_batch(seed: int, stream: int, indices, seq_len: int, n_tokens: int, vocab: int):
    """The examples `indices` of a stream stacked: tokens and targets (len(indices), seq_len + n_tokens)."""
    pairs = [selective_copy_example(seed, stream, i, seq_len, n_tokens, vocab) for i in indices]
    return torch.stack([t for t, _ in pairs]), torch.stack([y for _, y in pairs])


class SelectiveCopyStream(ResumableStream):
    """The endless training stream: global step s on rank r is made of examples that no other (step, rank) reads."""

    def __init__(self, batch_size: int, seq_len: int, n_tokens: int, vocab: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        super().__init__(batch_size, rank, world_size)
        self.args, self.seed = (seq_len, n_tokens, vocab), seed

    def make_batch(self, indices: range):
        return selective_copy_batch(self.seed, TRAIN, indices, *self.args)


class SelectiveCopyExamples(Dataset):
    """A fixed map-style set of `size` examples (the validation set)."""

    def __init__(self, size: int, seq_len: int, n_tokens: int, vocab: int, seed: int, stream: int = VAL):
        self.size, self.args, self.seed, self.stream = size, (seq_len, n_tokens, vocab), seed, stream

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(f"example {index} out of range [0, {self.size})")
        return selective_copy_example(self.seed, self.stream, index, *self.args)


class SelectiveCopyData(ResumableDataModule):
    """Resumable, rank-sharded training stream and a fixed validation set of `val_batches` x `batch_size` examples
    (`batch_size` is per process, as in Lightning)."""

    def __init__(self, seq_len: int = 32, n_tokens: int = 4, vocab: int = 8, batch_size: int = 32,
                 val_batches: int = 4, seed: int = 0, num_workers: int = 0):
        super().__init__()
        if n_tokens > seq_len:
            raise ValueError(f"n_tokens={n_tokens} must be <= seq_len={seq_len}")
        self.save_hyperparameters()
        self.vocab_size = vocab + 2

    def train_dataloader(self):
        h = self.hparams
        return self.stream_loader(lambda rank, world: SelectiveCopyStream(h.batch_size, h.seq_len, h.n_tokens, h.vocab,
                                                                          h.seed, rank, world),
                                  num_workers=h.num_workers)

    def val_dataloader(self):
        h = self.hparams
        examples = SelectiveCopyExamples(h.val_batches * h.batch_size, h.seq_len, h.n_tokens, h.vocab, h.seed)
        return DataLoader(examples, batch_size=h.batch_size, num_workers=h.num_workers,
                          generator=torch.Generator().manual_seed(h.seed))


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
