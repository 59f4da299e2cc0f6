"""Benchmark: the C++ CPU selective scan against a straightforward fp32 sequential reference loop.

    python benchmarks/kernels_scan.py [--batch 2 --dim 768 --nstate 16 --length 1024] [--repeats 5] [--threads T]

Times forward and forward+backward (best of `--repeats`, wall clock) for
  * `reference loop`: the readable fp32 loop (exp(delta*A) and delta*B*u materialised as (B, D, L, N), the time axis
    unbound once, like `selective_scan_ref`), and `ssmkit.core.ops.selective_scan_ref` itself when it exists;
  * `cpp`: `ssmkit.kernels.load("cpp", "selective_scan", "cpu")`;
prints the table with the speed-up ratios measured in this run, and the achieved bytes/s of the C++ path (the
minimum bytes a fused scan must move, see below) against a measured `torch` memory copy on the same machine.
Writes JSON to benchmarks/results/kernels_scan.json (or --out).

Minimum bytes (fp32, s = 4, BLD = batch*dim*L, BNL = batch*N*L*groups):
  forward  = s * (4*BLD + 2*BNL)            read u, delta, z, write y; read B, C
  backward = s * (7*BLD + 4*BNL)            read u, delta, z, dy, write du, ddelta, dz; read B, C, write dB, dC
(the small (dim, N) parameters and the chunk-boundary states are left out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def reference_loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The straightforward sequential loop in the inputs' dtype: unbind time once, never index per step."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    groups = B.shape[1]
    B = B.repeat_interleave(u.shape[1] // groups, dim=1)  # (batch, dim, N, L)
    C = C.repeat_interleave(u.shape[1] // groups, dim=1)
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for a_t, bu_t, c_t in zip(dA.unbind(2), dBu.unbind(2), C.unbind(3)):
        h = a_t * h + bu_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1) + D[:, None] * u
    return y * F.silu(z)


def make_inputs(batch, dim, nstate, length, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(
        u=r(batch, dim, length),
        delta=0.5 * torch.rand(batch, dim, length, generator=g, dtype=dtype) - 1.0,
        A=-torch.rand(dim, nstate, generator=g, dtype=torch.float32).to(dtype) - 0.5,
        B=r(batch, nstate, length),
        C=r(batch, nstate, length),
        D=r(dim),
        z=r(batch, dim, length),
        delta_bias=0.5 * torch.rand(dim, generator=g, dtype=dtype),
    )


def timeit(fn, repeats):
    fn()  # warm-up (and first-use compilation)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def fwd_and_fwdbwd(call, inputs, repeats):
    grads = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    plain = {k: v.clone() for k, v in inputs.items()}

    def fwd():
        with torch.no_grad():
            call(**plain)

    def fwdbwd():
        y = call(**grads)
        y.backward(torch.ones_like(y))
        for v in grads.values():
            v.grad = None

    return timeit(fwd, repeats), timeit(fwdbwd, repeats)


def memcpy_bandwidth(nbytes=256 * 2**20, repeats=10):
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src), repeats)
    return 2 * nbytes / t  # bytes read + written per second


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--nstate", type=int, default=16)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "kernels_scan.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ssmkit import kernels

    dtype = torch.float32
    inputs = make_inputs(args.batch, args.dim, args.nstate, args.length, dtype)
    flags = dict(delta_softplus=True)

    rows = []  # (name, fwd s, fwd+bwd s)
    t0 = time.perf_counter()
    avail = kernels.available("cpu")
    cpp = kernels.load("cpp", "selective_scan", "cpu") if avail["cpp"] == "ok" else None
    build_s = time.perf_counter() - t0

    # correctness at this shape before timing: C++ against the reference loop
    if cpp is not None:
        y_ref = reference_loop(**inputs, **flags)
        y_cpp = cpp(**inputs, **flags)
        max_rel = ((y_cpp - y_ref).abs().max() / y_ref.abs().max()).item()
    else:
        max_rel = None

    ref_call = lambda **kw: reference_loop(**kw, **flags)  # noqa: E731
    rows.append(("reference loop (fp32)",) + fwd_and_fwdbwd(ref_call, inputs, args.ref_repeats))
    try:
        from ssmkit.core.ops import selective_scan_ref  # lands with the core op
    except ImportError:
        selective_scan_ref = None
    if selective_scan_ref is not None:
        rows.append(("selective_scan_ref",) + fwd_and_fwdbwd(
            lambda **kw: selective_scan_ref(**kw, **flags), inputs, args.ref_repeats))
    try:
        from ssmkit.core.ops import selective_scan  # the fast PyTorch path is backend="torch"
    except ImportError:
        selective_scan = None
    if selective_scan is not None:
        rows.append(("selective_scan torch",) + fwd_and_fwdbwd(
            lambda **kw: selective_scan(**kw, **flags, backend="torch"), inputs, args.repeats))
    if cpp is not None:
        rows.append(("cpp",) + fwd_and_fwdbwd(lambda **kw: cpp(**kw, **flags), inputs, args.repeats))

    bw = memcpy_bandwidth()
    s = torch.finfo(dtype).bits // 8
    BLD = args.batch * args.dim * args.length
    BNL = args.batch * args.nstate * args.length
    bytes_fwd = s * (4 * BLD + 2 * BNL)
    bytes_fwdbwd = bytes_fwd + s * (7 * BLD + 4 * BNL)

    base_f, base_fb = rows[0][1], rows[0][2]
    print(f"selective scan, batch {args.batch}, dim {args.dim}, N {args.nstate}, L {args.length}, fp32, "
          f"B/C (batch, N, L), z, D, delta_bias, softplus; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"backends here: {avail}")
    if cpp is not None:
        print(f"C++ extension ready in {build_s:.1f} s; max |y_cpp - y_ref| / max |y_ref| = {max_rel:.2e}")
    print(f"{'path':<24}{'fwd ms':>10}{'fwd+bwd ms':>12}{'fwd x':>8}{'fwd+bwd x':>11}{'GB/s (fwd+bwd)':>16}")
    results = []
    for name, tf, tfb in rows:
        gbs = bytes_fwdbwd / tfb / 1e9
        print(f"{name:<24}{tf * 1e3:>10.1f}{tfb * 1e3:>12.1f}{base_f / tf:>8.1f}{base_fb / tfb:>11.1f}{gbs:>16.2f}")
        results.append(dict(path=name, fwd_s=tf, fwdbwd_s=tfb, fwd_speedup=base_f / tf, fwdbwd_speedup=base_fb / tfb,
                            fwdbwd_bytes_per_s=bytes_fwdbwd / tfb))
    names = [r[0] for r in rows]
    if "cpp" in names and "selective_scan torch" in names:
        t_torch, t_cpp = rows[names.index("selective_scan torch")], rows[names.index("cpp")]
        print(f"cpp vs torch path: fwd {t_torch[1] / t_cpp[1]:.1f}x, fwd+bwd {t_torch[2] / t_cpp[2]:.1f}x")
    print(f"torch memory copy: {bw / 1e9:.2f} GB/s (read+write)")
    if cpp is not None:
        tfb = rows[-1][2]
        frac = (bytes_fwdbwd / tfb) / bw
        print(f"cpp fwd+bwd moves >= {bytes_fwdbwd / 1e6:.1f} MB: {bytes_fwdbwd / tfb / 1e9:.2f} GB/s = "
              f"{frac:.2f} of the memory copy ({1 / frac:.1f}x below it)")

    out = dict(
        shape=dict(batch=args.batch, dim=args.dim, nstate=args.nstate, length=args.length, dtype="float32"),
        options=dict(bc="input-dependent (batch, N, L)", z=True, D=True, delta_bias=True, delta_softplus=True),
        torch=torch.__version__, python=sys.version.split()[0], threads=torch.get_num_threads(),
        cpus=os.cpu_count(), machine=platform.processor() or platform.machine(),
        date=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg=os.getloadavg() if hasattr(os, "getloadavg") else None,
        backends=avail, cpp_max_rel_err_vs_ref=max_rel, memcpy_bytes_per_s=bw,
        min_bytes=dict(fwd=bytes_fwd, fwdbwd=bytes_fwdbwd), results=results,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
