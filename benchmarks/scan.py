"""Selective-scan speed: the sequential oracle (`selective_scan_ref`) against the "torch" fast path and every
kernels backend that loads here, forward and forward+backward, measured in one run.

Inputs are a Mamba layer's call: B/C input-dependent (batch, N, L), D, z, delta_bias and softplus on, fp32.
Prints a table (speed-up = ref time / time, same run) and the machine; writes benchmarks/results/scan.json.
    python benchmarks/scan.py [--threads 2] [--repeats 3] [--quick] [--chunks 32 128]
Targets at batch 2, dim 768, N 16, L 1024: the torch fast path >= 5x forward and >= 3x fwd+bwd; the C++ path
>= 20x fwd+bwd over the ref and >= 3x over the torch path. Each row also reports the bytes/s it achieves on the
minimum traffic of a fused scan, against a measured memory copy (fp32, s = 4, BLD = batch*dim*L, BNL = batch*N*L):
  forward  = s * (4*BLD + 2*BNL)   read u, delta, z, write y; read B, C
  backward = s * (7*BLD + 4*BNL)   read u, delta, z, dy, write du, ddelta, dz; read B, C, write dB, dC
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from _timing import best_time  # sibling module: scripts run as `python benchmarks/<name>.py`

from ssmkit import kernels
from ssmkit.core.ops import selective_scan, selective_scan_ref
from ssmkit.core.ops.selective_scan import CHUNK_SIZE, _scan_torch

SHAPES = [(2, 768, 16, 1024), (1, 64, 16, 4096), (8, 256, 16, 256)]  # (batch, dim, N, L); the first is the target
QUICK_SHAPES = [(2, 128, 16, 256)]
TARGET, TARGET_FWD, TARGET_FWD_BWD = SHAPES[0], 5.0, 3.0


def inputs(batch, dim, N, L, device):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    t = dict(u=r(batch, dim, L), delta=r(batch, dim, L) - 2.0, A=-torch.rand(dim, N, generator=g) * N,
             B=r(batch, N, L), C=r(batch, N, L), D=r(dim), z=r(batch, dim, L),
             delta_bias=0.5 * torch.rand(dim, generator=g))
    return {k: v.to(device).requires_grad_(True) for k, v in t.items()}


def measure(f, inp, repeats, device):
    """(forward seconds under no_grad, forward+backward seconds with gradients of every input)."""
    run = lambda: f(**inp, delta_softplus=True)
    with torch.no_grad():
        t_fwd = best_time(run, repeats, device)
    grad = torch.ones_like(inp["u"])
    t_fb = best_time(lambda: torch.autograd.grad(run(), list(inp.values()), grad), repeats, device)
    return t_fwd, t_fb


def implementations(device, chunks):
    """name -> function: the "torch" fast path, extra chunk sizes of it, and each kernels backend that loads."""
    impls = {f"torch (chunk {CHUNK_SIZE})": lambda **k: selective_scan(**k, backend="torch")}
    for q in chunks:
        impls[f"torch (chunk {q})"] = lambda q=q, **k: _scan_torch(**k, chunk_size=q)
    report = kernels.available(str(device))
    for name, status in report.items():
        if status == "ok":
            impls[name] = lambda name=name, **k: selective_scan(**k, backend=name)
    return impls, report


def memcpy_bytes_per_s(nbytes=256 * 2**20, repeats=5):
    """Bytes read + written per second by a large torch copy: the machine's practical memory bandwidth."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    return 2 * nbytes / best_time(lambda: dst.copy_(src), repeats, torch.device("cpu"))


