"""SaShiMi audio benchmarks on this machine (CPU; run with OMP_NUM_THREADS=1 on a shared box).

speed: generation with the recurrent step (samples/s at batch 1 and 16, wall and CPU time, best of --repeats runs
       interleaved) against re-running the convolutional forward over the growing prefix for every new sample, in the
       same run (ratio); the in-place `stepper` (what `generate` uses) against the functional `SaShiMi.step` path, same
       run (ratio); real-time factor; training throughput (forward + backward + AdamW step).
fsdd:  small SaShiMi vs a WaveNet with the same parameter count, each trained for the same wall time on FSDD
       (8 kHz, official split: takes 0-4 = test, seeded validation draw), training interleaved in equal time slices
       so both see the same machine load; test NLL in bits per sample over every test sample; a few SaShiMi samples
       (WAV + log-mel PNG) written to --samples.

Usage:
  python benchmarks/audio.py speed [--preset small] [--steps 1024] [--repeats 3] [--step-only] [--json FILE]
  python benchmarks/audio.py fsdd --root /path/to/fsdd/recordings --minutes 20 [--samples DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

from ssmkit.audio import AutoregressiveAudioTask, FSDDDataModule, SaShiMi, WaveNet, generate
from ssmkit.audio.generate import write_samples
from ssmkit.audio.quantize import SILENCE


def _machine() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_average_1min_at_start": os.getloadavg()[0]}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _rates(fn, samples: int) -> tuple:
    """(samples per wall second, samples per CPU second of this process) of one call of fn: on a shared machine
    the CPU-time rate is what the code does with the core it gets, the wall rate what the user waits."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return samples / (time.perf_counter() - w0), samples / (time.process_time() - c0)


