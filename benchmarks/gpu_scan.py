"""GPU scan speed: ssmkit's Triton kernels (and mamba_ssm when importable) against the PyTorch path, for the
selective scan and the SSD chunk scan, checked for correctness first and timed in one run.

For each op, dtype and length every backend that loads is first checked against the fp32 PyTorch path (and, at the
smallest length, against the fp64 `*_ref` oracle): the output and the gradients of every input, as
max |got - want| / max |want|, within 1e-4 for fp32 and 2e-2 for bf16/fp16 inputs. Then forward (no_grad) and
forward+backward are timed with CUDA events (warm-up, best and median of --repeats), with the peak memory each
allocates beyond its inputs (torch.cuda.max_memory_allocated). Prints a table; writes <out-dir>/gpu_scan.json and a
dated markdown table <out-dir>/gpu_scan.md. Exits 1 when a check fails, 2 when CUDA is asked for and absent.

Shapes are a Mamba-130m / Mamba-2-130m layer's call (d_model 768, expand 2):
  scan: batch 2, dim 1536, N 16, B/C (batch, N, L), D, z, delta_bias and softplus on
  ssd:  batch 2, H 24, P 64, N 128, G 1, chunk 256, D, z, dt_bias and softplus on
Activations (u, delta, B, C, z / x, dt, B, C, z) take the benchmarked dtype; A, D and the biases stay fp32.
    python benchmarks/gpu_scan.py [--lengths 1024 4096 16384] [--dtypes bf16 fp32] [--repeats 20] [--ops scan ssd]
    python benchmarks/gpu_scan.py --device cpu --quick   # the same code path on tiny shapes, Triton interpreted
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Sequence

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-2}  # max |got - want| / max |want|
GPU_BACKENDS = ("triton", "mamba_ssm")  # compared with the "torch" path, which always runs


class Op(NamedTuple):
    """One benchmarked op: its kernels name, shapes, random inputs, and calls of a backend and of the oracle."""
    kernel: str
    shape: Dict[str, int]
    quick_shape: Dict[str, int]
    activations: Sequence[str]  # inputs that take the benchmarked dtype; the others stay fp32
    inputs: Callable[[Dict[str, int], int, torch.Generator], Dict[str, torch.Tensor]]
    call: Callable[[str, Dict[str, int], Dict[str, torch.Tensor]], torch.Tensor]
    ref: Callable[[Dict[str, int], Dict[str, torch.Tensor]], torch.Tensor]


def _scan_inputs(s, L, g):
    r = lambda *shape: torch.randn(*shape, generator=g)
    b, d, n = s["batch"], s["dim"], s["N"]
    return dict(u=r(b, d, L), delta=r(b, d, L) - 2.0, A=-(1.0 + torch.rand(d, n, generator=g) * (n - 1)),
                B=r(b, n, L), C=r(b, n, L), D=r(d), z=r(b, d, L), delta_bias=0.5 * torch.rand(d, generator=g))


def _ssd_inputs(s, L, g):
    r = lambda *shape: torch.randn(*shape, generator=g)
    b, h, p, n, grp = s["batch"], s["H"], s["P"], s["N"], s["G"]
    return dict(x=r(b, L, h, p), dt=r(b, L, h) - 1.0, A=-torch.exp(torch.rand(h, generator=g)),
                B=r(b, L, grp, n), C=r(b, L, grp, n), D=r(h), z=r(b, L, h, p), dt_bias=0.5 * r(h))


def _ops():
    """The benchmarked ops (imports ssmkit here, after main has set up Triton's interpreter where needed)."""
    from ssmkit.core.ops import selective_scan, selective_scan_ref, ssd, ssd_ref

    return {
        "scan": Op("selective_scan", dict(batch=2, dim=1536, N=16), dict(batch=2, dim=8, N=4),
                   ("u", "delta", "B", "C", "z"), _scan_inputs,
                   lambda backend, s, t: selective_scan(**t, delta_softplus=True, backend=backend),
                   lambda s, t: selective_scan_ref(**t, delta_softplus=True)),
        "ssd": Op("ssd", dict(batch=2, H=24, P=64, N=128, G=1, chunk=256), dict(batch=2, H=2, P=8, N=8, G=1, chunk=16),
                  ("x", "dt", "B", "C", "z"), _ssd_inputs,
                  lambda backend, s, t: ssd(**t, chunk_size=s["chunk"], dt_softplus=True, backend=backend),
                  lambda s, t: ssd_ref(**t, dt_softplus=True)),
    }


def make_inputs(op, shape, L, dtype, device):
    """Seeded inputs on `device`: activations in `dtype`, parameters fp32."""
    t = op.inputs(shape, L, torch.Generator().manual_seed(0))
    return {k: v.to(device=device, dtype=dtype if k in op.activations else torch.float32) for k, v in t.items()}


def outputs_and_grads(fn, inputs, dy):
    """[y, grad of every input] of fn(inputs) with upstream gradient dy, on fresh leaves."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    y = fn(leaves)
    grads = torch.autograd.grad(y, list(leaves.values()), dy.to(y.dtype))
    return dict(y=y.detach(), **{f"d{k}": g for k, g in zip(leaves, grads)})


def max_rel_err(got, want):
    """(worst max |got - want| / max |want| over the tensors, the tensor's name)."""
    errs = {}
    for k, w in want.items():
        w = w.double()
        errs[k] = ((got[k].double() - w).abs().max() / w.abs().max().clamp_min(1e-30)).item()
    worst = max(errs, key=errs.get)
    return errs[worst], worst


def time_ms(fn, repeats, device, warmup=3):
    """(best, median) milliseconds of fn over `repeats` runs after `warmup` runs; CUDA events on a GPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return min(times), statistics.median(times)


def peak_mib(fn, device):
    """MiB that fn allocates at its peak beyond what was allocated before it (None off CUDA, where it is not run)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def backend_report(device, ops):
    """{op name: {backend: "ok" or why it does not load}} for the GPU backends and the ops in `ops`."""
    from ssmkit import kernels

    report = {}
    for name, op in ops.items():
        report[name] = {}
        for backend in GPU_BACKENDS:
            try:
                kernels.load(backend, op.kernel, device)
                report[name][backend] = "ok"
            except kernels.BackendUnavailable as e:
                report[name][backend] = str(e)
    return report


def bench_case(op, name, shape, L, dtype_name, backends, check_ref, repeats, warmup, device):
    """Rows (one per backend) for one op, length and dtype: correctness, then times and peak memory."""
    dtype = DTYPES[dtype_name]
    inputs = make_inputs(op, shape, L, dtype, device)
    fp32_inputs = {k: v.float() for k, v in inputs.items()}
    dy = torch.randn(inputs[op.activations[0]].shape, generator=torch.Generator().manual_seed(1)).to(device)
    want = outputs_and_grads(lambda t: op.call("torch", shape, t), fp32_inputs, dy)
    want_ref = None
    if check_ref:
        want_ref = outputs_and_grads(lambda t: op.ref(shape, t), {k: v.double() for k, v in inputs.items()}, dy)
    tol = TOLERANCE[dtype_name]
    rows = []
    for backend in backends:
        fn = lambda t, backend=backend: op.call(backend, shape, t)
        row = dict(op=name, dtype=dtype_name, L=L, backend=backend, **shape, tolerance=tol)
        try:
            got = outputs_and_grads(fn, inputs, dy)
            row["err_vs_torch_fp32"], row["worst_vs_torch_fp32"] = max_rel_err(got, want)
            row["ok_vs_torch_fp32"] = row["err_vs_torch_fp32"] <= tol
            if want_ref is not None:
                row["err_vs_ref_fp64"], row["worst_vs_ref_fp64"] = max_rel_err(got, want_ref)
                row["ok_vs_ref_fp64"] = row["err_vs_ref_fp64"] <= tol
            del got
            leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
            dy_t = dy.to(dtype)

            def forward():
                with torch.no_grad():
                    fn(leaves)

            def forward_backward():
                torch.autograd.grad(fn(leaves), list(leaves.values()), dy_t)

            row["fwd_ms"], row["fwd_ms_median"] = time_ms(forward, repeats, device, warmup)
            row["fwd_bwd_ms"], row["fwd_bwd_ms_median"] = time_ms(forward_backward, repeats, device, warmup)
            row["fwd_peak_mib"] = peak_mib(forward, device)
            row["fwd_bwd_peak_mib"] = peak_mib(forward_backward, device)
        except (RuntimeError, ValueError) as e:  # a kernel that fails or runs out of memory is a failed row
            row["error"] = f"{type(e).__name__}: {e}"
            row["ok_vs_torch_fp32"] = False
        rows.append(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows[0]
    for row in rows:
        for t in ("fwd", "fwd_bwd"):
            if f"{t}_ms" in row and f"{t}_ms" in base:
                row[f"{t}_x_vs_torch"] = base[f"{t}_ms"] / row[f"{t}_ms"]
    return rows


def passed(row):
    return row["ok_vs_torch_fp32"] and row.get("ok_vs_ref_fp64", True)


COLUMNS = [("op", "op", "{}"), ("dtype", "dtype", "{}"), ("L", "L", "{}"), ("backend", "backend", "{}"),
           ("fwd ms", "fwd_ms", "{:.3f}"), ("fwd x", "fwd_x_vs_torch", "{:.2f}"),
           ("fwd+bwd ms", "fwd_bwd_ms", "{:.3f}"), ("fwd+bwd x", "fwd_bwd_x_vs_torch", "{:.2f}"),
           ("peak MiB", "fwd_bwd_peak_mib", "{:.0f}"), ("err vs torch", "err_vs_torch_fp32", "{:.1e}"),
           ("err vs ref", "err_vs_ref_fp64", "{:.1e}"), ("ok", None, None)]


def cells(row):
    out = []
    for _, key, fmt in COLUMNS:
        if key is None:
            out.append("yes" if passed(row) else "NO" + (f" ({row['error']})" if "error" in row else ""))
        else:
            out.append("-" if row.get(key) is None else fmt.format(row[key]))
    return out


def markdown(rows, meta):
    lines = [f"# GPU scan benchmark ({meta['date']})", "",
             f"Device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}, "
             f"mamba_ssm {meta['mamba_ssm']}.",
             f"Times: best of {meta['repeats']} after {meta['warmup']} warm-up runs; x = speed-up over the torch path "
             "(same op, dtype and L); peak MiB = forward+backward allocation beyond the inputs.",
             "Errors: max |got - want| / max |want| over the output and every input gradient, against the fp32 "
             f"PyTorch path and (smallest L) the fp64 oracle; tolerances {meta['tolerance']}.",
             f"Shapes: {meta['shapes']}. Command: `{meta['command']}`", "",
             "| " + " | ".join(c[0] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def print_table(rows):
    widths = [max(len(c[0]), *(len(cells(r)[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c[0].rjust(w) for c, w in zip(COLUMNS, widths)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(cells(r), widths)))


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}), Triton under its interpreter"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (Triton's interpreter)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (default 1024 4096 16384; --quick: 16 40)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--repeats", type=int, default=None, help="timed runs, best and median kept (default 20; --quick 1)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes, one repeat, no warm-up: a smoke test of the code path")
    p.add_argument("--ops", nargs="+", choices=["scan", "ssd"], default=["scan", "ssd"])
    p.add_argument("--out-dir", default=str(Path(__file__).parent / "results"),
                   help="folder of gpu_scan.json and gpu_scan.md")
    a = p.parse_args(argv)
    if torch.device(a.device).type not in ("cuda", "cpu"):
        p.error(f"--device must be cuda, cuda:N or cpu, got {a.device!r}")
    a.lengths = a.lengths or ([16, 40] if a.quick else [1024, 4096, 16384])
    a.repeats = a.repeats or (1 if a.quick else 20)
    if min(a.lengths) < 1 or a.repeats < 1:
        p.error(f"--lengths and --repeats must be positive, got {a.lengths} and {a.repeats}")
    return a


def main(argv=None):
    a = parse(argv)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu_scan.py needs a CUDA GPU (torch.cuda.is_available() is False here). To exercise the "
              "same code path on CPU with Triton's interpreter, run:\n"
              "    python benchmarks/gpu_scan.py --device cpu --quick", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is None:  # plain "cuda": the current device (set_device needs an index)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)  # CUDA events and peak-memory counters follow the current device
    if device.type == "cpu":  # Triton runs CPU tensors only interpreted, switched on before triton is imported
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("triton was imported before TRITON_INTERPRET=1 could be set; run the script in a fresh process",
                  file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"
        if not a.quick:
            print("note: --device cpu without --quick interprets Triton on full-size shapes, which takes hours",
                  file=sys.stderr)
    warmup = 0 if a.quick else 3
    ops = {n: op for n, op in _ops().items() if n in a.ops}
    report = backend_report(device, ops)
    meta = dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), device=device_name(device),
                torch=torch.__version__, triton=version("triton"), mamba_ssm=version("mamba_ssm"),
                python=platform.python_version(), repeats=a.repeats, warmup=warmup, quick=a.quick,
                tolerance={d: TOLERANCE[d] for d in a.dtypes}, backends=report,
                shapes={n: (ops[n].quick_shape if a.quick else ops[n].shape) for n in a.ops},
                command="python benchmarks/gpu_scan.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"device: {meta['device']}; torch {meta['torch']}, triton {meta['triton']}, mamba_ssm {meta['mamba_ssm']}")
    for name in a.ops:
        print(f"{name}: " + "; ".join(f"{b}: {s}" for b, s in report[name].items()))
    rows = []
    for name in a.ops:
        op, shape = ops[name], meta["shapes"][name]
        backends = ["torch"] + [b for b in GPU_BACKENDS if report[name][b] == "ok"]
        for dtype_name in a.dtypes:
            for L in sorted(a.lengths):
                rows += bench_case(op, name, shape, L, dtype_name, backends, L == min(a.lengths), a.repeats,
                                   warmup, device)
                print(f"  done {name} {dtype_name} L {L}", flush=True)
    print_table(rows)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_scan.json").write_text(json.dumps(dict(benchmark="gpu_scan", **meta, rows=rows), indent=2))
    (out / "gpu_scan.md").write_text(markdown(rows, meta))
    print(f"wrote {out / 'gpu_scan.json'} and {out / 'gpu_scan.md'}")
    failed = [r for r in rows if not passed(r)]
    for r in failed:
        print(f"FAILED: {r['op']} {r['dtype']} L {r['L']} {r['backend']}: "
              + (r.get("error") or f"worst {r.get('worst_vs_torch_fp32')} / {r.get('worst_vs_ref_fp64')}"),
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
