"""Speed of the fused bidirectional scan (`bimamba_scan`, cpp backend) against the core two-scan path (backend
"torch": two `selective_scan` calls, each taking its fastest backend, with the flips), at Vim-Ti's layer shapes.

Inputs are one Vim-Ti mixer's call at batch 1 (dim 384, N 16, dt rank 12, fp32, u and v in the channel-contiguous
layout the mixer passes) for the token counts of 224, 512, 768 and 1024 px images. Both paths run in one process,
interleaved, best of --repeats; the speed-up is torch time / cpp time of the same run. --clock cpu times by the
process's CPU time (a core shared with other work; 1 thread).
    python benchmarks/bimamba_scan.py [--threads 1] [--repeats 20] [--sizes 224 512 768 1024] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from ssmkit.core.ops.bimamba_scan import bimamba_scan


def inputs(L, dim=384, N=16, R=12, batch=1):
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g)
    A = [-torch.arange(1, N + 1.0).repeat(dim, 1) * (0.5 + torch.rand(dim, 1, generator=g)) for _ in range(2)]
    uv = [r(batch, L, dim).transpose(1, 2) for _ in range(2)]  # (batch, dim, L) views of (batch, L, dim) memory
    z = r(batch, L, 2 * dim)[..., dim:]
    return (*uv, r(batch, L, dim), r(batch, L, dim), r(batch, L, R + 2 * N), r(batch, L, R + 2 * N), *A, r(dim),
            r(dim), r(dim), r(dim), z, R)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 768, 1024])
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    now = time.process_time if a.clock == "cpu" else time.perf_counter
    print(f"{platform.processor() or platform.machine()}, {a.threads} thread(s), best of {a.repeats}, {a.clock} clock")
    print(f"{'px':>6}{'L':>6}{'cpp ms':>10}{'torch ms':>10}{'speed-up':>10}")
    with torch.inference_mode():
        for size in a.sizes:
            args = inputs((size // 16) ** 2 + 1)
            best = {"cpp": float("inf"), "torch": float("inf")}
            for b in best:
                bimamba_scan(*args, backend=b)  # warm-up (builds the kernel on first use)
            for _ in range(a.repeats):
                for b in best:
                    t0 = now()
                    bimamba_scan(*args, backend=b)
                    best[b] = min(best[b], now() - t0)
            print(f"{size:>6}{args[0].shape[-1]:>6}{best['cpp'] * 1e3:>10.3f}{best['torch'] * 1e3:>10.3f}"
                  f"{best['torch'] / best['cpp']:>10.2f}")


if __name__ == "__main__":
    main()
