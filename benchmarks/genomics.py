"""Genomics benchmarks: (a) speed/memory vs context, (b) held-out perplexity vs order-k Markov models,
(c) fine-tuning comparison on GenomicBenchmarks sets. Each prints a table and writes JSON (--out).

  (a) python benchmarks/genomics.py speed --lengths 1024 2048 4096 8192 16384 32768 65536 --threads 1
      HyenaDNA tiny-1k layout (2 x 128) vs a causal SDPA Transformer of the same width and depth, batch 1:
      forward and forward+backward seconds, and peak resident-memory growth, each point in a fresh process.
      Points whose previous measurement already took longer than --max-seconds are skipped (not estimated).
  (b) python benchmarks/genomics.py markov --store outputs/genomics/ecoli.zarr \
          [--checkpoint outputs/genomics/ecoli/checkpoints/last.ckpt] --seq-len 1025
      Order-k Markov models (k = 0..10, add-alpha counts from the train split, k and alpha chosen on validation)
      scored on exactly the targets the LM is scored on (non-overlapping windows of the test split, base 0 of
      a window unscored, context limited to the window), next to the checkpoint's test perplexity.
  (c) python benchmarks/genomics.py finetune --csv .../human_nontata_promoters_test.csv.gz \
          --pretrained outputs/genomics/ecoli/checkpoints/last.ckpt --seeds 0 1 2 --max-steps 300
      Seeded stratified 70/10/20 re-splits; HyenaDNA from the checkpoint, HyenaDNA from scratch, DNA-xLSTM,
      Caduceus-PS and a CNN of about the same size; best val-accuracy checkpoint tested; mean +- std.
      `finetune-merge a.json b.json ...` tabulates runs split over processes (e.g. one seed each).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# ---------------------------------------------------------------------------------------------- (a) speed


def _speed_point(kind: str, L: int, threads: int, repeats: int) -> dict:
    """Run in a fresh process: time forward and forward+backward at batch 1, peak RSS growth (MiB)."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from ssmkit.genomics.models import HyenaDNA, TransformerLM
    torch.manual_seed(0)
    model = HyenaDNA(d_model=128, n_layer=2, l_max=L, embed_dropout=0.0) if kind == "hyenadna" else \
        TransformerLM(d_model=128, n_layer=2, n_heads=2)
    ids = torch.randint(7, 11, (1, L))
    with torch.no_grad():
        model(ids[:, :64])  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fwd, both = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.no_grad():
            model(ids)
        fwd.append(time.perf_counter() - t)
    for _ in range(repeats):
        t = time.perf_counter()
        model(ids).float().logsumexp(-1).mean().backward()
        both.append(time.perf_counter() - t)
        model.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": kind, "L": L, "forward_s": min(fwd), "fwd_bwd_s": min(both),
            "peak_rss_growth_mib": (peak - base) / 1024}


def speed(args) -> dict:
    rows = []
    for kind in args.models:
        last = 0.0
        for L in args.lengths:
            if last > args.max_seconds:
                rows.append({"model": kind, "L": L, "skipped": f"previous point took {last:.0f} s > --max-seconds"})
                continue
            code = ("import json, runpy; "
                    f"g = runpy.run_path({str(pathlib.Path(__file__).resolve())!r}, run_name='genomics_bench'); "
                    f"print(json.dumps(g['_speed_point']({kind!r}, {L}, {args.threads}, {args.repeats})))")
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            if out.returncode:
                rows.append({"model": kind, "L": L, "skipped": out.stderr.strip().splitlines()[-1][:120]})
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            last = row["fwd_bwd_s"]
            print(f"{kind:>12} L={L:>6}: fwd {row['forward_s']:.3f} s, fwd+bwd {row['fwd_bwd_s']:.3f} s, "
                  f"peak +{row['peak_rss_growth_mib']:.0f} MiB", flush=True)
    by = {(r["model"], r["L"]): r for r in rows if "skipped" not in r}
    print("\n| L | HyenaDNA fwd s | fwd+bwd s | +MiB | Transformer fwd s | fwd+bwd s | +MiB | ratio fwd+bwd T/H |")
    print("|---|---|---|---|---|---|---|---|")
    for L in args.lengths:
        h, t = by.get(("hyenadna", L)), by.get(("transformer", L))
        cell = lambda r, k, f: (f.format(r[k]) if r else "—")  # noqa: E731
        ratio = f"{t['fwd_bwd_s'] / h['fwd_bwd_s']:.1f}" if h and t else "—"
        print(f"| {L} | {cell(h, 'forward_s', '{:.3f}')} | {cell(h, 'fwd_bwd_s', '{:.3f}')} | "
              f"{cell(h, 'peak_rss_growth_mib', '{:.0f}')} | {cell(t, 'forward_s', '{:.3f}')} | "
              f"{cell(t, 'fwd_bwd_s', '{:.3f}')} | {cell(t, 'peak_rss_growth_mib', '{:.0f}')} | {ratio} |")
    for kind in ("hyenadna", "transformer"):
        pts = sorted((L, r["fwd_bwd_s"]) for (k, L), r in by.items() if k == kind)
        if len(pts) >= 2:
            (l0, t0), (l1, t1) = pts[-2], pts[-1]
            print(f"{kind}: time grows x{t1 / t0:.2f} from L={l0} to L={l1} (L log L predicts "
                  f"x{l1 * math.log(l1) / (l0 * math.log(l0)):.2f}, L^2 x{(l1 / l0) ** 2:.1f})")
    return {"rows": rows, "threads": args.threads}

