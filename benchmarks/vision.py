"""CPU inference speed of the vision backbones next to the models they replace, and how it scales with resolution.

One run measures img/s and ms/img (batch 1 by default, `torch.inference_mode`, best of --repeats after a warm-up)
for vim_tiny, vssd_micro, spatialmamba_tiny, deit_tiny and resnet18 at each --threads count and --sizes
resolution, plus the activation peak memory. Vim and DeiT take any size through their position-embedding
resampling (dynamic_img_size); the hierarchical models and ResNet take any size as they are. It reports the
Vim-Ti / DeiT-Ti speed ratio per size and thread count and the crossover resolution (the smallest measured size
from which Vim-Ti is faster), the Vim paper's claim tested on CPU.

--clock cpu times each forward by the process's CPU time instead of the wall clock: on a core shared with other
work it leaves out the time the process waits for the core (use it with 1 thread, where the two agree on an idle
core; with more threads CPU time adds up the threads).
Each model and size runs in two fresh processes: one times the forwards with the default allocator, the other
measures peak memory as the growth of VmHWM during the first forward at the measured size (after a 64 px warm-up
that loads kernels) with a fixed glibc mmap threshold, so that freed tensors leave RSS. The threshold must stay out
of the timing: it turns every tensor above 128 KiB into an mmap / munmap pair with fresh page faults (it made
Vim-Ti 3.3x and DeiT-Ti 1.8x slower at 224 px).
    python benchmarks/vision.py [--threads 1 2] [--sizes 224 512 768 1024] [--batch 1] [--repeats 3]
        [--models ...] [--clock wall|cpu] [--out FILE.json]   (default output: vision_speed.json in the temp folder)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ["vim_tiny_patch16_224", "vssd_micro", "spatialmamba_tiny", "deit_tiny_patch16_224", "resnet18"]
VIM, DEIT = "vim_tiny_patch16_224", "deit_tiny_patch16_224"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(name: str, size: int, batch: int, repeats: int, threads: int, clock: str = "wall",
          what: str = "time") -> dict:
    """Build `name`; after a 64 px warm-up either time `repeats` forwards of a (batch, 3, size, size) input
    (`what="time"`) or measure the peak memory of one (`what="memory"`)."""
    import timm
    import torch

    import ssmkit.vision  # noqa: F401

    torch.set_num_threads(threads)
    kwargs = dict(dynamic_img_size=True) if name.startswith(("vim", "deit")) else {}
    model = timm.create_model(name, **kwargs).eval()
    x = torch.randn(batch, 3, size, size)
    out = dict(model=name, size=size, batch=batch, threads=threads,
               params_m=sum(p.numel() for p in model.parameters()) / 1e6)
    with torch.inference_mode():
        model(torch.randn(1, 3, 64, 64))
        if what == "memory":
            Path("/proc/self/clear_refs").write_text("5")
            base = _status_kib("VmRSS")
            model(x)
            return dict(out, peak_mib=(_status_kib("VmHWM") - base) / 1024)
        model(x)
        now = time.process_time if clock == "cpu" else time.perf_counter
        times = []
        for _ in range(repeats):
            t0 = now()
            model(x)
            times.append(now() - t0)
    best = min(times)
    return dict(out, clock=clock, img_per_s=batch / best, ms_per_img=1000 * best / batch)


def _run_child(args: list, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} at {args[1]} px failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(name: str, size: int, batch: int, repeats: int, threads: int, clock: str = "wall") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    timed = _run_child([name, size, batch, repeats, threads, clock, "time"], env)
    memory = _run_child([name, size, batch, 1, threads, clock, "memory"], dict(env, MALLOC_MMAP_THRESHOLD_="131072"))
    return dict(timed, peak_mib=memory["peak_mib"])


def crossover(rows, threads: int):
    """Smallest measured size from which Vim-Ti is faster than DeiT-Ti at every larger measured size, or None."""
    ratio = {r["size"]: r["vim_over_deit"] for r in rows if r["threads"] == threads}
    sizes = sorted(ratio)
    for i, s in enumerate(sizes):
        if all(ratio[t] > 1 for t in sizes[i:]):
            return s
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 768, 1024])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", nargs="+", default=MODELS, help="timm names (the ratio needs vim_tiny and deit_tiny)")
    p.add_argument("--scaling-models", nargs="+", default=[VIM, DEIT],
                   help="models measured at every size; the others only at the first size")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="time forwards by the wall clock or by the process's CPU time (a shared core)")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "vision_speed.json"))
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        name, size, batch, repeats, threads, clock, what = a.child
        print(json.dumps(child(name, int(size), int(batch), int(repeats), int(threads), clock, what)))
        return
    results = []
    for threads in a.threads:
        for size in a.sizes:
            for name in a.models:
                if size != a.sizes[0] and name not in a.scaling_models:
                    continue
                results.append(measure(name, size, a.batch, a.repeats, threads, a.clock))
                r = results[-1]
                print(f"{threads} thr {size:>5} px  {name:<24} {r['ms_per_img']:>9.1f} ms/img {r['img_per_s']:>8.2f} "
                      f"img/s  peak {r['peak_mib']:>6.0f} MiB", flush=True)
    ratios = []
    for threads in a.threads:
        for size in a.sizes:
            got = {r["model"]: r for r in results if r["threads"] == threads and r["size"] == size}
            if VIM in got and DEIT in got:
                ratios.append(dict(threads=threads, size=size,
                                   vim_over_deit=got[VIM]["img_per_s"] / got[DEIT]["img_per_s"]))
    print(f"\nbatch {a.batch}, best of {a.repeats} ({a.clock} clock); Vim-Ti / DeiT-Ti img/s (> 1: Vim faster)")
    print(f"{'threads':>8}" + "".join(f"{s:>8}" for s in a.sizes) + f"{'crossover':>11}")
    for threads in a.threads:
        row = {r["size"]: r["vim_over_deit"] for r in ratios if r["threads"] == threads}
        cross = crossover(ratios, threads)
        print(f"{threads:>8}" + "".join(f"{row[s]:>8.2f}" if s in row else f"{'-':>8}" for s in a.sizes)
              + f"{(str(cross) + ' px') if cross else 'none':>11}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(), batch=a.batch,
                                   repeats=a.repeats, clock=a.clock, results=results, ratios=ratios,
                                   crossover={t: crossover(ratios, t) for t in a.threads}), indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
