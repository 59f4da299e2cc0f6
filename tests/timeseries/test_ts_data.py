"""The ETT protocol on synthetic CSVs written by the tests: borders, window counts, train-only scaling,
time features, feature modes, and named errors for malformed files."""
import numpy as np
import pandas as pd
import pytest
import torch

from ssmkit.timeseries.data import (CSVDataModule, ETTDataModule, ett_borders, ratio_borders, read_series_csv,
                                    time_features)
from ssmkit.timeseries.synthetic import synthetic_ett_frame, write_synthetic_ett


@pytest.fixture(scope="module")
def ett_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ett")
    write_synthetic_ett(root / "ETTh1.csv", n_rows=17420, freq="h", seed=1)
    return root


@pytest.mark.parametrize("pred_len,n_test", [(96, 2785), (192, 2689), (336, 2545), (720, 2161)])
def test_ts_ett_hour_window_counts(ett_dir, pred_len, n_test):
    dm = ETTDataModule(str(ett_dir), "ETTh1", seq_len=96, pred_len=pred_len)
    dm.setup("fit")
    assert dm.n_windows == {"train": 8641 - 96 - pred_len, "val": 2880 - pred_len + 1, "test": n_test}
    # every window is served: no drop_last on any split
    assert sum(len(b[0]) for b in dm.test_dataloader()) == n_test
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 2880 - pred_len + 1


def test_ts_ett_borders_and_minute_x4():
    assert ett_borders("ETTh2", 96) == ([0, 8544, 11424], [8640, 11520, 14400])
    assert ett_borders("ETTm1", 96) == ([0, 34464, 45984], [34560, 46080, 57600])
    assert ratio_borders(1000, 24) == ([0, 676, 776], [700, 800, 1000])
    with pytest.raises(ValueError, match="name"):
        ett_borders("weather", 96)


def test_ts_ett_minute_windows(tmp_path):
    write_synthetic_ett(tmp_path / "ETTm1.csv", n_rows=57600, freq="t")
    dm = ETTDataModule(str(tmp_path), "ETTm1", seq_len=96, pred_len=96)
    dm.setup()
    assert dm.n_windows["test"] == 11425 and dm.n_windows["train"] == 34560 - 96 - 96 + 1
    assert dm.n_time_features == 5 and dm.datasets["train"][0][2].shape == (96, 5)


