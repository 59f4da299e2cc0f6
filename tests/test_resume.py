"""Exact resume: a real `ssmkit fit` is killed with SIGKILL right after a checkpoint, resumed with `--ckpt_path last`,
and every metric the resumed run logs (per-step training loss, validation metrics) equals the uninterrupted run's
with the same seed, exactly (CPU), for the selective-copy config (an endless stream), a timeseries config (S-Mamba
with dropout, shuffled windows, epochs) and a vision config (Vim on MNIST idx files with random shifts).

Before the data modules were resumable, the selective-copy stream restarted from its seed and replayed the first
batches, so the resumed losses differed from step k + 1 on.
"""
import importlib.util
import pathlib
import signal
import sys

import pytest

# the helpers are also loaded by class path (`_fit_runs.PauseOnce`) in this process and in `ssmkit fit` subprocesses
_spec = importlib.util.spec_from_file_location("_fit_runs", pathlib.Path(__file__).with_name("_fit_runs.py"))
runs = sys.modules.setdefault("_fit_runs", importlib.util.module_from_spec(_spec))
if not hasattr(runs, "fit_args"):
    _spec.loader.exec_module(runs)

# kind -> (checkpoint every n steps, kill at the start of this step); each run logs well past the kill
CASES = {"selective_copy": (3, 6),   # a checkpoint after the step-4 validation; steps 7..10 and val at 8 compared
         "timeseries": (3, 6),       # 4 batches per epoch: killed in epoch 1 after its 2nd batch
         "vision": (4, 8)}           # 6 batches per epoch: killed in epoch 1 after its 2nd batch


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_sigkill_then_resume_from_last_equals_the_uninterrupted_run(tmp_path, kind):
    every, kill_step = CASES[kind]
    data = runs.prepare_data(kind, tmp_path / "data")
    ckpts, marker = tmp_path / "ckpts", tmp_path / "paused"

    def args(out, ckpts, marker):
        return runs.fit_args(kind, data, out, batch_size=8) + [
            '--trainer.callbacks+={"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": '
            f'{{"dirpath": "{ckpts}", "every_n_train_steps": {every}, "save_last": true, "save_top_k": -1}}}}',
            '--trainer.callbacks+={"class_path": "_fit_runs.PauseOnce", "init_args": '
            f'{{"step": {kill_step}, "marker": "{marker}"}}}}']

    log = tmp_path / "killed.log"
    proc = runs.start_fit(args(tmp_path / "killed", ckpts, marker), log)
    try:
        # the uninterrupted run, with the same callbacks (its pause marker exists already), while the other starts
        (tmp_path / "no-pause").touch()
        runs.fit_in_process(args(tmp_path / "full", tmp_path / "ckpts-full", tmp_path / "no-pause"))
        runs.wait_for(marker, proc, log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (ckpts / "last.ckpt").exists()
    assert (ckpts / f"epoch={_epoch(kind, kill_step)}-step={kill_step}.ckpt").exists()

    # the marker now exists, so the resumed run does not pause
    runs.fit_in_process(args(tmp_path / "resumed", ckpts, marker) + ["--ckpt_path=last"])

    full, resumed = runs.metrics(tmp_path / "full"), runs.metrics(tmp_path / "resumed")
    assert resumed and min(int(r["step"]) for r in resumed) >= kill_step - 1
    assert max(int(r["step"]) for r in resumed) == max(int(r["step"]) for r in full)
    assert any("val/loss" in r for r in resumed), "the resumed run must validate at least once"
    by_step = {}
    for row in full:
        by_step.setdefault((row["step"], tuple(sorted(row))), row)
    for row in resumed:
        twin = by_step.get((row["step"], tuple(sorted(row))))
        assert twin == row, f"{kind}: resumed {row} != uninterrupted {twin}"
    assert len(resumed) >= 4


def _epoch(kind: str, step: int) -> int:
    """Epoch of the checkpoint saved at the end of global step `step` (batches per epoch of each case)."""
    per_epoch = {"selective_copy": 10 ** 9, "timeseries": 4, "vision": 6}[kind]
    return (step - 1) // per_epoch
