"""Interaction logs -> the RecBole sequential protocol -> a LightningDataModule.

Readers (plain or gzip): RecBole atomic `.inter` (typed TSV header), MovieLens-100K `u.data`, MovieLens-1M
`ratings.dat`, and the Amazon time-interval files (`uid i1 i2 ... iN<TAB>0 dt2 ... dtN`, gaps in seconds).
Each returns an `InteractionLog` of (user, item, timestamp) in file order, ids kept as the file's strings.

The protocol (RecBole 1.2 `SequentialDataset` with `LS: valid_and_test`, `order: TO`): iterative k-core, stable
sort by (user, time) with file order breaking ties, item ids remapped to 1..n (0 is padding), every position
i >= 1 of a user's sequence is one sample (history = the previous <= max_len items, target = item i); per user
the last sample is test, the second-to-last valid, the rest train (a user with one sample keeps it for training,
with two: train + test). The test history therefore contains the valid item. Padding goes on the right.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import pathlib
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple


import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssmkit.data import ResumableDataModule
from ssmkit.textfiles import non_utf8_line

INTER_FIELDS = {"user_id": "token", "item_id": "token", "rating": "float", "timestamp": "float"}
FORMATS = ("inter", "u.data", "ratings.dat", "timeinterval")
SPLITS = ("train", "val", "test")


class DataFormatError(ValueError):
    """A malformed interaction file; the message names the file and the line."""

    def __init__(self, path, line: int, why: str):
        super().__init__(f"{path}:{line}: {why}")
        self.path, self.line = str(path), line


@dataclass
class InteractionLog:
    """Interactions in file order: user and item ids as the file spells them, timestamps in seconds (float64)."""
    users: List[str]
    items: List[str]
    times: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


def _open_text(path: pathlib.Path) -> io.TextIOBase:
    return io.TextIOWrapper(gzip.open(path), encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _number(text: str, path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(path, line, f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataFormatError(path, line, f"{column} {text!r} is not finite")
    return value


def _ids(user: str, item: str, path, line: int) -> None:
    for column, value in (("user id", user), ("item id", item)):
        if not value.strip():
            raise DataFormatError(path, line, f"empty {column}")


def _lines(path: pathlib.Path) -> Iterator[Tuple[int, str]]:
    """(line number, line without newline), skipping blank lines. Text that is not UTF-8, a damaged or cut gzip
    stream, an empty file and a last line without its line end (a file cut mid-line) raise DataFormatError."""
    number, line, seen = 0, "\n", False
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    seen = True
                    yield number, line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, non_utf8_line(path, gzipped=path.suffix == ".gz"),
                              f"not UTF-8 text ({e.reason}); convert the file to UTF-8") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataFormatError(path, number + 1, f"gzip stream is damaged or cut short ({e})") from None
    if not seen:
        raise DataFormatError(path, 1, "empty file")
    if not line.endswith(("\n", "\r")):
        raise DataFormatError(path, number, f"the file ends inside a line ({line[-30:]!r} has no line end), so it "
                              f"looks cut off; if that line is complete, end the file with a newline")


def read_atomic_inter(path) -> InteractionLog:
    """RecBole atomic `.inter`: tab-separated, header `user_id:token item_id:token [rating:float] [timestamp:float]`.

    Without a timestamp column the file order is the time order (timestamps 0, 1, 2, ... per file position).
    """
    path = pathlib.Path(path)
    rows = _lines(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise DataFormatError(path, 1, "empty file, expected a typed header such as 'user_id:token'") from None
    columns = []
    for field in header.split("\t"):
        name, _, kind = field.partition(":")
        if name not in INTER_FIELDS:
            raise DataFormatError(path, 1, f"unknown column {field!r}; known: "
                                  f"{', '.join(f'{k}:{v}' for k, v in INTER_FIELDS.items())}")
        if kind != INTER_FIELDS[name]:
            raise DataFormatError(path, 1, f"column {name!r} must be typed {INTER_FIELDS[name]!r}, got {field!r}")
        columns.append(name)
    if len(set(columns)) != len(columns):
        raise DataFormatError(path, 1, f"a column appears twice in the header: {header!r}")
    for needed in ("user_id", "item_id"):
        if needed not in columns:
            raise DataFormatError(path, 1, f"header has no {needed!r} column: {header!r}")
    u, i = columns.index("user_id"), columns.index("item_id")
    t = columns.index("timestamp") if "timestamp" in columns else None
    r = columns.index("rating") if "rating" in columns else None
    users, items, times = [], [], []
    for number, line in rows:
        fields = line.split("\t")
        if len(fields) != len(columns):
            raise DataFormatError(path, number, f"expected {len(columns)} tab-separated fields, got {len(fields)}")
        if r is not None:
            _number(fields[r], path, number, "rating")
        _ids(fields[u], fields[i], path, number)
        users.append(fields[u])
        items.append(fields[i])
        times.append(_number(fields[t], path, number, "timestamp") if t is not None else float(len(times)))
    return InteractionLog(users, items, np.asarray(times, dtype=np.float64))


def read_movielens(path) -> InteractionLog:
    """MovieLens `u.data` (user<TAB>item<TAB>rating<TAB>timestamp) or `ratings.dat` (user::item::rating::timestamp)."""
    path = pathlib.Path(path)
    sep = "::" if path.name.startswith("ratings.dat") else "\t"
    users, items, times = [], [], []
    for number, line in _lines(path):
        fields = line.split(sep)
        if len(fields) != 4:
            raise DataFormatError(path, number, f"expected 4 fields separated by {sep!r} "
                                  f"(user, item, rating, timestamp), got {len(fields)}")
        _number(fields[2], path, number, "rating")
        _ids(fields[0], fields[1], path, number)
        users.append(fields[0])
        items.append(fields[1])
        times.append(_number(fields[3], path, number, "timestamp"))
    return InteractionLog(users, items, np.asarray(times, dtype=np.float64))


def read_time_interval(path) -> InteractionLog:
    """Amazon time-interval file: `uid i1 ... iN<TAB>0 dt2 ... dtN` (or items only); timestamps = cumulative gaps.

    The timestamps are relative per user (0 at the first item): only differences are meaningful.
    """
    path = pathlib.Path(path)
    users, items, times = [], [], []
    for number, line in _lines(path):
        seq_part, _, gap_part = line.partition("\t")
        tokens = seq_part.split()
        if len(tokens) < 2:
            raise DataFormatError(path, number, "expected a user id followed by at least one item id")
        user, seq = tokens[0], tokens[1:]
        if gap_part.strip():
            gaps = gap_part.split()
            if len(gaps) != len(seq):
                raise DataFormatError(path, number, f"{len(seq)} items but {len(gaps)} time gaps")
            values = [_number(g, path, number, "time gap") for g in gaps]
            if any(v < 0 for v in values):
                raise DataFormatError(path, number, "time gaps must be >= 0")
            stamps = np.cumsum(values)
        else:
            stamps = np.arange(len(seq), dtype=np.float64)
        users.extend([user] * len(seq))
        items.extend(seq)
        times.extend(stamps.tolist())
    return InteractionLog(users, items, np.asarray(times, dtype=np.float64))


def detect_format(path) -> str:
    """The reader for a file name: *.inter[.gz], u.data, ratings.dat, *.txt[.gz] (time-interval)."""
    name = pathlib.Path(path).name.removesuffix(".gz")
    if name.endswith(".inter"):
        return "inter"
    if name in ("u.data", "ratings.dat"):
        return name
    if name.endswith(".txt"):
        return "timeinterval"
    raise ValueError(f"cannot tell the format of {path}; pass format= one of {FORMATS}")


def read_log(path, format: str = "auto") -> InteractionLog:
    """Read any supported interaction file (see `detect_format`)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interaction file not found: {path}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    reader = {"inter": read_atomic_inter, "u.data": read_movielens, "ratings.dat": read_movielens,
              "timeinterval": read_time_interval}[fmt]
    return reader(path)


