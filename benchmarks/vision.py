"""Vision backbones on CPU: inference images/s and peak memory of each tiny preset next to timm's DeiT-Ti at
224 px, and Vim-Ti vs DeiT-Ti peak memory as the resolution grows (the paper's linear-vs-quadratic claim).

Each measurement runs in a fresh process with a fixed glibc mmap threshold (so freed tensors leave RSS); peak
memory is the growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs) during the first forward at
the measured size (after a 64 px warm-up that loads kernels), i.e. activations and workspace, not weights.
Prints two tables and writes benchmarks/results/vision.json.
    python benchmarks/vision.py [--threads 2] [--batch 8] [--repeats 3] [--sizes 224 512 768]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TINY = ["vim_tiny_patch16_224", "vssd_tiny", "spatialmamba_tiny", "deit_tiny_patch16_224"]
SCALING = ["vim_tiny_patch16_224", "deit_tiny_patch16_224"]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(name: str, size: int, batch: int, repeats: int, threads: int) -> dict:
    """Build `name` for `size` px, run `repeats` timed forwards after a warm-up; report img/s and peak MiB."""
    import timm
    import torch

    import ssmkit.vision  # noqa: F401

    torch.set_num_threads(threads)
    kwargs = dict(dynamic_img_size=True) if name.startswith(("vim", "deit")) else {}
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))  # loads kernels; allocates little
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_kib("VmRSS")
        model(x)
        peak = _status_kib("VmHWM") - base
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return dict(model=name, size=size, batch=batch, img_per_s=batch / min(times), peak_mib=peak / 1024,
                params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def run(name, size, batch, repeats, threads) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, __file__, "--child", name, str(size), str(batch), str(repeats),
                          str(threads)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{name} at {size}px failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 768])
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        name, size, batch, repeats, threads = a.child
        print(json.dumps(child(name, int(size), int(batch), int(repeats), int(threads))))
        return
    speed = [run(n, 224, a.batch, a.repeats, a.threads) for n in TINY]
    print(f"\nCPU inference at 224 px, batch {a.batch}, {a.threads} threads (best of {a.repeats})")
    print(f"{'model':<26}{'params (M)':>11}{'img/s':>9}{'peak MiB':>10}")
    for r in speed:
        print(f"{r['model']:<26}{r['params_m']:>11.2f}{r['img_per_s']:>9.1f}{r['peak_mib']:>10.0f}")
    scaling = [run(n, s, 1, 1, a.threads) for s in a.sizes for n in SCALING]
    print("\nPeak activation memory (MiB), batch 1, vs resolution")
    print(f"{'size':>6}" + "".join(f"{n:>26}" for n in SCALING))
    for s in a.sizes:
        row = {r["model"]: r["peak_mib"] for r in scaling if r["size"] == s}
        print(f"{s:>6}" + "".join(f"{row[n]:>26.0f}" for n in SCALING))
    out = Path(__file__).parent / "results" / "vision.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(), threads=a.threads,
                                   speed=speed, scaling=scaling), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