class _StepOnly:
    """The model without its in-place `stepper`: `generate` then steps it through `initial_state` / `step` (the
    functional path), for the old-vs-new ratio."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name == "stepper":
            raise AttributeError(name)
        return getattr(self._model, name)


def _step_rate(model, batch: int, steps: int) -> tuple:
    """Samples per second generated with the recurrent step (sampling included), after a short warm-up."""
    generate(model, batch, 16, batch_size=batch, seed=0, progress=False)
    return _rates(lambda: generate(model, batch, steps, batch_size=batch, seed=0, progress=False), batch * steps)


@torch.inference_mode()
def _prefix_rate(model, steps: int) -> tuple:
    """Samples per second at batch 1 when each new sample re-runs the convolutional forward over the whole prefix."""
    gen = torch.Generator().manual_seed(0)

    def run():
        codes = torch.full((1, 1), SILENCE, dtype=torch.long)
        for _ in range(steps):
            probs = model(codes)[:, -1].float().softmax(-1)
            codes = torch.cat([codes, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return _rates(run, steps)


def _train_rate(task, batch: int, window: int, repeats: int = 3) -> float:
    """Training samples (targets) per second: forward + cross-entropy + backward + AdamW step."""
    task.train()
    opt = task.configure_optimizers()
    x = torch.randint(0, 256, (batch, window))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        loss, _ = task.nll((x, x))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first run is a warm-up
            times.append(time.perf_counter() - t0)
    return batch * window / min(times)


def speed(args) -> dict:
    torch.manual_seed(0)
    task = AutoregressiveAudioTask({"class_path": "ssmkit.audio.SaShiMi", "preset": args.preset}, scheduler=None)
    model = task.model.eval()
    rows = {"preset": args.preset, "params": _params(model), "steps": args.steps, "repeats": args.repeats}
    parts = [("step_batch1", lambda: _step_rate(model, 1, args.steps)),
             ("step_batch16", lambda: _step_rate(model, 16, args.steps // 4)),
             ("functional_step_batch1", lambda: _step_rate(_StepOnly(model), 1, args.steps))]
    for _ in range(args.repeats):  # interleaved, best of the repeats: a shared core's load hits every part alike
        for name, measure in parts:
            wall, cpu = measure()
            rows[f"{name}_samples_per_s"] = max(wall, rows.get(f"{name}_samples_per_s", 0.0))
            rows[f"{name}_samples_per_cpu_s"] = max(cpu, rows.get(f"{name}_samples_per_cpu_s", 0.0))
    rows["stepper_over_functional_step"] = (rows["step_batch1_samples_per_s"]
                                            / rows["functional_step_batch1_samples_per_s"])
    rows["stepper_over_functional_step_cpu"] = (rows["step_batch1_samples_per_cpu_s"]
                                                / rows["functional_step_batch1_samples_per_cpu_s"])
    if not args.step_only:
        rows["prefix_recompute_batch1_samples_per_s"], rows["prefix_recompute_batch1_samples_per_cpu_s"] = \
            _prefix_rate(model, args.steps)
    for rate in (8000, 16000):  # seconds of compute per second of audio, batch 1 (< 1: faster than real time)
        rows[f"real_time_factor_{rate // 1000}khz_batch1"] = rate / rows["step_batch1_samples_per_s"]
    if not args.step_only:
        rows["step_over_recompute"] = (rows["step_batch1_samples_per_s"]
                                       / rows["prefix_recompute_batch1_samples_per_s"])
        rows["step_over_recompute_cpu"] = (rows["step_batch1_samples_per_cpu_s"]
                                           / rows["prefix_recompute_batch1_samples_per_cpu_s"])
        rows["train_samples_per_s"] = _train_rate(task, args.train_batch, args.train_window)
        rows["train_shape"] = [args.train_batch, args.train_window]
    rows["load_average_1min_at_end"] = os.getloadavg()[0]
    return rows


def _test_bits(model, loader) -> float:
    """NLL in bits per sample over every real target of the loader."""
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for x, y in loader:
            logits = model(x).float()
            total += float(F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1), ignore_index=-100, reduction="sum"))
            count += int((y != -100).sum())
    return total / count / math.log(2)


def fsdd(args) -> dict:
    torch.manual_seed(args.seed)
    data = FSDDDataModule(args.root, split="take", seed=args.seed, window=args.window, batch_size=args.batch_size,
                          eval_batch_size=16)
    data.setup("fit")
    sashimi = {"class_path": "ssmkit.audio.SaShiMi", "preset": "small"}
    c = WaveNet.sized(_params(SaShiMi.from_preset("small")), n_layers=args.wavenet_layers).embedding.embedding_dim
    wavenet = {"class_path": "ssmkit.audio.WaveNet",
               "init_args": {"channels": c, "skip_channels": c, "n_layers": args.wavenet_layers}}
    runs = {}
    chosen = {"sashimi": ("SaShiMi small", sashimi), "wavenet": ("WaveNet", wavenet)}
    for name, spec in (chosen[m] for m in args.models):
        task = AutoregressiveAudioTask(spec, lr=args.lr, scheduler=None)
        runs[name] = {"task": task, "opt": task.configure_optimizers(), "seconds": 0.0, "cpu_seconds": 0.0,
                      "steps": 0, "losses": [], "loader": iter(()), "epochs": 0}
    budget, slice_s = args.minutes * 60, args.slice_seconds
    while any(r["seconds"] < budget for r in runs.values()):
        for name, r in runs.items():
            if r["seconds"] >= budget:
                continue
            r["task"].train()
            w0, c0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - w0 < slice_s and r["seconds"] + time.perf_counter() - w0 < budget:
                batch = next(r["loader"], None)
                if batch is None:
                    r["loader"], r["epochs"] = iter(data.train_dataloader()), r["epochs"] + 1
                    batch = next(r["loader"])
                loss, _ = r["task"].nll(batch)
                r["opt"].zero_grad()
                loss.backward()
                r["opt"].step()
                r["steps"] += 1
                r["losses"].append(float(loss.detach()))
            r["seconds"] += time.perf_counter() - w0
            r["cpu_seconds"] += time.process_time() - c0
            print(f"  {name}: {r['seconds']:.0f}/{budget:.0f} s, {r['steps']} steps, "
                  f"train loss {sum(r['losses'][-20:]) / len(r['losses'][-20:]) / math.log(2):.3f} bits", flush=True)
    result = {"root": str(args.root), "split": "take (0-4 test)", "seed": args.seed, "window": args.window,
              "batch_size": args.batch_size, "lr": args.lr, "minutes_each": args.minutes, "models": {}}
    for name, r in runs.items():
        model = r["task"].model
        result["models"][name] = {
            "params": _params(model), "train_seconds": r["seconds"], "train_cpu_seconds": r["cpu_seconds"],
            "steps": r["steps"], "epochs_started": r["epochs"],
            "test_bits_per_sample": _test_bits(model, data.test_dataloader())}
    if args.samples and "SaShiMi small" in runs:
        model = runs["SaShiMi small"]["task"].model
        codes, bits = generate(model, args.n_samples, args.sample_seconds * 8000, seed=args.seed, progress=False)
        result["samples"] = [str(p) for p in write_samples(codes, bits, args.samples, 8000)]
    return result


def _print(result: dict) -> None:
    if "models" in result:
        print(f"{'model':<16}{'params':>10}{'train s':>10}{'steps':>8}{'test NLL (bits/sample)':>26}")
        for name, m in result["models"].items():
            print(f"{name:<16}{m['params']:>10,}{m['train_seconds']:>10.0f}{m['steps']:>8}"
                  f"{m['test_bits_per_sample']:>26.4f}")
        for p in result.get("samples", []):
            print(p)
    else:
        for k, v in result.items():
            print(f"{k:<44}{v:.4g}" if isinstance(v, float) else f"{k:<44}{v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--preset", default="small")
    s.add_argument("--steps", type=int, default=1024)
    s.add_argument("--repeats", type=int, default=3, help="interleaved runs of the step-mode parts (best kept)")
    s.add_argument("--train-batch", type=int, default=8)
    s.add_argument("--train-window", type=int, default=4096)
    s.add_argument("--step-only", action="store_true", help="only the step-mode rates (no recompute, no training)")
    s.add_argument("--json")
    f = sub.add_parser("fsdd")
    f.add_argument("--root", required=True)
    f.add_argument("--minutes", type=float, default=20)
    f.add_argument("--slice-seconds", type=float, default=60)
    f.add_argument("--models", nargs="+", choices=["sashimi", "wavenet"], default=["sashimi", "wavenet"],
                   help="train these, interleaved in --slice-seconds slices (one each: run two processes side by "
                        "side, e.g. one per core)")
    f.add_argument("--window", type=int, default=2048)
    f.add_argument("--batch-size", type=int, default=4)
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--wavenet-layers", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--samples", help="folder for generated SaShiMi samples (WAV + PNG)")
    f.add_argument("--n-samples", type=int, default=4)
    f.add_argument("--sample-seconds", type=int, default=1)
    f.add_argument("--json")
    args = parser.parse_args()
    result = {"machine": _machine(), **(speed(args) if args.what == "speed" else fsdd(args))}
    _print({k: v for k, v in result.items() if k != "machine"})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
        print(f"wrote {os.path.abspath(args.json)}")


if __name__ == "__main__":
    main()
