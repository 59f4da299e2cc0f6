"""Correct multi-process training: a real `ssmkit fit` with 2 processes (DDP, gloo, CPU) at batch B logs the same
per-step training loss as one process at batch 2B (within float noise), and the two ranks train on disjoint
samples whose union is, step by step, exactly the one process's batch; for the selective-copy config (an endless
stream sharded by rank), a timeseries config (shuffled windows) and a vision config (MNIST).

Before the data modules were rank-aware, both ranks drew identical batches and the loss equalled one process at
batch B. Random shifts are turned off for the vision run: augmentation and dropout draw on each process's own
random state, which no batch split can reproduce.
"""
import importlib.util
import math
import pathlib
import sys

import pytest

_spec = importlib.util.spec_from_file_location("_fit_runs", pathlib.Path(__file__).with_name("_fit_runs.py"))
runs = sys.modules.setdefault("_fit_runs", importlib.util.module_from_spec(_spec))
if not hasattr(runs, "fit_args"):
    _spec.loader.exec_module(runs)

EXTRA = {"selective_copy": [], "timeseries": ["--model.init_args.model.init_args.dropout=0.0"],
         "vision": ["--data.max_shift=0"]}
B = 4


def _train_losses(out: pathlib.Path) -> dict:
    return {int(r["step"]): float(r["train/loss"]) for r in runs.metrics(out) if "train/loss" in r}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(EXTRA))
def test_two_processes_at_batch_b_equal_one_process_at_batch_2b(tmp_path, kind):
    data = runs.prepare_data(kind, tmp_path / "data")

    def args(out, batch_size, devices):
        record = out / "batches"
        record.mkdir(parents=True)
        return runs.fit_args(kind, data, out, batch_size) + EXTRA[kind] + [
            f"--trainer.devices={devices}", "--trainer.max_steps=5", "--trainer.limit_val_batches=1",
            '--trainer.callbacks+={"class_path": "_fit_runs.BatchRecorder", "init_args": '
            f'{{"out_dir": "{record}"}}}}'] + (["--trainer.strategy=ddp"] if devices > 1 else [])

    log = tmp_path / "ddp.log"
    proc = runs.start_fit(args(tmp_path / "ddp", B, 2), log)
    runs.fit_in_process(args(tmp_path / "one", 2 * B, 1))  # runs while the DDP processes start
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

    ranks = [runs.recorded(tmp_path / "ddp" / "batches", r) for r in (0, 1)]
    one = runs.recorded(tmp_path / "one" / "batches", 0)
    assert sorted(one) == sorted(ranks[0]) == sorted(ranks[1]) == list(range(5))
    seen = [set(), set()]
    for step, samples in one.items():
        r0, r1 = ranks[0][step], ranks[1][step]
        assert len(r0) == len(r1) == B and len(samples) == 2 * B
        assert not set(r0) & set(r1), f"{kind}: both ranks trained on the same samples at step {step}"
        assert sorted(r0 + r1) == sorted(samples), f"{kind}: step {step} differs from one process at batch {2 * B}"
        seen[0] |= set(r0)
        seen[1] |= set(r1)
    assert not seen[0] & seen[1]

    ddp, single = _train_losses(tmp_path / "ddp"), _train_losses(tmp_path / "one")
    assert sorted(ddp) == sorted(single) == list(range(5))
    for step in single:
        assert math.isclose(ddp[step], single[step], rel_tol=2e-5, abs_tol=1e-6), (kind, step, ddp, single)
