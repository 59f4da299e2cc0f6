"""`ssmkit forecast` names the bad file and the reason: a truncated, empty, garbage or foreign checkpoint, and a
CSV whose last two timestamps are equal (issue 17); each is one error line and exit code 1, no traceback."""
import re

import lightning as L
import pytest
import torch

from ssmkit.cli import main
from ssmkit.timeseries.data import CSVDataModule
from ssmkit.timeseries.synthetic import synthetic_ett_frame
from ssmkit.timeseries.task import ForecastTask


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    csv = root / "series.csv"
    synthetic_ett_frame(300, seed=2).to_csv(csv, index=False)
    task = ForecastTask({"class_path": "ssmkit.timeseries.models.NLinear"}, test_after_fit=False)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(root))
    trainer.fit(task, CSVDataModule(str(csv), seq_len=24, label_len=12, pred_len=6))
    ckpt = root / "ok.ckpt"
    trainer.save_checkpoint(ckpt)
    return root, csv, ckpt


def _forecast(ckpt, csv, tmp_path):
    return main(["forecast", "--checkpoint", str(ckpt), "--csv", str(csv), "--out", str(tmp_path / "f.csv")])


@pytest.mark.parametrize("kind,pattern", [
    ("truncated", r"truncated\.ckpt: not a readable ForecastTask checkpoint \(truncated, corrupt"),
    ("garbage", r"garbage\.ckpt: not a readable ForecastTask checkpoint"),
    ("empty", r"empty\.ckpt: empty checkpoint file"),
    ("missing", r"missing\.ckpt: checkpoint file not found"),
    ("foreign", r"foreign\.ckpt: not a readable ForecastTask checkpoint"),
])
def test_ts_forecast_names_a_bad_checkpoint(trained, tmp_path, capsys, kind, pattern):
    _, csv, ckpt = trained
    bad = tmp_path / f"{kind}.ckpt"
    data = ckpt.read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 40)
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)   # a torch file, not a Lightning checkpoint
    assert _forecast(bad, csv, tmp_path) == 1
    err = capsys.readouterr().err
    assert err.startswith("ssmkit forecast: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(pattern, err), err


def test_ts_forecast_names_equal_last_timestamps(trained, tmp_path, capsys):
    _, csv, ckpt = trained
    lines = csv.read_text().splitlines()
    last_date = lines[-2].split(",", 1)[0]
    lines[-1] = last_date + "," + lines[-1].split(",", 1)[1]
    bad = tmp_path / "equal_end.csv"
    bad.write_text("\n".join(lines) + "\n")
    assert _forecast(ckpt, bad, tmp_path) == 1
    err = capsys.readouterr().err
    assert f"equal_end.csv, line {len(lines)}: duplicate timestamp: {last_date}" in err
    assert _forecast(ckpt, csv, tmp_path) == 0                      # the good pair still works