def min_bytes(batch, dim, N, L, s=4):
    """(forward, forward+backward) bytes a fused scan must move at least (see the module docstring)."""
    BLD, BNL = batch * dim * L, batch * N * L
    fwd = s * (4 * BLD + 2 * BNL)
    return fwd, fwd + s * (7 * BLD + 4 * BNL)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    p.add_argument("--quick", action="store_true", help=f"one small shape {QUICK_SHAPES[0]}, one repeat")
    p.add_argument("--chunks", type=int, nargs="*", default=[], help="extra chunk sizes of the torch path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "scan.json"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    repeats = 1 if a.quick else a.repeats
    device = torch.device(a.device)
    impls, report = implementations(device, a.chunks)
    machine = dict(cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__,
                   device=str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu",
                   python=platform.python_version())
    print(f"selective scan, fp32, D/z/delta_bias/softplus on, B/C (batch, N, L); best of {repeats}")
    print(f"machine: {machine['cpu']}, {machine['threads']} thread(s), torch {machine['torch']}, "
          f"device {machine['device']}")
    print("backends: " + ", ".join(f"{k}: {v}" for k, v in report.items()))
    copy_bw = memcpy_bytes_per_s()
    print(f"memory copy: {copy_bw / 1e9:.2f} GB/s (read + write)")
    head = (f"{'batch':>5}{'dim':>5}{'N':>4}{'L':>6}  {'impl':<18}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd x':>8}"
            f"{'fwd+bwd x':>11}{'fwd+bwd GB/s':>14}{'of copy':>9}")
    print(head)
    rows = []
    for shape in QUICK_SHAPES if a.quick else SHAPES:
        inp = inputs(*shape, device)
        ref_fwd, ref_fb = measure(selective_scan_ref, inp, repeats, device)
        results = [("selective_scan_ref", ref_fwd, ref_fb)]
        results += [(name, *measure(f, inp, repeats, device)) for name, f in impls.items()]
        fb_bytes = min_bytes(*shape)[1]
        for name, t_fwd, t_fb in results:
            row = dict(batch=shape[0], dim=shape[1], N=shape[2], L=shape[3], impl=name, fwd_s=t_fwd,
                       fwd_bwd_s=t_fb, fwd_x=ref_fwd / t_fwd, fwd_bwd_x=ref_fb / t_fb,
                       fwd_bwd_bytes_per_s=fb_bytes / t_fb, fraction_of_copy=fb_bytes / t_fb / copy_bw)
            rows.append(row)
            print(f"{shape[0]:>5}{shape[1]:>5}{shape[2]:>4}{shape[3]:>6}  {name:<18}{t_fwd * 1e3:>10.1f}"
                  f"{t_fb * 1e3:>12.1f}{row['fwd_x']:>8.1f}{row['fwd_bwd_x']:>11.1f}"
                  f"{row['fwd_bwd_bytes_per_s'] / 1e9:>14.2f}{row['fraction_of_copy']:>9.3f}")
    at_target = {r["impl"]: r for r in rows if (r["batch"], r["dim"], r["N"], r["L"]) == TARGET}
    fast = at_target.get(f"torch (chunk {CHUNK_SIZE})")
    if fast:
        ok = fast["fwd_x"] >= TARGET_FWD and fast["fwd_bwd_x"] >= TARGET_FWD_BWD
        print(f"target {TARGET}: torch fast path {fast['fwd_x']:.1f}x fwd (>= {TARGET_FWD}), "
              f"{fast['fwd_bwd_x']:.1f}x fwd+bwd (>= {TARGET_FWD_BWD}): {'met' if ok else 'NOT met'}")
    cpp = at_target.get("cpp")
    if fast and cpp:
        over_torch = fast["fwd_bwd_s"] / cpp["fwd_bwd_s"]
        ok = cpp["fwd_bwd_x"] >= 20 and over_torch >= 3
        print(f"target {TARGET}: cpp {cpp['fwd_bwd_x']:.1f}x fwd+bwd over the ref (>= 20), {over_torch:.1f}x over the"
              f" torch path (>= 3): {'met' if ok else 'NOT met'}; {cpp['fraction_of_copy']:.3f} of the memory copy")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(benchmark="selective_scan", machine=machine, repeats=repeats, quick=a.quick,
                                   backends=report, memcpy_bytes_per_s=copy_bw, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
