"""2-D scan benchmark: SS2D forward on one 56x56x96 image (VMamba stage-1 size), and ConvS5 over T=32 frames
with the parallel scan (`forward`) against the sequential recurrence (`step` per frame, and the op's loop).

Prints a table and writes benchmarks/results/scan2d.json.  Run: python benchmarks/scan2d.py [--threads N]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ssmkit.core.layers import SS2D, ConvS5
from ssmkit.core.ops import convssm_scan, convssm_scan_ref


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scan2d.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    rows = []

    for forward_type, d_state in (("v0", 16), ("v05_noz", 1)):
        layer = SS2D(96, d_state=d_state, forward_type=forward_type).to(dev)
        x = torch.randn(1, 56, 56, 96, device=dev)
        with torch.no_grad():
            fwd = best_ms(lambda: layer(x), args.repeats)

        def fwd_bwd():
            layer(x).sum().backward()
        rows.append(dict(case=f"SS2D {forward_type} N={d_state}", shape="(1, 56, 56, 96)", variant="forward",
                         ms=fwd))
        rows.append(dict(case=f"SS2D {forward_type} N={d_state}", shape="(1, 56, 56, 96)", variant="fwd+bwd",
                         ms=best_ms(fwd_bwd, args.repeats)))

    B, T, H, W, U, P = 2, 32, 16, 16, 32, 64
    layer = ConvS5(U, d_state=P, kernel_size=3).to(dev)
    u = torch.randn(B, T, H, W, U, device=dev)

    def stepped():
        state = layer.initial_state(B, H, W)
        for t in range(T):
            _, state = layer.step(u[:, t], state)
    shape = f"({B}, {T}, {H}, {W}, {U}), P={P}"
    with torch.no_grad():
        rows.append(dict(case="ConvS5 layer", shape=shape, variant="parallel forward",
                         ms=best_ms(lambda: layer(u), args.repeats)))
        rows.append(dict(case="ConvS5 layer", shape=shape, variant="sequential step x T",
                         ms=best_ms(stepped, args.repeats)))
        lam_bar, _ = layer.discretize(torch.float32)
        Bu = torch.randn(B, T, H, W, P, dtype=torch.complex64, device=dev)
        rows.append(dict(case="convssm_scan op", shape=f"Bu ({B}, {T}, {H}, {W}, {P}) c64", variant="parallel",
                         ms=best_ms(lambda: convssm_scan(lam_bar, Bu), args.repeats)))
        rows.append(dict(case="convssm_scan op", shape=f"Bu ({B}, {T}, {H}, {W}, {P}) c64", variant="sequential",
                         ms=best_ms(lambda: convssm_scan_ref(lam_bar, Bu), args.repeats)))

    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {dev} ({device_name}), torch {torch.__version__}, threads {args.threads}, best of {args.repeats}")
    print(f"| {'case':<22} | {'shape':<32} | {'variant':<20} | {'ms':>9} |")
    print(f"|{'-' * 24}|{'-' * 34}|{'-' * 22}|{'-' * 11}|")
    for r in rows:
        print(f"| {r['case']:<22} | {r['shape']:<32} | {r['variant']:<20} | {r['ms']:9.1f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(device=str(dev), device_name=device_name, torch=torch.__version__,
                                   threads=args.threads, repeats=args.repeats, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
