"""Depthwise causal conv1d (Mamba's short conv, SiLU, W = 4) on CPU: the PyTorch path (F.conv1d) against the C++
kernel with its backward, forward and forward+backward, measured interleaved in one run.

x is passed as the Mamba mixer passes it: a (batch, dim, L) transposed slice of the (batch, L, 2 dim) in_proj
output, so the timings include what autograd does to route dx back into it.
    OMP_NUM_THREADS=1 python benchmarks/causal_conv.py [--repeats 5] [--out benchmarks/results/causal_conv.json]
Shapes: a Beauty recommender batch split by history length (2,048 rows over buckets of L 2-50), Vim-Ti's
(64 x 384 x 197) and a Mamba-130M sequence (2 x 1536 x 1024).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _timing import best_time  # sibling modules: scripts run as `python benchmarks/<name>.py`
from scan import cpu_model

from ssmkit.core.ops.conv import causal_conv1d

SHAPES = [(2048, 128, 2), (1024, 128, 8), (512, 128, 16), (256, 128, 50), (64, 384, 197), (2, 1536, 1024)]


def timings(batch, dim, L, backend, repeats, W=4):
    g = torch.Generator().manual_seed(0)
    xz = torch.randn(batch, L, 2 * dim, generator=g).requires_grad_(True)
    w = torch.randn(dim, W, generator=g).requires_grad_(True)
    b = torch.randn(dim, generator=g).requires_grad_(True)
    dy = torch.randn(batch, dim, L, generator=g)
    call = lambda: causal_conv1d(xz[..., :dim].transpose(1, 2), w, b, "silu", backend=backend)  # noqa: E731

    def fwd():
        with torch.no_grad():
            call()

    def fwd_bwd():
        call().backward(dy)

    cpu = torch.device("cpu")
    return best_time(fwd, repeats, cpu), best_time(fwd_bwd, repeats, cpu)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "causal_conv.json"))
    args = p.parse_args()
    machine = dict(cpu=cpu_model(), threads=torch.get_num_threads(),
                   torch=torch.__version__)
    print(f"machine: {machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']}")
    print("| batch x dim x L | torch fwd ms | cpp fwd ms | torch fwd+bwd ms | cpp fwd+bwd ms | fwd+bwd speed-up |\n"
          "|---|---|---|---|---|---|")
    rows = []
    for batch, dim, L in SHAPES:
        (tf, tfb), (cf, cfb) = (timings(batch, dim, L, be, args.repeats) for be in ("torch", "cpp"))
        rows.append(dict(batch=batch, dim=dim, L=L, torch_fwd_s=tf, cpp_fwd_s=cf, torch_fwd_bwd_s=tfb,
                         cpp_fwd_bwd_s=cfb, fwd_bwd_speedup=tfb / cfb))
        print(f"| {batch} x {dim} x {L} | {1e3 * tf:.1f} | {1e3 * cf:.1f} | {1e3 * tfb:.1f} | {1e3 * cfb:.1f} "
              f"| {tfb / cfb:.1f}x |", flush=True)
    Path(args.out).write_text(json.dumps({"benchmark": "causal_conv1d", "machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