def k_core(log: InteractionLog, user_min: int = 5, item_min: int = 5) -> InteractionLog:
    """RecBole's iterative filter: drop users with < user_min and items with < item_min interactions, both counted
    on the same snapshot, until nothing changes."""
    users = np.asarray(log.users, dtype=object)
    items = np.asarray(log.items, dtype=object)
    keep = np.ones(len(log), dtype=bool)
    while True:
        u_codes, u_inv, u_counts = np.unique(users[keep], return_inverse=True, return_counts=True)
        i_codes, i_inv, i_counts = np.unique(items[keep], return_inverse=True, return_counts=True)
        bad = (u_counts[u_inv] < user_min) | (i_counts[i_inv] < item_min)
        if not bad.any():
            break
        idx = np.flatnonzero(keep)
        keep[idx[bad]] = False
    idx = np.flatnonzero(keep)
    return InteractionLog([log.users[k] for k in idx], [log.items[k] for k in idx], log.times[idx])


def build_item_map(items: Sequence[str], base: Optional[Sequence[str]] = None) -> List[str]:
    """Original item ids by model id - 1: `base` (a pretrained map, kept in place) then new items in order of
    first appearance in `items`."""
    ids = list(base or [])
    seen = set(ids)
    for item in items:
        if item not in seen:
            seen.add(item)
            ids.append(item)
    return ids


