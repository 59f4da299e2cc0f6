"""`ssmkit forecast fit`: a user's CSV (half-hourly, 4 columns, an unusual name) trains under the 70/10/20 split with
channels and time features inferred, tests its best checkpoint, and writes metrics.json, the checkpoint, and the
forecast CSV + plot of the H steps after the file's end; the forecast equals the checkpoint applied directly."""
import json

import numpy as np
import pandas as pd
import torch

from ssmkit.cli import main
from ssmkit.timeseries.forecast import load_task


def test_ts_forecast_fit_on_a_users_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 400
    t = np.arange(n)
    frame = pd.DataFrame({"date": pd.date_range("2024-03-01", periods=n, freq="30min").strftime("%Y-%m-%d %H:%M"),
                          "load": np.round(10 + np.sin(2 * np.pi * t / 48) + rng.normal(0, .1, n), 3),
                          "temp": np.round(rng.normal(size=n).cumsum() * .1, 3),
                          "wind": np.round(rng.random(n), 3)})
    csv = tmp_path / "site_meter.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    assert main(["forecast", "fit", "--csv", str(csv), "--target", "load", "--horizon", "12", "--model", "nlinear",
                 "--seq-len", "24", "--max-epochs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert record["channels"] == 3 and record["protocol"] == "ratio" and record["freq"] == "t"
    assert record["step"] == str(pd.Timedelta(minutes=30))
    # 70/10/20 of 400 rows: 80 test rows + L = 24 earlier ones, windows of 24 + 12
    assert record["n_windows"]["test"] == 80 + 24 - 36 + 1 == record["test"]["test/n_windows"]
    assert np.isfinite(record["test"]["test/mse"]) and "test MSE" in printed
    forecast = pd.read_csv(out / "forecast.csv")
    future = pd.date_range(pd.Timestamp(frame["date"].iloc[-1]) + pd.Timedelta(minutes=30), periods=12, freq="30min")
    assert forecast["date"].tolist() == future.strftime("%Y-%m-%d %H:%M:%S").tolist()
    assert (out / "forecast.png").stat().st_size > 1000
    # direct: the checkpoint's NLinear on the last 24 rows scaled with train-row (first 280) statistics
    task = load_task(record["checkpoint"])
    cols = ["temp", "wind", "load"]
    raw = frame[cols].to_numpy(np.float64)
    mean, std = raw[:280].mean(0), raw[:280].std(0)
    x = torch.as_tensor((raw[-24:] - mean) / std, dtype=torch.float32)[None]
    with torch.no_grad():
        want = task.model.eval()(x)[0].double().numpy() * std + mean
    np.testing.assert_allclose(forecast[cols].to_numpy(), want, rtol=1e-5, atol=1e-5)
    assert list(forecast.columns) == ["date", "temp", "wind", "load"]       # target last, as trained
