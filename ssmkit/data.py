"""Resumable, rank-aware data plumbing shared by every domain's data module (see docs/data_modules.md).

Two kinds of training data, one rule: what a process reads next is a pure function of (seed, position, rank,
world size, DataLoader worker), and the position is saved in every checkpoint by the data module's
`state_dict` and restored by its `load_state_dict`, so a resumed run reads exactly what the uninterrupted run
would have read, and N processes at batch B read together exactly what one process reads at batch N x B.

- Map-style sets: `ResumableDataModule.train_sampler` gives a `ResumableSampler`, PyTorch's
  `DistributedSampler` (the sampler Lightning injects under DDP) built by the data module itself for any world
  size, 1 included, that also skips the batches a checkpoint has already consumed.
- Endless streams: subclass `ResumableStream` (implement `make_batch(indices)`) and serve it with
  `ResumableDataModule.stream_loader`; global step s on rank r reads the examples
  [(s * world + r) * batch, (s * world + r + 1) * batch), and DataLoader worker w of n takes the steps s = w mod n.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, get_worker_info


class ResumableSampler(DistributedSampler):
    """`DistributedSampler` (seed + epoch permutation, rank::world_size shard) that starts epoch `skip_epoch` after
    its first `skip_samples` samples, which a checkpoint says were already trained on.

    `len()` stays the full shard length: Lightning counts the skipped batches itself when it resumes mid-epoch.
    """

    def __init__(self, dataset: Sequence, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, skip_epoch: int = 0, skip_samples: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        if skip_samples < 0:
            raise ValueError(f"skip_samples must be >= 0, got {skip_samples}")
        self.skip_epoch, self.skip_samples = skip_epoch, skip_samples
        # the iterator may be created before Lightning calls set_epoch (DataLoader workers prefetch at iter())
        self.set_epoch(skip_epoch)

    def __iter__(self) -> Iterator[int]:
        indices = super().__iter__()
        return itertools.islice(indices, self.skip_samples, None) if self.epoch == self.skip_epoch else indices


class ResumableStream(IterableDataset):
    """An endless stream of batches that can start at any global step, sharded by rank and DataLoader worker.

    Subclasses implement `make_batch(indices)`: the batch of the examples with these global indices, a pure
    function of the indices (and the subclass's seed). `start` (a global step) is set by `StreamLoader` at every
    `iter()`.
    """

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.start = 0

    def make_batch(self, indices: range) -> Any:
        raise NotImplementedError

    def example_indices(self, step: int) -> range:
        """The global example indices this rank reads at global step `step`."""
        first = (step * self.world_size + self.rank) * self.batch_size
        return range(first, first + self.batch_size)

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # the DataLoader takes batches from its workers in turn, so worker w serves steps start + w, + n, ...
        for step in itertools.count(self.start + worker, n_workers):
            yield self.make_batch(self.example_indices(step))


class StreamLoader(DataLoader):
    """DataLoader over a `ResumableStream` (each item a whole batch) that starts the stream at `position()`, the
    global step to read next, every time it is iterated (a new fit, a resumed fit, a new epoch)."""

    def __init__(self, stream: ResumableStream, position: Callable[[], int], **kwargs):
        if kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers=True would keep a stale stream position in the workers; "
                             "a StreamLoader needs persistent_workers=False")
        super().__init__(stream, batch_size=None, **kwargs)
        self.position = position

    def __iter__(self):
        self.dataset.start = self.position()
        return super().__iter__()


class ResumableDataModule(L.LightningDataModule):
    """A LightningDataModule whose training position is saved in checkpoints and restored on resume.

    `state_dict()` records, from the trainer's own progress counters, the epoch and the batches of it already
    trained (an epoch whose batches are all done is recorded as the start of the next one) and the batches
    trained in the whole fit; `load_state_dict` keeps them for the next `train_sampler` / `stream_loader`.

    A data module of map-style splits implements `loader(split)` ("train", "val", "test"), usually with
    `split_loader`; the train / val / test / predict (= test) hooks call it.
    """

    def __init__(self):
        super().__init__()
        self._resume: Optional[Dict[str, int]] = None

    def rank_and_world(self) -> tuple:
        """(global rank, world size) of this process: from the trainer when attached, else (0, 1)."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _fitting(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.state.fn == "fit"

    def state_dict(self) -> Dict[str, int]:
        if not self._fitting():
            return {}
        trainer = self.trainer
        progress = trainer.fit_loop.epoch_loop.batch_progress
        epoch, batches = trainer.current_epoch, progress.current.processed
        if batches >= trainer.num_training_batches:
            epoch, batches = epoch + 1, 0
        return {"epoch": epoch, "batches": batches, "total_batches": progress.total.processed}

    def load_state_dict(self, state_dict: Dict[str, int]) -> None:
        missing = {"epoch", "batches", "total_batches"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the checkpoint's data state lacks "
                             f"{sorted(missing)}; got {state_dict}")
        self._resume = dict(state_dict)

    def train_sampler(self, dataset: Sequence, batch_size: int, seed: int, shuffle: bool = True,
                      drop_last: bool = False) -> ResumableSampler:
        """The training sampler for this rank, starting where a restored checkpoint left off (the first sampler
        made after the restore; later ones start their epochs at the beginning)."""
        rank, world = self.rank_and_world()
        resume, self._resume = self._resume or {"epoch": 0, "batches": 0}, None
        return ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed,
                                drop_last=drop_last, skip_epoch=resume["epoch"],
                                skip_samples=resume["batches"] * batch_size)

    def split_loader(self, dataset: Sequence, train: bool, batch_size: int, seed: int, num_workers: int = 0,
                     eval_batch_size: Optional[int] = None, **kwargs: Any) -> DataLoader:
        """DataLoader over one split: training batches from this rank's resumable `train_sampler`, evaluation in
        order (in batches of `eval_batch_size`, default `batch_size`). Its own seeded generator keeps iteration from
        drawing on the global random state (so a resumed run's dropout draws match); `kwargs` (collate_fn,
        drop_last) go to the DataLoader."""
        sampler = self.train_sampler(dataset, batch_size, seed) if train else None
        batch_size = batch_size if train or eval_batch_size is None else eval_batch_size
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                          persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed), **kwargs)

    def loader(self, split: str) -> DataLoader:
        raise NotImplementedError(f"{type(self).__name__} serves no {split!r} split")

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")

    def next_train_step(self) -> int:
        """Global step a stream reads next: the restored checkpoint's (once), else the batches trained so far."""
        if self._resume is not None:
            step, self._resume = self._resume["total_batches"], None
            return step
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.completed if self._fitting() else 0

    def stream_loader(self, make_stream: Callable[[int, int], ResumableStream], **kwargs) -> StreamLoader:
        """`StreamLoader` over `make_stream(rank, world_size)`, positioned by `next_train_step`."""
        rank, world = self.rank_and_world()
        return StreamLoader(make_stream(rank, world), self.next_train_step, **kwargs)