def test_ts_scaler_uses_train_rows_only(ett_dir, tmp_path):
    raw = pd.read_csv(ett_dir / "ETTh1.csv")
    cols = list(raw.columns[1:])
    vals = raw[cols].to_numpy(np.float64)
    mean, std = vals[:8640].mean(0), vals[:8640].std(0)          # population std, train rows only
    # changing rows after the train border must not change the fit
    changed = raw.copy()
    changed.loc[8640:, cols] = changed.loc[8640:, cols] * 3 + 100
    changed.to_csv(tmp_path / "ETTh1.csv", index=False)
    for root, v in ((ett_dir, vals), (tmp_path, changed[cols].to_numpy(np.float64))):
        dm = ETTDataModule(str(root), "ETTh1", seq_len=96, pred_len=96)
        dm.setup()
        np.testing.assert_allclose(dm.splits.scaler.mean, mean, rtol=1e-12)
        np.testing.assert_allclose(dm.splits.scaler.scale, std, rtol=1e-12)
        # test window 5: x = rows [11520 - 96 + 5, +96), y = rows [x_end - 48, x_end + 96)
        x, y, xm, ym = dm.datasets["test"][5]
        s = 11520 - 96 + 5
        np.testing.assert_allclose(x.numpy(), (v[s:s + 96] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(y.numpy(), (v[s + 48:s + 192] - mean) / std, rtol=1e-5, atol=1e-5)
        back = dm.inverse_transform(y.double())
        np.testing.assert_allclose(back.numpy(), v[s + 48:s + 192], rtol=1e-5, atol=1e-4)


def test_ts_time_features_known_dates():
    d = pd.to_datetime(["2016-07-01 00:00", "2018-12-31 23:45", "2017-01-01 12:15"])
    f = time_features(d, "t")
    # minute/59, hour/23, weekday/6 (Mon=0), (day-1)/30, (dayofyear-1)/365, all minus 0.5
    want = np.array([[0, 0, 4 / 6, 0, 182 / 365],     # Fri 1 Jul 2016 (leap year: day 183)
                     [45 / 59, 1, 0, 1, 364 / 365],  # Mon 31 Dec 2018 (day 365)
                     [15 / 59, 12 / 23, 1, 0, 0]]) - 0.5  # Sun 1 Jan 2017
    np.testing.assert_allclose(f, want, atol=1e-12)
    np.testing.assert_allclose(time_features(d, "h"), want[:, 1:], atol=1e-12)
    assert f.min() >= -0.5 and f.max() <= 0.5
    with pytest.raises(ValueError, match="freq"):
        time_features(d, "d")


@pytest.mark.parametrize("features,c_in,c_out", [("M", 7, 7), ("S", 1, 1), ("MS", 7, 1)])
def test_ts_feature_modes(ett_dir, features, c_in, c_out):
    dm = ETTDataModule(str(ett_dir), "ETTh1", seq_len=96, label_len=48, pred_len=24, features=features)
    dm.setup()
    x, y, xm, ym = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 96, c_in) and y.shape == (32, 72, c_out)
    assert xm.shape == (32, 96, 4) and ym.shape == (32, 72, 4)
    assert (dm.n_inputs, dm.n_targets) == (c_in, c_out)
    # the target (OT) is the last input channel, and y continues x on it
    first = dm.datasets["train"][0]
    torch.testing.assert_close(first[1][:48, -1], first[0][48:, -1])


def test_ts_csv_target_moved_last_and_70_10_20(tmp_path):
    frame = synthetic_ett_frame(1000, seed=2)
    frame = frame[["date", "OT", "HUFL", "HULL"]]
    frame.to_csv(tmp_path / "x.csv", index=False)
    dm = CSVDataModule(str(tmp_path / "x.csv"), seq_len=24, label_len=12, pred_len=12, target="OT")
    dm.setup()
    assert dm.splits.columns == ["HUFL", "HULL", "OT"]
    assert dm.n_windows == {"train": 700 - 36 + 1, "val": 100 + 24 - 36 + 1, "test": 200 + 24 - 36 + 1}
    ot = frame["OT"].to_numpy()
    np.testing.assert_allclose(dm.splits.data[:, -1], (ot - ot[:700].mean()) / ot[:700].std(), atol=1e-10)


def _write(path, text):
    path.write_text(text)
    return path


def test_ts_malformed_csv_errors(tmp_path):
    good = "date,a,OT\n2020-01-01 00:00,1,2\n2020-01-01 01:00,3,4\n"
    with pytest.raises(ValueError, match=r"nodate\.csv, line 1: no 'date' column"):
        read_series_csv(_write(tmp_path / "nodate.csv", good.replace("date", "time")))
    with pytest.raises(ValueError, match=r"cell\.csv, line 3, column 'OT': non-numeric cell 'x'"):
        read_series_csv(_write(tmp_path / "cell.csv", good.replace(",4", ",x")))
    with pytest.raises(ValueError, match=r"empty\.csv, line 2, column 'a': non-numeric cell ''"):
        read_series_csv(_write(tmp_path / "empty.csv", good.replace(",1,", ",,")))
    with pytest.raises(ValueError, match=r"baddate\.csv, line 3: cannot parse date 'yesterday'"):
        read_series_csv(_write(tmp_path / "baddate.csv", good.replace("2020-01-01 01:00", "yesterday")))
    with pytest.raises(ValueError, match=r"ragged\.csv: malformed CSV.*line 3"):
        read_series_csv(_write(tmp_path / "ragged.csv", good.replace(",3,4", ",3,4,5")))
    write_synthetic_ett(tmp_path / "ETTh2.csv", n_rows=14000)
    with pytest.raises(ValueError, match=r"ETTh2\.csv: too few rows \(14000 data rows"):
        ETTDataModule(str(tmp_path), "ETTh2").setup()
    frame = synthetic_ett_frame(100)
    frame.to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short\.csv: too few rows .*no full window in \['val', 'test'\]"):
        CSVDataModule(str(tmp_path / "short.csv"), seq_len=24, label_len=12, pred_len=24).setup()
    with pytest.raises(ValueError, match=r"short\.csv, line 1: target column 'load'"):
        CSVDataModule(str(tmp_path / "short.csv"), target="load", seq_len=8, label_len=4, pred_len=4).setup()
