"""Forecasting from a checkpoint: the model is rebuilt from its spec, the forecast is the model applied to the
last L scaled rows and mapped back to CSV units, dates continue the series, and the plot is written."""
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from ssmkit.timeseries.data import CSVDataModule
from ssmkit.timeseries.forecast import forecast_to_files
from ssmkit.timeseries.synthetic import synthetic_ett_frame
from ssmkit.timeseries.task import ForecastTask


@pytest.mark.parametrize("features", ["M", "S"])
def test_ts_forecast_from_checkpoint(tmp_path, features):
    torch.manual_seed(0)
    frame = synthetic_ett_frame(400, seed=5)
    csv = tmp_path / "series.csv"
    frame.to_csv(csv, index=False)
    dm = CSVDataModule(str(csv), seq_len=24, label_len=12, pred_len=6, features=features)
    task = ForecastTask({"class_path": "ssmkit.timeseries.models.NLinear"}, lr=1e-2, test_after_fit=False)
    trainer = L.Trainer(max_epochs=1, default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(task, dm)
    ckpt = trainer.checkpoint_callback.best_model_path
    out, png = forecast_to_files(ckpt, csv, tmp_path / "fc.csv", plot=str(tmp_path / "fc.png"), end=390)
    got = pd.read_csv(out)
    cols = dm.splits.columns
    assert list(got.columns) == ["date"] + (cols if features == "M" else ["OT"])
    assert got["date"].tolist() == frame["date"].iloc[390:396].tolist()  # the 6 rows after row 390, known here
    # direct: scale rows [366, 390) with train-row statistics, apply the trained map, unscale
    raw = frame[cols].to_numpy(np.float64)
    mean, std = raw[:280].mean(0), raw[:280].std(0)
    x = (raw[366:390] - mean) / std
    W = task.model.head.linear.weight.detach().double().numpy()
    b = task.model.head.linear.bias.detach().double().numpy()
    want = ((x - x[-1]).T @ W.T + b + x[-1][:, None]).T * std + mean
    np.testing.assert_allclose(got[got.columns[1:]].to_numpy(), want, rtol=1e-5, atol=1e-4)
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="end must be in"):
        forecast_to_files(ckpt, csv, tmp_path / "bad.csv", end=10)
