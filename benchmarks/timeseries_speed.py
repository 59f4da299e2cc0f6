"""Training-step time of SpaceTime and Chimera with the companion Krylov columns by dense repeated squaring
(`kernel_method="squaring"`, the code before 2026-11-30) and by the O(d) companion recurrence
("recurrence", now the default), in one run on the same inputs and weights; prints a table, writes JSON.

  python benchmarks/timeseries_speed.py --threads 1 [--repeats 5] [--out FILE.json]

One step = forward + backward of the model's training loss (SpaceTime's three-term loss, Chimera's MSE) at the
configs' sizes (SpaceTime d_model 128, 16 kernels x d = 64, per-channel decoder, batch 50; Chimera d_model 16,
decoder 8 kernels x d = 32, batch 32), L = 96, 7 channels. Also checks both methods give the same loss.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import tempfile
import time

import torch

from ssmkit.timeseries.models import Chimera, SpaceTime

MODELS = {
    "spacetime": (lambda H, method: SpaceTime(96, H, 7, d_model=128, n_blocks=1, kernel_dim=64, n_kernels=16,
                                              dropout=0.0, kernel_method=method), 50),
    "chimera": (lambda H, method: Chimera(96, H, 7, d_model=16, e_layers=1, d_state=8, kernel_dim=32, n_kernels=8,
                                          dropout=0.0, kernel_method=method), 32),
}


def step_loss(model, x, y):
    if hasattr(model, "loss"):
        return model.loss(x, y, None, n_targets=y.shape[-1])
    return (model(x) - y).pow(2).mean()


def time_steps(model, x, y, repeats):
    """Seconds per forward + backward step (median of `repeats` after one warm-up) and the loss."""
    loss = step_loss(model, x, y)
    loss.backward()
    times = []
    for _ in range(repeats):
        model.zero_grad()
        t0 = time.perf_counter()
        step_loss(model, x, y).backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), loss.item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--horizons", nargs="+", type=int, default=[96, 720])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(pathlib.Path(tempfile.gettempdir()) / "ssmkit_bench" / "timeseries_speed.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        build, batch = MODELS[name]
        for H in args.horizons:
            torch.manual_seed(0)
            x, y = torch.randn(batch, 96, 7), torch.randn(batch, H, 7)
            result = {}
            for method in ("squaring", "recurrence"):
                torch.manual_seed(1)
                model = build(H, method)
                result[method] = time_steps(model, x, y, args.repeats)
            (old, old_loss), (new, new_loss) = result["squaring"], result["recurrence"]
            rows.append({"model": name, "H": H, "batch": batch, "squaring_s": old, "recurrence_s": new,
                         "speedup": old / new, "loss_squaring": old_loss, "loss_recurrence": new_loss})
            print(json.dumps(rows[-1]), flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}")
    print(f"\n{machine}\n| model | H | batch | step, squaring (s) | step, recurrence (s) | speed-up | loss equal |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        same = abs(r["loss_squaring"] - r["loss_recurrence"]) <= 1e-4 * max(1.0, abs(r["loss_squaring"]))
        print(f"| {r['model']} | {r['H']} | {r['batch']} | {r['squaring_s']:.3f} | {r['recurrence_s']:.3f} | "
              f"{r['speedup']:.1f}x | {'yes' if same else 'NO'} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