# --------------------------------------------------------------------------------------------- (b) markov


class MarkovLadder:
    """Order-0..K Markov models over ACGT with add-alpha smoothing, counted from one id array."""

    def __init__(self, train_ids: np.ndarray, K: int):
        self.K = K
        base = train_ids.astype(np.int64) - 7
        ok = (base >= 0) & (base < 4)
        self.counts = []
        for k in range(K + 1):
            code, valid = self._codes(base, ok, k + 1)
            self.counts.append(np.bincount(code[valid], minlength=4 ** (k + 1)).reshape(-1, 4).astype(np.float64))

    @staticmethod
    def _codes(base, ok, n):
        m = len(base) - n + 1
        code, valid = np.zeros(m, dtype=np.int64), np.ones(m, dtype=bool)
        for j in range(n):
            code = code * 4 + np.where(ok[j:j + m], base[j:j + m], 0)
            valid &= ok[j:j + m]
        return code, valid

    def nll(self, windows: np.ndarray, k: int, alpha: float) -> tuple:
        """(total nats, number of targets) over windows (W, L): target t >= 1 with context min(k, t) bases."""
        total, count = 0.0, 0
        W, L = windows.shape
        base = windows.astype(np.int64) - 7
        if ((base < 0) | (base > 3)).any():
            raise ValueError("Markov scoring expects A/C/G/T-only windows")
        for t in range(1, L):
            order = min(k, t)
            ctx = np.zeros(W, dtype=np.int64)
            for j in range(t - order, t):
                ctx = ctx * 4 + base[:, j]
            table = self.counts[order]
            p = (table[ctx, base[:, t]] + alpha) / (table[ctx].sum(1) + 4 * alpha)
            total -= np.log(p).sum()
            count += W
        return total, count


def _windows(store, split, L):
    from ssmkit.genomics.data import FixedWindows
    ds = FixedWindows(store, split, L)
    return np.stack([ds[i].numpy() for i in range(len(ds))])


def checkpoint_perplexity(checkpoint, store, L, batch_size=32) -> float:
    import torch

    from ssmkit.genomics.sample import load_pretrain_checkpoint
    task = load_pretrain_checkpoint(checkpoint)
    windows = torch.from_numpy(_windows(store, "test", L))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            s, c = task.token_losses(windows[i:i + batch_size])
            total, count = total + float(s), count + int(c)
    return math.exp(total / count)


def markov(args) -> dict:
    from ssmkit.genomics.store import GenomeStore
    store = GenomeStore(args.store)
    train = np.concatenate([store.ids(c, s, e) for c, s, e in store.intervals("train")])
    ladder = MarkovLadder(train, args.max_order)
    val, test = _windows(args.store, "val", args.seq_len), _windows(args.store, "test", args.seq_len)
    rows = []
    for k in range(args.max_order + 1):
        best = min(((ladder.nll(val, k, a)[0], a) for a in args.alphas))
        alpha = best[1]
        vs, vc = ladder.nll(val, k, alpha)
        ts, tc = ladder.nll(test, k, alpha)
        rows.append({"k": k, "alpha": alpha, "val_ppl": math.exp(vs / vc), "test_ppl": math.exp(ts / tc)})
        print(f"order {k:>2} (alpha {alpha}): val ppl {rows[-1]['val_ppl']:.4f}, test ppl {rows[-1]['test_ppl']:.4f}",
              flush=True)
    chosen = min(rows, key=lambda r: r["val_ppl"])
    result = {"store": str(args.store), "seq_len": args.seq_len, "rows": rows, "chosen": chosen,
              "n_test_targets": int(test.shape[0] * (test.shape[1] - 1))}
    print(f"\nbest on validation: order {chosen['k']} -> test perplexity {chosen['test_ppl']:.4f}")
    if args.checkpoint:
        result["checkpoint"] = str(args.checkpoint)
        result["checkpoint_test_ppl"] = checkpoint_perplexity(args.checkpoint, args.store, args.seq_len)
        print(f"checkpoint {args.checkpoint}: test perplexity {result['checkpoint_test_ppl']:.4f}")
    return result

# ------------------------------------------------------------------------------------------- (c) finetune


