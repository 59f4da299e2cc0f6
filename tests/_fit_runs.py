"""Shared by test_resume.py and test_ddp.py: tiny data files in the real formats, `ssmkit fit` argument lists for
the selective-copy, a timeseries and a vision config, callbacks the runs load by class path, metrics.csv reading."""
import csv
import gzip
import hashlib
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

import lightning as L
import numpy as np
import torch

REPO = pathlib.Path(__file__).resolve().parents[1]
TESTS = pathlib.Path(__file__).resolve().parent
SSMKIT = pathlib.Path(sys.executable).with_name("ssmkit")


def write_ett(root: pathlib.Path, name: str = "ETTh1", n_rows: int = 14400) -> None:
    """An ETTh-format CSV (date + 7 variables, OT last) long enough for the fixed month borders."""
    rng = np.random.default_rng(0)
    t = np.arange(n_rows)
    dates = (np.datetime64("2016-07-01T00:00") + t.astype("timedelta64[h]")).astype(str)
    cols = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    values = np.stack([np.sin(2 * np.pi * t / (8 + 4 * i)) + 0.1 * rng.standard_normal(n_rows)
                       for i in range(len(cols))], 1)
    lines = ["date," + ",".join(cols)]
    lines += [d.replace("T", " ") + ":00," + ",".join(f"{v:.3f}" for v in row) for d, row in zip(dates, values)]
    (root / f"{name}.csv").write_text("\n".join(lines) + "\n")


def write_mnist(root: pathlib.Path, n: int = 64) -> None:
    """t10k-images/labels idx files (gzipped, as distributed) with n random 28x28 images and labels 0..9."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">III", n, 28, 28) + images.tobytes())
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", n) + labels.tobytes())


def callback(class_path: str, **init_args) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": class_path, "init_args": init_args})


def fit_args(kind: str, data: pathlib.Path, out: pathlib.Path, batch_size: int) -> list:
    """`ssmkit fit` arguments: the real config of `kind`, shrunk to a few CPU steps on the tiny data in `data`;
    CSV metrics every step under `out`."""
    common = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
              "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={out}"]
    if kind == "selective_copy":
        return ["--config", str(REPO / "configs/core/selective_copy.yaml"), *common,
                f"--trainer.logger.init_args.save_dir={out}", "--trainer.logger.init_args.name=run",
                "--trainer.max_steps=10", "--trainer.val_check_interval=4", "--trainer.limit_val_batches=2",
                f"--data.batch_size={batch_size}", "--data.seq_len=16", "--model.d_model=16", "--model.n_layer=1",
                "--model.d_state=4"]
    if kind == "timeseries":
        model = "--model.init_args.model.init_args."
        return ["--config", str(REPO / "configs/timeseries/s_mamba_etth1_96.yaml"), *common,
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
                "--trainer.logger.name=run", "--trainer.max_epochs=3", "--trainer.limit_train_batches=4",
                "--trainer.limit_val_batches=2", f"--data.path={data / 'ETTh1.csv'}", "--data.seq_len=24",
                "--data.label_len=12", "--data.pred_len=12", f"--data.batch_size={batch_size}",
                "--trainer.limit_test_batches=2", f"{model}d_model=16", f"{model}d_ff=16", f"{model}e_layers=1"]
    if kind == "vision":
        return ["--config", str(REPO / "configs/vision/vim_tiny_mnist.yaml"), *common,
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.save_dir={out}",
                "--trainer.logger.name=run", "--trainer.max_epochs=2", f"--data.root={data}",
                "--data.split=[48, 8, 8]", f"--data.batch_size={batch_size}",
                '--model.model_kwargs={"img_size": 28, "patch_size": 7, "embed_dim": 16, "depth": 1, "d_state": 4}',
                "--model.warmup_steps=2"]
    raise ValueError(kind)


def prepare_data(kind: str, root: pathlib.Path) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    if kind == "timeseries":
        write_ett(root)
    elif kind == "vision":
        write_mnist(root)
    return root


def subprocess_env() -> dict:
    """The test process's environment with one torch thread (as `fit_in_process`: exact CPU results need the same
    reduction order) and the tests folder importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def start_fit(args: list, log: pathlib.Path) -> subprocess.Popen:
    """`ssmkit fit ARGS` in a subprocess (stdout and stderr to `log`)."""
    with open(log, "wb") as f:
        return subprocess.Popen([str(SSMKIT), "fit", *args], stdout=f, stderr=subprocess.STDOUT, env=subprocess_env(),
                                cwd=str(log.parent))


def wait_for(path: pathlib.Path, proc: subprocess.Popen, log: pathlib.Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"ssmkit fit exited ({proc.returncode}) before {path.name}:\n"
                                 f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def fit_in_process(args: list) -> None:
    """`ssmkit fit ARGS` in this process (the same entry point as the command), on one torch thread."""
    from ssmkit.cli import main
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["fit", *args]) == 0
    finally:
        torch.set_num_threads(threads)


def metrics(out: pathlib.Path) -> list:
    """Rows of the run's metrics.csv as {column: value} with the empty cells left out."""
    (path,) = sorted(out.glob("run/version_*/metrics.csv"))
    with open(path) as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


class PauseOnce(L.Callback):
    """Blocks the run at the start of global step `step` (the checkpoint of the step before is on disk by then),
    once: writes `marker` and sleeps until the test kills the process. Does nothing when `marker` exists."""

    def __init__(self, step: int, marker: str):
        self.step, self.marker = step, pathlib.Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            time.sleep(3600)


def fingerprint(sample: torch.Tensor) -> str:
    return hashlib.sha1(sample.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


class BatchRecorder(L.Callback):
    """Writes, per process, one JSON line per training step: the global step and the fingerprints of the samples
    (the rows of the batch's first tensor) this process trained on."""

    def __init__(self, out_dir: str):
        self.out_dir = pathlib.Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        rows = [fingerprint(x) for x in batch[0]]
        with open(self.out_dir / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "samples": rows}) + "\n")


def recorded(out_dir: pathlib.Path, rank: int) -> dict:
    lines = (out_dir / f"rank{rank}.jsonl").read_text().splitlines()
    return {r["step"]: r["samples"] for r in map(json.loads, lines)}
