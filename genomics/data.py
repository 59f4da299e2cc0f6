"""Window data over a genome store: random training windows, fixed held-out windows, and their DataModule.

Training is an endless, deterministic stream of batches: batch n (counted per rank) is drawn from a generator
seeded by (seed, global batch index), so a stream restarted at batch n after a checkpoint continues exactly
where it stopped, and ranks and DataLoader workers take disjoint batches without talking to each other:
rank r of R owns global batches n * R + r, and worker w of W yields its rank's batches with n % W == w (the
DataLoader's round robin then delivers them in order). Windows never cross a split border; windows with more
than `max_n_fraction` N are redrawn; optional reverse-complement augmentation. HyenaDNA's sequence-length
warm-up is a list of stages (seq_len, batch_size, n_batches) that the stream walks through; the last stage's
seq_len is used for validation and test.
"""
from __future__ import annotations

import pathlib
from typing import List, Optional, Sequence, Tuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from .store import GenomeStore
from .tokenizer import COMPLEMENT, N


def _rc(ids: np.ndarray) -> np.ndarray:
    return COMPLEMENT[ids[..., ::-1]]


class _Windows:
    """Valid window starts of one split: each interval (contig, start, end) contributes end - start - L + 1."""

    def __init__(self, intervals, seq_len: int):
        self.seq_len = seq_len
        self.intervals = [(c, s, e) for c, s, e in intervals if e - s >= seq_len]
        counts = np.array([e - s - seq_len + 1 for _, s, e in self.intervals], dtype=np.int64)
        if counts.sum() == 0:
            raise ValueError(f"no window of length {seq_len} fits in any interval {intervals[:5]}")
        self.cumulative = np.cumsum(counts)

    def locate(self, k: int) -> Tuple[str, int]:
        """The k-th valid window start, 0 <= k < total."""
        i = int(np.searchsorted(self.cumulative, k, side="right"))
        before = 0 if i == 0 else int(self.cumulative[i - 1])
        contig, start, _ = self.intervals[i]
        return contig, start + k - before

    @property
    def total(self) -> int:
        return int(self.cumulative[-1])


class _StoreReader:
    """Opens the store lazily in whichever process reads (each DataLoader worker opens its own)."""

    def __init__(self, path, cache: bool):
        self.path, self.cache = pathlib.Path(path), cache
        self._store, self._arrays = None, {}

    @property
    def store(self) -> GenomeStore:
        if self._store is None:
            self._store = GenomeStore(self.path)
        return self._store

    def read(self, contig: str, start: int, length: int) -> np.ndarray:
        if self.cache:
            if contig not in self._arrays:
                self._arrays[contig] = self.store.ids(contig)
            return self._arrays[contig][start:start + length]
        return self.store.ids(contig, start, start + length)

    def __getstate__(self):
        return {"path": self.path, "cache": self.cache, "_store": None, "_arrays": {}}


class RandomWindowStream(IterableDataset):
    """Endless batches (ids (B, L) int64) of random training windows; see the module docstring for order."""

    def __init__(self, store_path, stages: Sequence[Tuple[int, int, Optional[int]]], split: str = "train",
                 seed: int = 0, rc_aug: bool = False, max_n_fraction: float = 0.1, cache: bool = True,
                 rank: int = 0, world_size: int = 1, max_tries: int = 100):
        self.reader = _StoreReader(store_path, cache)
        self.stages = [tuple(s) for s in stages]
        self.split, self.seed, self.rc_aug = split, seed, rc_aug
        self.max_n_fraction, self.max_tries = max_n_fraction, max_tries
        self.rank, self.world_size = rank, world_size
        self.start_batch = 0  # rank-local index of the next batch; set from the data module's saved state
        self._windows = {}

    def stage(self, n: int) -> Tuple[int, int]:
        """(seq_len, batch_size) of rank-local batch n."""
        end = 0
        for seq_len, batch_size, n_batches in self.stages:
            if n_batches is None:
                return seq_len, batch_size
            end += n_batches
            if n < end:
                return seq_len, batch_size
        return self.stages[-1][:2]

    def windows(self, seq_len: int) -> _Windows:
        if seq_len not in self._windows:
            self._windows[seq_len] = _Windows(self.reader.store.intervals(self.split), seq_len)
        return self._windows[seq_len]

    def batch(self, n: int) -> torch.Tensor:
        """Rank-local batch n, identical wherever and whenever it is drawn."""
        seq_len, batch_size = self.stage(n)
        rng = np.random.default_rng([self.seed, n * self.world_size + self.rank])
        win = self.windows(seq_len)
        out = np.empty((batch_size, seq_len), dtype=np.int64)
        for b in range(batch_size):
            for _ in range(self.max_tries):
                contig, start = win.locate(int(rng.integers(win.total)))
                ids = self.reader.read(contig, start, seq_len)
                if np.count_nonzero(ids == N) <= self.max_n_fraction * seq_len:
                    break
            else:
                raise RuntimeError(f"no window of length {seq_len} with at most {self.max_n_fraction:.0%} N "
                                   f"in {self.max_tries} draws from the {self.split} split")
            if self.rc_aug and rng.random() < 0.5:
                ids = _rc(ids)
            out[b] = ids
        return torch.from_numpy(out)

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n = self.start_batch
        while True:
            if n % n_workers == worker:
                yield self.batch(n)
            n += 1


