"""Top-k recommendations from a SequentialRecTask checkpoint, in the data's original item ids.

    ssmkit recommend --checkpoint CKPT --history FILE [-k 10] [--out OUT.csv]
    ssmkit recommend --checkpoint CKPT --stream [FILE]  [--history FILE] [-k 10]

--history: CSV with header `user,item[,timestamp]`, one interaction per row; each user's rows are stably sorted by
timestamp (file order without one). Output CSV `user,rank,item,score` (stdout unless --out). Only the last
max_len interactions of a history are read, as in training.
--stream: one interaction `user,item[,timestamp]` per line from FILE or stdin ('-'); after each line prints
`user,item_1 item_2 ... item_k`, the user's updated top-k, computed with the model's recurrent `step` (one
interaction of work, whatever the history length; Mamba4Rec, TiM4Rec and GRU4Rec). With --history, the users'
states are first built from those histories. The streamed state keeps the whole history (no max_len window).
Items are scored over the full catalogue; items already in the history are not excluded (the training protocol).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import sys
from typing import Dict, List, Mapping, Optional, Sequence, TextIO, Tuple

import torch

from .models.base import SequentialRecommender
from .task import build_model


class Recommender:
    """A model loaded from a checkpoint with its item map."""

    def __init__(self, checkpoint: str, device: str = "cpu"):
        ckpt = torch.load(checkpoint, map_location=device, weights_only=False)
        if "recsys" not in ckpt:
            raise ValueError(f"{checkpoint} is not a SequentialRecTask checkpoint (no 'recsys' entry)")
        info = ckpt["recsys"]
        self.item_ids: List[str] = list(info["item_ids"])
        self.index = {item: k + 1 for k, item in enumerate(self.item_ids)}
        self.max_len: int = info.get("max_len") or 50
        self.model: SequentialRecommender = build_model(info["model"])
        self.model.grow_items(len(self.item_ids))
        self.model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
                                    if k.startswith("model.")})
        self.model.to(device).eval()
        self.device = device

    def item_index(self, item: str, where: str) -> int:
        if item not in self.index:
            raise KeyError(f"{where}: item {item!r} is not in the model's item map ({len(self.index)} items)")
        return self.index[item]

    def top_k(self, h: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        scores = self.model.scores(h)
        scores[:, 0] = float("-inf")
        return scores.topk(min(k, len(self.item_ids)), dim=1)

    @torch.no_grad()
    def encode(self, histories: Sequence[Sequence[int]], times: Optional[Sequence[Sequence[float]]] = None):
        """Model ids (last max_len used) -> user representations (B, D)."""
        width = max(1, min(self.max_len, max(len(h) for h in histories)))
        items = torch.zeros(len(histories), width, dtype=torch.long)
        stamps = torch.zeros(len(histories), width, dtype=torch.float64)
        lengths = torch.zeros(len(histories), dtype=torch.long)
        for b, hist in enumerate(histories):
            hist = list(hist)[-width:]
            items[b, :len(hist)] = torch.tensor(hist, dtype=torch.long)
            if times is not None:
                stamps[b, :len(hist)] = torch.tensor(list(times[b])[-width:], dtype=torch.float64)
            lengths[b] = len(hist)
        return self.model.encode(items.to(self.device), lengths.to(self.device), stamps.to(self.device))


def recommend(checkpoint: str, histories: Mapping[str, Sequence[str]], k: int = 10,
              times: Optional[Mapping[str, Sequence[float]]] = None, batch_size: int = 512) -> List[Dict]:
    """Top-k items per user: rows {"user", "rank", "item", "score"} with original item ids, in the order of
    `histories`. `times` (same keys) carries timestamps for time-aware models. Unknown items raise KeyError."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rec = Recommender(checkpoint)
    users = list(histories)
    empty = [u for u in users if not histories[u]]
    if empty:
        raise ValueError(f"empty history for users {empty[:5]}")
    rows = []
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        ids = [[rec.item_index(i, f"user {u!r}") for i in histories[u]] for u in chunk]
        h = rec.encode(ids, [times[u] for u in chunk] if times is not None else None)
        with torch.no_grad():
            scores, top = rec.top_k(h, k)
        for b, user in enumerate(chunk):
            rows += [{"user": user, "rank": r + 1, "item": rec.item_ids[int(top[b, r]) - 1],
                      "score": float(scores[b, r])} for r in range(top.shape[1])]
    return rows


def _read_interactions(handle: TextIO, name: str):
    """Yield (line number, user, item, timestamp or None) from `user,item[,timestamp]` lines (header optional)."""
    for number, row in enumerate(csv.reader(handle), start=1):
        if not row or not "".join(row).strip():
            continue
        if number == 1 and row[0].strip().lower() == "user":
            continue
        if len(row) not in (2, 3):
            raise ValueError(f"{name}:{number}: expected 'user,item[,timestamp]', got {len(row)} fields")
        if not row[0].strip() or not row[1].strip():
            raise ValueError(f"{name}:{number}: empty {'user' if not row[0].strip() else 'item'} id")
        stamp = None
        if len(row) == 3:
            try:
                stamp = float(row[2])
            except ValueError:
                raise ValueError(f"{name}:{number}: timestamp {row[2]!r} is not a number") from None
            if not math.isfinite(stamp):
                raise ValueError(f"{name}:{number}: timestamp {row[2]!r} is not finite")
        yield number, row[0].strip(), row[1].strip(), stamp


