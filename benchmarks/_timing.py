"""Timing shared by the CPU benchmarks (scripts in this folder import it as a sibling module)."""
import time

import torch


def best_time(fn, repeats, device):
    """Best wall-clock seconds of `repeats` runs after one warm-up run (CUDA synchronised around each)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)
