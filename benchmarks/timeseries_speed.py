"""SpaceTime and Chimera training speed: the code before the speed work of issue 22 ("before") against today's
("after"), in one process on the same inputs and weights, with interleaved repeats; prints a table, writes JSON.

  python benchmarks/timeseries_speed.py --threads 1 [--horizons 96 720] [--repeats 5] [--out FILE.json]

"before": the companion Krylov columns by dense repeated squaring (`kernel_method="squaring"`), every op on its
PyTorch path (`SSMKIT_DISABLE_BACKENDS=cpp`: Chimera's 2-D scan by the PyTorch wavefront, the Krylov recurrences
step by step), and the closed loop's roll-out reading out the next inputs as well as y (as it did before
`forecast(..., next_inputs=False)`). SpaceTime's "before" is a frozen copy of that path (`_spacetime_before.py`,
loaded with the "after" model's weights), so that speed work in the layers both share does not move the baseline.
"after": each model's default `kernel_method` with backend "auto" (on CPU the
C++ kernels of `kernels/cpu`: the fused 2-D selective scan and the companion Krylov recurrences); SpaceTime's also
computes channels first with one transform per convolved input (`fft_conv_bank`) and batched linears.

A training step is zero_grad + loss + backward + Adam step (SpaceTime's three-term loss, Chimera's MSE) at the
ETTh1 configs' sizes (configs/timeseries/{spacetime,chimera}_etth1_<H>.yaml: SpaceTime d_model 128, 16 kernels x
d = 64 and a per-channel decoder, batch 50; Chimera d_model 16, d_state 8, decoder 8 kernels x d = 32, batch 32;
L = 96, 7 channels); an evaluation step is the forward under no_grad. The ETTh1 epoch is estimated from these as
(train batches) x step + (validation batches) x evaluation, with the batch counts of the ETT protocol (no data file
is read). Dropout is off so that both paths compute the same loss, which the table checks.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import tempfile
import time

import torch

from ssmkit.timeseries.data import ett_borders
from ssmkit.timeseries.models import Chimera, SpaceTime

import _spacetime_before as spacetime_before  # sibling module: scripts run as `python benchmarks/<name>.py`

SEQ_LEN, CHANNELS = 96, 7
MODELS = {
    "spacetime": (lambda H, method: SpaceTime(SEQ_LEN, H, CHANNELS, d_model=128, n_blocks=1, kernel_dim=64,
                                              n_kernels=16, dropout=0.0, **method), 50),
    "chimera": (lambda H, method: Chimera(SEQ_LEN, H, CHANNELS, d_model=16, e_layers=1, d_state=8, kernel_dim=32,
                                          n_kernels=8, dropout=0.0, **method), 32),
}
PATHS = {"before": ({"kernel_method": "squaring"}, "cpp"), "after": ({}, "")}


def ett_batches(H: int, batch: int):
    """(train, validation) batch counts of ETTh1 at seq_len 96 and horizon H (no drop_last)."""
    starts, ends = ett_borders("ETTh1", SEQ_LEN)
    windows = [e - s - SEQ_LEN - H + 1 for s, e in zip(starts, ends)]
    return math.ceil(windows[0] / batch), math.ceil(windows[1] / batch)


def loss_of(model, x, y):
    if isinstance(model, (SpaceTime, spacetime_before.SpaceTime)):
        return model.loss(x, y, None, n_targets=y.shape[-1])
    return (model(x) - y).pow(2).mean()


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = loss_of(model, x, y)
    loss.backward()
    opt.step()
    return loss.item()


def old_rollout(model):
    """Make the model's decoder read out both y and the next inputs in every forecast, as the code before did."""
    layer = model.decoder
    full = type(layer).forecast
    layer.forecast = lambda x, horizon, next_inputs=True: full(layer, x, horizon, next_inputs=True)
    return model


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(name, H, repeats):
    build, batch = MODELS[name]
    torch.manual_seed(0)
    x, y = torch.randn(batch, SEQ_LEN, CHANNELS), torch.randn(batch, H, CHANNELS)
    runs = {}
    for path, (method, disabled) in PATHS.items():
        torch.manual_seed(1)
        model = build(H, method)
        if path == "before":
            old_rollout(model)
        runs[path] = dict(model=model, disabled=disabled, step=[], eval=[], loss=None)
    if name == "spacetime":  # the frozen copy of the code before, with the same weights
        runs["before"]["model"] = spacetime_before.load(runs["after"]["model"])
    for run in runs.values():
        run["opt"] = torch.optim.Adam(run["model"].parameters(), lr=0.0)
    for r in range(repeats + 1):  # interleaved: before, after, before, after, ...; the first round warms up
        for path, run in runs.items():
            os.environ["SSMKIT_DISABLE_BACKENDS"] = run["disabled"]
            t_step, loss = timed(lambda: train_step(run["model"], run["opt"], x, y))
            with torch.no_grad():
                t_eval, _ = timed(lambda: run["model"](x))
            if r:
                run["step"].append(t_step)
                run["eval"].append(t_eval)
            run["loss"] = loss
    os.environ["SSMKIT_DISABLE_BACKENDS"] = ""
    n_train, n_val = ett_batches(H, batch)
    row = {"model": name, "H": H, "batch": batch, "train_batches": n_train, "val_batches": n_val}
    for path, run in runs.items():
        step, ev = min(run["step"]), min(run["eval"])
        row.update({f"{path}_step_s": step, f"{path}_eval_s": ev, f"{path}_epoch_s": n_train * step + n_val * ev,
                    f"{path}_loss": run["loss"]})
    row["step_speedup"] = row["before_step_s"] / row["after_step_s"]
    row["epoch_speedup"] = row["before_epoch_s"] / row["after_epoch_s"]
    return row


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
        for H in args.horizons:
            rows.append(bench(name, H, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}, best of {args.repeats} interleaved repeats")
    print(f"\n{machine}\n| model | H | batch | train step before / after (s) | step speed-up | eval before / after (s) "
          f"| ETTh1 epoch before / after (s) | epoch speed-up | loss equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = abs(r["before_loss"] - r["after_loss"]) <= 1e-4 * max(1.0, abs(r["before_loss"]))
        print(f"| {r['model']} | {r['H']} | {r['batch']} | {r['before_step_s']:.3f} / {r['after_step_s']:.3f} | "
              f"{r['step_speedup']:.1f}x | {r['before_eval_s']:.3f} / {r['after_eval_s']:.3f} | "
              f"{r['before_epoch_s']:.0f} / {r['after_epoch_s']:.0f} | {r['epoch_speedup']:.1f}x | "
              f"{'yes' if same else 'NO'} |")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "machine": machine, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
