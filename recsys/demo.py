"""`ssmkit demo` step: Mamba4Rec learns a built-in synthetic interaction log through the real `.inter` reader and
the RecBole protocol, is ranked against all items on the test split, writes top-10 recommendations as CSV and
streams one user's next interactions with `step`."""
from __future__ import annotations

import csv
import pathlib
import time

import numpy as np
import torch

from ssmkit.train import DemoResult, LossHistory, demo_trainer, seed, smoothed

from .data import SequentialDataModule
from .models import Mamba4Rec
from .recommend import Recommender, recommend
from .task import SequentialRecTask


def write_synthetic_log(path: pathlib.Path, users: int = 400, items: int = 80, seed: int = 0) -> pathlib.Path:
    """A RecBole atomic `.inter` file: each user walks one of 4 item cycles (each item leads to a fixed next item,
    with 10% random jumps), 6-20 interactions a few days apart."""
    rng = np.random.default_rng(seed)
    nxt = np.roll(np.arange(items).reshape(4, -1), -1, axis=1).reshape(-1)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(users):
        item, t = int(rng.integers(items)), 1.6e9 + float(rng.integers(0, 10**7))
        for _ in range(int(rng.integers(6, 21))):
            lines.append(f"user{u}\titem{item}\t{t:.0f}")
            item = int(rng.integers(items)) if rng.random() < 0.1 else int(nxt[item])
            t += float(rng.exponential(3 * 86400))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def demo(out_dir: pathlib.Path, steps: int = 60) -> DemoResult:
    """Train a small Mamba4Rec for `steps` steps; returns the summary row (test NDCG@10 over all items)."""
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    seed(0)
    log = write_synthetic_log(out_dir / "data" / "synthetic.inter")
    data = SequentialDataModule(str(log), max_len=20, batch_size=128, eval_batch_size=512)
    task = SequentialRecTask(Mamba4Rec(hidden_size=32, d_state=16), lr=3e-3)
    history = LossHistory()
    trainer = demo_trainer(out_dir, steps, [history], limit_val_batches=1)
    trainer.fit(task, data)
    ndcg = trainer.test(task, data, verbose=False)[0]["test/ndcg@10"]
    ckpt = out_dir / "mamba4rec.ckpt"
    trainer.save_checkpoint(ckpt)
    seqs = data.sequences
    users = {seqs.users[u]: [data.item_ids[int(i) - 1] for i in seqs.items[seqs.offsets[u]:seqs.offsets[u + 1]]]
             for u in range(5)}
    recs = out_dir / "recommendations.csv"
    with open(recs, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["user", "rank", "item", "score"])
        writer.writeheader()
        writer.writerows(recommend(str(ckpt), users, k=10))
    rec, user = Recommender(str(ckpt)), next(iter(users))
    state = rec.model.initial_state(1)
    streamed = out_dir / "streaming.csv"
    with open(streamed, "w", newline="") as f, torch.no_grad():
        writer = csv.writer(f)
        writer.writerow(["after_item", "top_10"])
        for item in users[user]:
            h, state = rec.model.step(torch.tensor([rec.index[item]]), state)
            writer.writerow([item, " ".join(rec.item_ids[int(i) - 1] for i in rec.top_k(h, 10)[1][0])])
    first, last = smoothed(history.losses)
    return DemoResult(model="Mamba4Rec (d 32)", task=f"next item, synthetic log ({data.n_items} items)",
                      steps=len(history.losses), first_loss=first, last_loss=last, metric_name="test NDCG@10",
                      metric=float(ndcg), seconds=time.perf_counter() - t0, outputs=[log, ckpt, recs, streamed])
