"""Long-convolution and recurrent-cell timings on this machine (CPU unless --device says otherwise).

1. Hyena (d_model 128, batch 1) forward and forward+backward at L = 1k, 4k, 16k; the growth per 4x of L is
   compared with the L log L prediction (ratio / predicted ~ 1 means L log L scaling).
2. Companion SSM kernel at L = 720, d = 64, 128 kernels: FFT algorithm vs repeated squaring vs explicit powers.
3. mLSTM at S = 2048 (batch 1, 4 heads of 64): chunkwise (chunk 64) vs parallel vs recurrent.

All ratios come from the same run. Prints a table and writes benchmarks/results/longconv.json.
Usage: python benchmarks/longconv.py [--repeats 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from ssmkit.core.layers import Hyena
from ssmkit.core.ops import (companion_kernel, companion_kernel_ref, companion_kernel_squaring, mlstm_chunkwise,
                             mlstm_parallel, mlstm_ref)


def timeit(fn, repeats: int, device: torch.device) -> float:
    """Median wall time in ms over `repeats` runs after one warm-up."""
    def run():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_hyena(repeats, device):
    torch.manual_seed(0)
    layer = Hyena(128, l_max=16384).to(device)
    rows, prev = [], None
    for L in (1024, 4096, 16384):
        x = torch.randn(1, L, 128, device=device)

        def fwd():
            with torch.no_grad():
                layer(x)

        def fwd_bwd():
            layer.zero_grad(set_to_none=True)
            layer(x).square().mean().backward()

        row = {"L": L, "forward_ms": timeit(fwd, repeats, device),
               "forward_backward_ms": timeit(fwd_bwd, repeats, device)}
        if prev is not None:
            predicted = (L * math.log2(L)) / (prev["L"] * math.log2(prev["L"]))
            row["predicted_ratio_LlogL"] = predicted
            for key in ("forward_ms", "forward_backward_ms"):
                ratio = row[key] / prev[key]
                row[key.replace("_ms", "_ratio")] = ratio
                row[key.replace("_ms", "_ratio_over_predicted")] = ratio / predicted
        rows.append(row)
        prev = row
    return rows


def bench_companion(repeats, device):
    torch.manual_seed(0)
    H, d, L = 128, 64, 720
    a = torch.randn(H, d, device=device)
    a = 0.9 * a / a.abs().sum(-1, keepdim=True)
    b, c = torch.randn(H, d, device=device), torch.randn(H, d, device=device)
    times = {name: timeit(lambda f=f: f(a, b, c, L), repeats, device)
             for name, f in (("fft", companion_kernel), ("squaring", companion_kernel_squaring),
                             ("explicit_powers", companion_kernel_ref))}
    return {"H": H, "d": d, "L": L, **{f"{k}_ms": v for k, v in times.items()},
            "squaring_over_fft": times["squaring"] / times["fft"],
            "explicit_over_fft": times["explicit_powers"] / times["fft"]}


def bench_mlstm(repeats, device):
    torch.manual_seed(0)
    B, NH, S, DH = 1, 4, 2048, 64
    q, k, v = (torch.randn(B, NH, S, DH, device=device) for _ in range(3))
    i, f = torch.randn(B, NH, S, device=device), 3 + torch.randn(B, NH, S, device=device)
    forms = {"chunkwise64": lambda: mlstm_chunkwise(q, k, v, i, f, chunk_size=64),
             "parallel": lambda: mlstm_parallel(q, k, v, i, f),
             "recurrent": lambda: mlstm_ref(q, k, v, i, f)}
    with torch.no_grad():
        times = {name: timeit(fn, repeats, device) for name, fn in forms.items()}
    return {"B": B, "NH": NH, "S": S, "DH": DH, **{f"{k}_ms": t for k, t in times.items()},
            "parallel_over_chunkwise": times["parallel"] / times["chunkwise64"],
            "recurrent_over_chunkwise": times["recurrent"] / times["chunkwise64"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "longconv.json"))
    args = parser.parse_args()
    device = torch.device(args.device)

    hyena = bench_hyena(args.repeats, device)
    companion = bench_companion(args.repeats, device)
    mlstm = bench_mlstm(args.repeats, device)

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}")
    print("\nHyena d_model=128, batch 1 (ratio = time / time at L/4; L log L predicts the last column)")
    print(f"{'L':>6} {'fwd ms':>9} {'fwd ratio':>9} {'fwd+bwd ms':>11} {'f+b ratio':>9} {'LlogL ratio':>11}")
    for r in hyena:
        fr = f"{r['forward_ratio']:.2f}" if "forward_ratio" in r else "-"
        br = f"{r['forward_backward_ratio']:.2f}" if "forward_backward_ratio" in r else "-"
        pr = f"{r['predicted_ratio_LlogL']:.2f}" if "predicted_ratio_LlogL" in r else "-"
        print(f"{r['L']:>6} {r['forward_ms']:>9.1f} {fr:>9} {r['forward_backward_ms']:>11.1f} {br:>9} {pr:>11}")
    c = companion
    print(f"\nCompanion kernel, {c['H']} kernels, d={c['d']}, L={c['L']}")
    print(f"  fft {c['fft_ms']:.2f} ms | squaring {c['squaring_ms']:.2f} ms ({c['squaring_over_fft']:.1f}x fft)"
          f" | explicit powers {c['explicit_powers_ms']:.2f} ms ({c['explicit_over_fft']:.1f}x fft)")
    m = mlstm
    print(f"\nmLSTM forward, B={m['B']} NH={m['NH']} S={m['S']} DH={m['DH']}")
    print(f"  chunkwise(64) {m['chunkwise64_ms']:.1f} ms | parallel {m['parallel_ms']:.1f} ms"
          f" ({m['parallel_over_chunkwise']:.1f}x) | recurrent {m['recurrent_ms']:.1f} ms"
          f" ({m['recurrent_over_chunkwise']:.1f}x)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "repeats": args.repeats, "machine": platform.machine(), "python": platform.python_version()}
    out.write_text(json.dumps({"meta": meta, "hyena": hyena, "companion": companion, "mlstm": mlstm}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