def save_item_map(item_ids: Sequence[str], path) -> pathlib.Path:
    """Write the map as JSON {"item_ids": [original id of model id 1, 2, ...]}."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"item_ids": list(item_ids)}))
    return path


def load_item_map(path) -> List[str]:
    return list(json.loads(pathlib.Path(path).read_text())["item_ids"])


@dataclass
class Sequences:
    """Per-user, time-sorted item ids (1-based, 0 = padding) and timestamps, concatenated with offsets."""
    users: List[str]
    items: np.ndarray      # (N,) int64
    times: np.ndarray      # (N,) float64
    offsets: np.ndarray    # (n_users + 1,) int64


def to_sequences(log: InteractionLog, item_ids: Sequence[str]) -> Sequences:
    """Stable sort by (user, time) (file order breaks ties; users in order of first appearance)."""
    index = {item: k + 1 for k, item in enumerate(item_ids)}
    user_index: Dict[str, int] = {}
    user_codes = np.fromiter((user_index.setdefault(u, len(user_index)) for u in log.users), dtype=np.int64,
                             count=len(log))
    order = np.lexsort((log.times, user_codes))  # lexsort is stable
    try:
        items = np.fromiter((index[log.items[k]] for k in order), dtype=np.int64, count=len(order))
    except KeyError as e:
        raise KeyError(f"item {e.args[0]!r} is not in the item map") from None
    counts = np.bincount(user_codes, minlength=len(user_index))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Sequences(list(user_index), items, log.times[order], offsets)


def split_samples(seqs: Sequences) -> Dict[str, np.ndarray]:
    """Sample = (user index, target position within the user's sequence); RecBole's leave-one-out split."""
    out = {s: [] for s in SPLITS}
    for u in range(len(seqs.users)):
        n = int(seqs.offsets[u + 1] - seqs.offsets[u])
        positions = list(range(1, n))
        held = min(2, len(positions) - 1) if positions else 0
        train_end = len(positions) - held
        out["train"] += [(u, p) for p in positions[:train_end]]
        rest = positions[train_end:]
        if len(rest) == 2:
            out["val"].append((u, rest[0]))
        if rest:
            out["test"].append((u, rest[-1]))
    return {s: np.asarray(v, dtype=np.int64).reshape(-1, 2) for s, v in out.items()}


class SequentialDataset(Dataset):
    """Map-style dataset of next-item samples: dict(items (max_len,), times (max_len,) float64, length, target,
    target_time, user). Right-padded with item 0 / time 0."""

    def __init__(self, seqs: Sequences, samples: np.ndarray, max_len: int):
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.seqs, self.samples, self.max_len = seqs, samples, max_len

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        user, pos = (int(v) for v in self.samples[index])
        start = int(self.seqs.offsets[user])
        end = start + pos                             # history = [start, end), target at end
        begin = max(start, end - self.max_len)
        n = end - begin
        items = np.zeros(self.max_len, dtype=np.int64)
        times = np.zeros(self.max_len, dtype=np.float64)
        items[:n] = self.seqs.items[begin:end]
        times[:n] = self.seqs.times[begin:end]
        return {"items": torch.from_numpy(items), "times": torch.from_numpy(times), "length": torch.tensor(n),
                "target": torch.tensor(int(self.seqs.items[end])), "target_time": torch.tensor(self.seqs.times[end]),
                "user": torch.tensor(user)}

    def __getitems__(self, indices: Sequence[int]) -> Dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader calls this instead of `__getitem__` per index): the tensors of
        stacking `__getitem__`, gathered with numpy instead of six small tensors per sample and a stack each."""
        users, pos = self.samples[np.asarray(indices, dtype=np.int64)].T
        start = self.seqs.offsets[users]
        end = start + pos
        n = end - np.maximum(start, end - self.max_len)
        cols = np.arange(self.max_len)
        real = cols < n[:, None]
        at = np.where(real, (end - n)[:, None] + cols, 0)
        items = np.where(real, self.seqs.items[at], 0).astype(np.int64)
        times = np.where(real, self.seqs.times[at], 0.0).astype(np.float64)
        as_tensor = lambda a, dtype: torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))  # noqa: E731
        return {"items": as_tensor(items, np.int64), "times": as_tensor(times, np.float64),
                "length": as_tensor(n, np.int64), "target": as_tensor(self.seqs.items[end], np.int64),
                "target_time": as_tensor(self.seqs.times[end], np.float64), "user": as_tensor(users, np.int64)}