def _whole_lines(handle: TextIO, path: str):
    """The file's lines; text that is not UTF-8 or a last line without its line end (a file cut mid-number) raises
    ValueError naming the file and line."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(("\n", "\r")):
                raise ValueError(f"{path}:{number}: the file ends inside a line ({line[-30:]!r} has no line end), "
                                 f"so it looks cut off; if that line is complete, end the file with a newline")
            yield line
    except UnicodeDecodeError as e:
        with open(path, "rb") as f:
            raw = f.read()
        try:  # the decoder's position is within a buffered chunk: find the line of the first bad byte
            raw.decode("utf-8")
        except UnicodeDecodeError as exact:
            number = raw[:exact.start].count(b"\n")
        raise ValueError(f"{path}:{number + 1}: not UTF-8 text ({e.reason})") from None


def read_histories(path: str) -> Tuple[Dict[str, List[str]], Optional[Dict[str, List[float]]]]:
    """CSV `user,item[,timestamp]` -> histories (stably sorted by timestamp) and times (None without them)."""
    rows: Dict[str, List[Tuple[float, int, str]]] = {}
    has_time = None
    with open(path, newline="", encoding="utf-8") as f:
        for number, user, item, stamp in _read_interactions(_whole_lines(f, path), path):
            if has_time is None:
                has_time = stamp is not None
            elif has_time != (stamp is not None):
                raise ValueError(f"{path}:{number}: every row needs a timestamp, or none does")
            rows.setdefault(user, []).append((stamp if stamp is not None else 0.0, number, item))
    if not rows:
        raise ValueError(f"{path}: no interactions (an empty file)")
    for user in rows:
        rows[user].sort(key=lambda r: (r[0], r[1]))
    histories = {u: [r[2] for r in v] for u, v in rows.items()}
    times = {u: [r[0] for r in v] for u, v in rows.items()} if has_time else None
    return histories, times


def stream(rec: Recommender, lines: TextIO, name: str, k: int, out: TextIO,
           histories: Optional[Mapping[str, Sequence[str]]] = None,
           times: Optional[Mapping[str, Sequence[float]]] = None) -> int:
    """Update each user's state with `step` per interaction line and print the new top-k; returns lines read."""
    if not rec.model.streamable:
        raise ValueError(f"{type(rec.model).__name__} cannot stream (no recurrent state); use --history without "
                         f"--stream to re-encode histories")
    states: Dict[str, tuple] = {}

    @torch.no_grad()
    def update(user: str, item: int, stamp: Optional[float]):
        state = states.get(user)
        if state is None:
            state = rec.model.initial_state(1)
        t = torch.tensor([stamp if stamp is not None else 0.0], dtype=torch.float64, device=rec.device)
        h, states[user] = rec.model.step(torch.tensor([item], device=rec.device), state, t)
        return h

    for user, hist in (histories or {}).items():
        for j, item in enumerate(hist):
            update(user, rec.item_index(item, f"history of {user!r}"), times[user][j] if times else None)
    count = 0
    writer = csv.writer(out)
    for number, user, item, stamp in _read_interactions(lines, name):
        h = update(user, rec.item_index(item, f"{name}:{number}"), stamp)
        _, top = rec.top_k(h, k)
        writer.writerow([user, " ".join(rec.item_ids[int(i) - 1] for i in top[0])])
        out.flush()
        count += 1
    return count


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit recommend", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="SequentialRecTask checkpoint (.ckpt)")
    parser.add_argument("--history", help="CSV user,item[,timestamp] of past interactions")
    parser.add_argument("--stream", nargs="?", const="-", help="stream interactions from FILE or stdin ('-')")
    parser.add_argument("-k", type=int, default=10, help="number of items to recommend")
    parser.add_argument("--out", help="output CSV (default stdout)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"-k must be >= 1, got {args.k}")
    if args.history is None and args.stream is None:
        parser.error("give --history FILE, --stream [FILE], or both")
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        histories, times = read_histories(args.history) if args.history else (None, None)
        if args.stream is not None:
            rec = Recommender(args.checkpoint)
            lines = sys.stdin if args.stream == "-" else open(args.stream, newline="")
            with lines if args.stream != "-" else contextlib.nullcontext(lines):
                stream(rec, lines, "<stdin>" if args.stream == "-" else args.stream, args.k, out, histories, times)
        else:
            writer = csv.DictWriter(out, fieldnames=["user", "rank", "item", "score"])
            writer.writeheader()
            writer.writerows(recommend(args.checkpoint, histories, args.k, times))
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

