"""SSD speed: the chunked matrix form (`ssd`) against the sequential oracle (`ssd_ref`), measured in one run.

Prints a table and writes benchmarks/results/ssd.json. Default shape: batch 2, L 1024, H 8, P 64, N 64, fp32.
    python benchmarks/ssd.py [--threads 1] [--repeats 3] [--chunks 32 64 128 256] [--backend torch cpp]
--backend takes several backends (torch, auto, triton, mamba_ssm), measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from _timing import best_time  # sibling module: scripts run as `python benchmarks/<name>.py`
import torch.nn.functional as F

from ssmkit.core.ops import ssd, ssd_ref


def inputs(batch, L, H, P, N, G, dtype, device):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    t = dict(x=r(batch, L, H, P), dt=F.softplus(r(batch, L, H) - 4.0), A=-torch.exp(torch.rand(H, generator=g)),
             B=r(batch, L, G, N), C=r(batch, L, G, N), D=r(H))
    return {k: v.to(device=device, dtype=dtype).requires_grad_(True) for k, v in t.items()}


def measure(f, inp, repeats, device):
    grad = torch.ones_like(inp["x"])
    fwd = lambda: f(**inp)

    def fwd_bwd():
        y = f(**inp)
        torch.autograd.grad(y, list(inp.values()), grad)

    with torch.no_grad():
        t_fwd = best_time(fwd, repeats, device)
    return t_fwd, best_time(fwd_bwd, repeats, device)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--L", type=int, default=1024)
    p.add_argument("--H", type=int, default=8)
    p.add_argument("--P", type=int, default=64)
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--G", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", nargs="+", default=["torch"], help="backends of `ssd` (torch, auto, triton, mamba_ssm)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ssd.json"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    inp = inputs(a.batch, a.L, a.H, a.P, a.N, a.G, torch.float32, device)

    rows = []
    ref_fwd, ref_fb = measure(lambda **k: ssd_ref(**k), inp, a.repeats, device)
    rows.append(dict(impl="ssd_ref (loop)", chunk=None, fwd_s=ref_fwd, fwd_bwd_s=ref_fb, fwd_x=1.0, fwd_bwd_x=1.0))
    for backend in a.backend:
        for q in a.chunks:
            t_fwd, t_fb = measure(lambda **k: ssd(**k, chunk_size=q, backend=backend), inp, a.repeats, device)
            rows.append(dict(impl=f"ssd ({backend})", chunk=q, fwd_s=t_fwd, fwd_bwd_s=t_fb,
                             fwd_x=ref_fwd / t_fwd, fwd_bwd_x=ref_fb / t_fb))

    shape = f"batch {a.batch}, L {a.L}, H {a.H}, P {a.P}, N {a.N}, G {a.G}, fp32, {device}, " \
            f"{torch.get_num_threads()} thread(s)"
    print(f"SSD  ({shape})")
    print(f"{'impl':<16}{'chunk':>6}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd x':>8}{'fwd+bwd x':>11}")
    for r in rows:
        print(f"{r['impl']:<16}{r['chunk'] or '-':>6}{r['fwd_s'] * 1e3:>10.1f}{r['fwd_bwd_s'] * 1e3:>12.1f}"
              f"{r['fwd_x']:>8.1f}{r['fwd_bwd_x']:>11.1f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(benchmark="ssd", shape=vars(a), threads=torch.get_num_threads(),
                                   torch=torch.__version__, machine=platform.processor() or platform.machine(),
                                   rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
