"""`ssmkit forecast`: a checkpoint trained 2 steps on a synthetic CSV forecasts the H steps after the CSV's end;
the written CSV equals the trained model applied to the last L rows (scaled with train-row statistics)."""
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from ssmkit.cli import main
from ssmkit.timeseries.data import CSVDataModule
from ssmkit.timeseries.synthetic import synthetic_ett_frame
from ssmkit.timeseries.task import ForecastTask


def test_ts_cli_forecast_writes_csv_and_plot(tmp_path, capsys):
    torch.manual_seed(0)
    frame = synthetic_ett_frame(400, seed=3)
    csv = tmp_path / "series.csv"
    frame.to_csv(csv, index=False)
    dm = CSVDataModule(str(csv), seq_len=24, label_len=12, pred_len=6, features="M", batch_size=16)
    task = ForecastTask({"class_path": "ssmkit.timeseries.models.NLinear"}, lr=1e-2)
    trainer = L.Trainer(max_steps=2, default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0)
    trainer.fit(task, dm)
    ckpt = tmp_path / "tiny.ckpt"
    trainer.save_checkpoint(ckpt)

    out, png = tmp_path / "out" / "fc.csv", tmp_path / "fc.png"
    assert main(["forecast", "--checkpoint", str(ckpt), "--csv", str(csv), "--out", str(out), "--plot", str(png),
                 "--variables", "OT", "HUFL"]) == 0
    assert str(out.resolve()) in capsys.readouterr().out
    got = pd.read_csv(out)
    cols = list(frame.columns[1:])
    assert list(got.columns) == ["date"] + cols
    future = pd.date_range(pd.Timestamp(frame["date"].iloc[-1]) + pd.Timedelta(hours=1), periods=6, freq="h")
    assert got["date"].tolist() == future.strftime("%Y-%m-%d %H:%M:%S").tolist()
    raw = frame[cols].to_numpy(np.float64)
    mean, std = raw[:280].mean(0), raw[:280].std(0)          # 70 % of 400 rows are train rows
    x = torch.as_tensor((raw[-24:] - mean) / std, dtype=torch.float32)[None]
    with torch.no_grad():
        want = task.model.eval()(x)[0].double().numpy() * std + mean
    np.testing.assert_allclose(got[cols].to_numpy(), want, rtol=1e-5, atol=1e-4)
    assert png.stat().st_size > 1000

    with pytest.raises(SystemExit) as exc:
        main(["forecast", "--csv", str(csv), "--out", str(out)])  # --checkpoint missing
    assert exc.value.code == 2 and "--checkpoint" in capsys.readouterr().err