def collate_trimmed(samples) -> Dict[str, torch.Tensor]:
    """Stack samples (a list of `__getitem__` dicts, or the batch dict of `__getitems__`) and cut the right padding
    to the batch's longest history (results do not change: every model reads position length - 1 and no position
    before it sees the padding)."""
    if isinstance(samples, dict):
        batch = dict(samples)
    else:
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    width = max(1, int(batch["length"].max()))
    batch["items"], batch["times"] = batch["items"][:, :width], batch["times"][:, :width]
    return batch


class SequentialDataModule(ResumableDataModule):
    """One interaction file under the RecBole sequential protocol (see the module docstring).

    `item_map`: a JSON map (see `save_item_map`) whose ids are kept in place and extended with new items; when
    fine-tuning, the task's `pretrained_item_ids` (from `init_from`) are used if no map is given.
    Training samples are shuffled with `seed` by `ssmkit.data`'s sampler: sharded by rank, and a resumed run
    continues the epoch where its checkpoint stopped (docs/data_modules.md).
    """

    def __init__(self, path: str, format: str = "auto", max_len: int = 50, batch_size: int = 2048,
                 eval_batch_size: Optional[int] = None, user_min: int = 5, item_min: int = 5,
                 item_map: Optional[str] = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.path, self.format, self.max_len = path, format, max_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.user_min, self.item_min, self.item_map, self.num_workers = user_min, item_min, item_map, num_workers
        self.seed = seed
        self.datasets: Dict[str, SequentialDataset] = {}
        self.item_ids: List[str] = []

    @property
    def n_items(self) -> int:
        """Number of real items (model ids 1..n_items)."""
        if not self.item_ids:
            raise RuntimeError("call setup() first")
        return len(self.item_ids)

    def _base_item_ids(self) -> Optional[List[str]]:
        if self.item_map:
            return load_item_map(self.item_map)
        module = self.trainer.lightning_module if self._trainer_attached() else None
        return getattr(module, "pretrained_item_ids", None)

    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None and self.trainer.lightning_module is not None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.datasets:
            return
        log = k_core(read_log(self.path, self.format), self.user_min, self.item_min)
        if len(log) == 0:
            raise ValueError(f"{self.path}: no interactions left after the [{self.user_min},inf) user / "
                             f"[{self.item_min},inf) item filter")
        self.item_ids = build_item_map(log.items, self._base_item_ids())
        self.sequences = to_sequences(log, self.item_ids)
        self.samples = split_samples(self.sequences)
        self.datasets = {s: SequentialDataset(self.sequences, self.samples[s], self.max_len) for s in SPLITS}

    def save_item_map(self, path) -> pathlib.Path:
        return save_item_map(self.item_ids, path)

    def loader(self, split: str) -> DataLoader:
        return self.split_loader(self.datasets[split], split == "train", self.batch_size, self.seed, self.num_workers,
                                 eval_batch_size=self.eval_batch_size, collate_fn=collate_trimmed)