def _backbone(name: str):
    from ssmkit.genomics.models import CNN, Caduceus, DNAxLSTM, HyenaDNA
    if name.startswith("hyenadna"):
        return HyenaDNA.from_preset("tiny-1k")
    if name == "dnaxlstm":
        return DNAxLSTM.from_preset("dna-xlstm-500k", bidirectional=True)
    if name == "caduceus_ps":
        return Caduceus.from_preset("caduceus-ps-1k")
    if name == "cnn":
        return CNN(d_model=128, n_layer=3, kernel_size=9)
    raise ValueError(f"unknown model {name!r}")


def finetune_one(name, seed, args, workdir) -> dict:
    import lightning as L

    from ssmkit.genomics.labelled import SequenceDataModule
    from ssmkit.genomics.task import SequenceClassificationTask
    L.seed_everything(seed, workers=True, verbose=False)
    data = SequenceDataModule(args.csv, "csv", split=(0.7, 0.1, 0.2), seed=seed, batch_size=args.batch_size,
                              eval_batch_size=256, rc_aug=name == "caduceus_ps")
    init = args.pretrained if name == "hyenadna_pretrained" else None
    task = SequenceClassificationTask(_backbone(name), num_classes=2, pooling="mean", init_from=init, lr=args.lr,
                                      weight_decay=0.1, warmup_steps=max(1, args.max_steps // 100))
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=workdir, monitor="val/accuracy", mode="max", save_top_k=1)
    trainer = L.Trainer(max_steps=args.max_steps, val_check_interval=args.val_every, check_val_every_n_epoch=None,
                        callbacks=[ckpt], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, gradient_clip_val=1.0)
    t0 = time.perf_counter()
    trainer.fit(task, data)
    # our own checkpoint, holding the backbone object in its hyperparameters: not a weights-only file
    metrics = trainer.test(task, data, ckpt_path=ckpt.best_model_path or None, verbose=False, weights_only=False)[0]
    params = sum(p.numel() for p in task.parameters())
    return {"model": name, "seed": seed, "params": params, "seconds": time.perf_counter() - t0,
            **{k.split("/")[1]: float(v) for k, v in metrics.items() if k.startswith("test/")},
            "split": data.split_info}


def finetune(args) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed-major: an interrupted run still has every model for the first seeds
            for name in args.models:
                run = finetune_one(name, seed, args, f"{tmp}/{name}_{seed}")
                runs.append(run)
                print(f"{name:>20} seed {seed}: acc {run['accuracy']:.4f} mcc {run['mcc']:.4f} "
                      f"({run['params']:,} params, {run['seconds']:.0f} s)", flush=True)
                if args.out:  # after every run, so that a sweep stopped early keeps what finished
                    _write(args, {"runs": runs, "max_steps": args.max_steps, "lr": args.lr, "partial": True})
    finetune_table(runs)
    return {"csv": args.csv, "runs": runs, "max_steps": args.max_steps, "lr": args.lr,
            "batch_size": args.batch_size, "device": _device_name()}


def finetune_table(runs) -> None:
    print("\n| model | params | accuracy | MCC | seeds |\n|---|---|---|---|---|")
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name]
        ms = lambda k: (f"{statistics.mean(r[k] for r in rs):.4f} +- "  # noqa: E731
                        f"{statistics.stdev(r[k] for r in rs) if len(rs) > 1 else 0:.4f}")
        print(f"| {name} | {rs[0]['params']:,} | {ms('accuracy')} | {ms('mcc')} | {len(rs)} |")


def finetune_merge(args) -> dict:
    """One table from the JSON outputs of `finetune` runs split over processes (e.g. one per seed)."""
    runs = [r for path in args.json for r in json.loads(path.read_text())["runs"]]
    finetune_table(runs)
    return {"merged": [str(p) for p in args.json], "runs": runs}


def _device_name() -> str:
    import torch
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _write(args, result: dict) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": args.bench, "argv": sys.argv[1:], **result}, indent=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("speed")
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=120.0)
    p.add_argument("--models", nargs="+", default=["hyenadna", "transformer"], choices=["hyenadna", "transformer"])
    p = sub.add_parser("markov")
    p.add_argument("--store", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--seq-len", type=int, default=1025)
    p.add_argument("--max-order", type=int, default=10)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    p = sub.add_parser("finetune")
    p.add_argument("--csv", nargs="+", required=True)
    p.add_argument("--pretrained")
    p.add_argument("--models", nargs="+", default=["hyenadna_pretrained", "hyenadna_scratch", "dnaxlstm",
                                                   "caduceus_ps", "cnn"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=6e-4)
    p = sub.add_parser("finetune-merge", help="tabulate the JSON outputs of several finetune runs together")
    p.add_argument("json", nargs="+", type=pathlib.Path)
    for sp in sub.choices.values():
        sp.add_argument("--out", type=pathlib.Path, help="JSON output (default: none)")
    args = parser.parse_args(argv)
    benches = {"speed": speed, "markov": markov, "finetune": finetune, "finetune-merge": finetune_merge}
    result = benches[args.bench](args)
    if args.out:
        _write(args, result)
        print(f"wrote {args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