class FixedWindows(Dataset):
    """Non-overlapping windows tiling a held-out split (the tail shorter than L of each interval is left out)."""

    def __init__(self, store_path, split: str, seq_len: int, cache: bool = True):
        self.reader = _StoreReader(store_path, cache)
        self.seq_len = seq_len
        self.starts = [(c, s) for c, a, e in self.reader.store.intervals(split) for s in range(a, e - seq_len + 1,
                                                                                                 seq_len)]
        if not self.starts:
            raise ValueError(f"the {split} split of {store_path} has no window of length {seq_len}")

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        contig, start = self.starts[i]
        return torch.from_numpy(self.reader.read(contig, start, self.seq_len).astype(np.int64))


class GenomeDataModule(L.LightningDataModule):
    """Windows of a genome store for language-model pretraining.

    Args:
        store: path of a store built by `ssmkit genome build`.
        seq_len, batch_size: window length and batch size (the final stage when `warmup_stages` is given).
        warmup_stages: HyenaDNA sequence-length warm-up, [[seq_len, batch_size, n_batches], ...] before the
            final (seq_len, batch_size); e.g. [[256, 64, 500], [512, 32, 500]].
        batches_per_epoch: training batches per rank per epoch (the stream itself is endless).
        rc_aug: reverse-complement half of the training windows.
        max_n_fraction: redraw training windows with a larger fraction of N.
        cache: each worker reads its contigs into memory once (fine for bacterial genomes); False reads zarr
            chunks per window.
        max_val_windows: validate on at most this many windows (evenly spaced; None: all); test uses all.
    State (`state_dict`, saved in Lightning checkpoints): the number of training batches consumed and the seed.
    """

    def __init__(self, store: str, seq_len: int = 1024, batch_size: int = 16,
                 warmup_stages: Optional[List[List[int]]] = None, batches_per_epoch: int = 1000,
                 eval_batch_size: Optional[int] = None, rc_aug: bool = False, max_n_fraction: float = 0.1,
                 num_workers: int = 0, seed: int = 0, cache: bool = True, max_val_windows: Optional[int] = None):
        super().__init__()
        self.save_hyperparameters()
        self.store_path = store
        self.seq_len, self.batch_size = seq_len, batch_size
        self.stages = [tuple(s) for s in (warmup_stages or [])] + [(seq_len, batch_size, None)]
        for s in self.stages:
            if len(s) != 3 or s[0] < 2 or s[1] < 1:
                raise ValueError(f"warmup_stages entries must be [seq_len >= 2, batch_size >= 1, n_batches], got {s}")
        self.batches_per_epoch, self.eval_batch_size = batches_per_epoch, eval_batch_size or batch_size
        self.rc_aug, self.max_n_fraction, self.num_workers = rc_aug, max_n_fraction, num_workers
        self.seed, self.cache, self.max_val_windows = seed, cache, max_val_windows
        self.batches_done = 0
        self._train: Optional[RandomWindowStream] = None

    def _rank(self):
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataset(self) -> RandomWindowStream:
        rank, world = self._rank()
        stream = RandomWindowStream(self.store_path, self.stages, "train", self.seed, self.rc_aug,
                                    self.max_n_fraction, self.cache, rank, world)
        stream.start_batch = self.batches_done
        return stream

    def train_dataloader(self):
        self._train = self.train_dataset()
        return DataLoader(_Epoch(self._train, self.batches_per_epoch), batch_size=None,
                          num_workers=self.num_workers, persistent_workers=False)

    def _eval(self, split, limit=None):
        ds = FixedWindows(self.store_path, split, self.seq_len, self.cache)
        if limit is not None and len(ds) > limit:
            keep = np.linspace(0, len(ds) - 1, limit).round().astype(int)
            ds.starts = [ds.starts[i] for i in keep]
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, num_workers=self.num_workers)

    def val_dataloader(self):
        return self._eval("val", self.max_val_windows)

    def test_dataloader(self):
        return self._eval("test")

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.trainer is not None and self.trainer.training:
            self.batches_done += 1
            if self._train is not None:  # the next epoch's iterator (and its workers) start from here
                self._train.start_batch = self.batches_done
        return batch

    def state_dict(self):
        return {"batches_done": self.batches_done, "seed": self.seed, "stages": [list(s) for s in self.stages]}

    def load_state_dict(self, state):
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"resuming a stream saved with seed {state['seed']} under seed {self.seed}")
        self.batches_done = int(state["batches_done"])


class _Epoch(IterableDataset):
    """One Lightning epoch of an endless stream: batches from `stream.start_batch` to the end of the epoch
    (of `batches_per_epoch` batches) that contains it; each worker yields its share, in order."""

    def __init__(self, stream: RandomWindowStream, batches_per_epoch: int):
        self.stream, self.batches_per_epoch = stream, batches_per_epoch

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self.stream.start_batch
        end = (start // self.batches_per_epoch + 1) * self.batches_per_epoch
        for n in range(start, end):
            if n % n_workers == worker:
                yield self.stream.batch(n)

    def __len__(self):
        return self.batches_per_epoch
