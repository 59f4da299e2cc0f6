"""The series reader refuses bad files with errors naming the file, line and column (issue 17): repeated,
constant, shuffled and off-step timestamps, non-finite and float32-overflowing cells, a file cut mid-number and
undecodable bytes; the split protocol and the channel count come from the file (issue 22)."""
import logging

import numpy as np
import pandas as pd
import pytest

from ssmkit.timeseries.data import CSVDataModule, read_series_csv
from ssmkit.timeseries.synthetic import synthetic_ett_frame

HEAD = "date,a,OT\n"


def _rows(n, start="2020-01-01 00:00", step="1h"):
    dates = pd.date_range(start, periods=n, freq=step).strftime("%Y-%m-%d %H:%M:%S")
    return [f"{d},{i % 7 + 0.5},{(i * 3) % 11 + 0.25}" for i, d in enumerate(dates)]


def _write(path, lines, end="\n"):
    path.write_text(HEAD + "\n".join(lines) + end)
    return path


@pytest.mark.parametrize("case,pattern", [
    ("duplicate", r"dup\.csv, line 5: duplicate timestamp: 2020-01-01 02:00:00 after 2020-01-01 02:00:00"),
    ("constant", r"constant\.csv, line 3: every timestamp equals 2020-01-01 00:00:00 \(constant timestamps\)"),
    ("shuffled", r"shuffled\.csv, line 4: timestamp 2020-01-01 00:00:00 is before the previous row's "
                 r"2020-01-01 03:00:00"),
    ("gap", r"gap\.csv, line 6: not one step after the previous row: 2020-01-01 05:00:00 after 2020-01-01 "
            r"03:00:00 \(the series' step is 0 days 01:00:00"),
])
def test_ts_reader_refuses_bad_timestamps(tmp_path, case, pattern):
    rows = _rows(8)
    if case == "duplicate":
        rows[3] = rows[2]
    elif case == "constant":
        rows = [rows[0]] * 8
    elif case == "shuffled":
        rows[1], rows[2] = rows[3], rows[0]
    elif case == "gap":
        del rows[4]
    name = {"duplicate": "dup"}.get(case, case)
    with pytest.raises(ValueError, match=pattern):
        read_series_csv(_write(tmp_path / f"{name}.csv", rows))


def test_ts_reader_irregular_warn_keeps_rows_and_names_them(tmp_path, caplog):
    rows = _rows(8)
    rows[3] = rows[2]     # 02:00 twice, then 04:00 (the 03:00 row is replaced)
    del rows[6]           # 05:00 then 07:00
    with caplog.at_level(logging.WARNING):
        df = read_series_csv(_write(tmp_path / "w.csv", rows), irregular="warn")
    assert len(df) == 7 and df.attrs["step"] == pd.Timedelta(hours=1)
    assert "w.csv, line 5: duplicate timestamp" in caplog.text
    assert "w.csv, line 6: not one step after the previous row: 2020-01-01 04:00:00 after 2020-01-01 02:00:00 " \
           "(the series' step is 0 days 01:00:00; 2 such row(s))" in caplog.text
    rows[1], rows[2] = rows[2], rows[1]
    with pytest.raises(ValueError, match="before the previous row's"):   # order is never negotiable
        read_series_csv(_write(tmp_path / "w.csv", rows), irregular="warn")


@pytest.mark.parametrize("cell,pattern", [("inf", r"non-finite value 'inf'"), ("-inf", r"non-finite value '-inf'"),
                                          ("nan", r"non-numeric cell 'nan'"),
                                          ("1e308", r"value too large for float32 \(max 3.4e38\) '1e308'")])
def test_ts_reader_refuses_non_finite_and_overflowing_cells(tmp_path, cell, pattern):
    rows = _rows(8)
    rows[6] = rows[6].rsplit(",", 1)[0] + f",{cell}"
    with pytest.raises(ValueError, match=r"bad\.csv, line 8, column 'OT': " + pattern):
        read_series_csv(_write(tmp_path / "bad.csv", rows))


def test_ts_huge_value_after_the_train_rows_is_refused_before_training(tmp_path):
    """1e30 fits float32 but is ~1e30 train-row stds away: its square would make test MSE inf, so setup refuses."""
    frame = synthetic_ett_frame(400, seed=1)
    frame.loc[350, "OT"] = 1e30
    frame.to_csv(tmp_path / "huge.csv", index=False)
    with pytest.raises(ValueError, match=r"huge\.csv, line 352, column 'OT': value 1e\+30 is .* train-row standard "
                                         r"deviations from the mean"):
        CSVDataModule(str(tmp_path / "huge.csv"), seq_len=24, label_len=12, pred_len=8).setup()


def test_ts_reader_refuses_a_file_cut_mid_number(tmp_path):
    path = _write(tmp_path / "cut.csv", _rows(8))
    text = path.read_text()
    path.write_text(text[:-3])                      # '...,10.25\n' cut to '...,10.2'
    with pytest.raises(ValueError, match=r"cut\.csv, line 9: the file ends inside a row .* looks cut off"):
        read_series_csv(path)


def test_ts_reader_names_undecodable_bytes(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(("date,W/m\xb2,OT\n" + "\n".join(_rows(8)) + "\n").encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv, line 1: not valid utf-8 text \(byte 0xb2"):
        read_series_csv(path)
    assert list(read_series_csv(path, encoding="latin-1").columns) == ["date", "W/m\xb2", "OT"]


def _frame(n_rows, n_cols, step, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2016-07-01", periods=n_rows, freq=step).strftime("%Y-%m-%d %H:%M:%S")
    cols = {f"v{i}": np.round(rng.normal(size=n_rows).cumsum() * 0.1 + i, 3) for i in range(n_cols - 1)}
    return pd.DataFrame({"date": dates, **cols, "OT": np.round(rng.normal(size=n_rows), 3)})


def test_ts_channel_count_and_ratio_split_from_a_21_column_csv(tmp_path):
    _frame(1000, 21, "10min").to_csv(tmp_path / "weather.csv", index=False)
    dm = CSVDataModule(str(tmp_path / "weather.csv"), seq_len=24, label_len=12, pred_len=12)
    dm.setup()
    assert dm.protocol == "ratio" and dm.n_inputs == 21 and dm.step == pd.Timedelta(minutes=10)
    # 70/10/20 of 1000 rows, val and test starting L = 24 rows early
    assert (dm.splits.starts, dm.splits.ends) == ([0, 676, 776], [700, 800, 1000])
    assert dm.n_windows == {"train": 700 - 36 + 1, "val": 124 - 36 + 1, "test": 224 - 36 + 1}


def test_ts_ettm2_gets_the_ett_minute_borders(tmp_path):
    _frame(57600, 7, "15min").to_csv(tmp_path / "ETTm2.csv", index=False)
    dm = CSVDataModule(str(tmp_path / "ETTm2.csv"), seq_len=96, pred_len=96)
    dm.setup()
    assert dm.protocol == "ett" and dm.freq == "t" and dm.n_inputs == 7
    assert (dm.splits.starts, dm.splits.ends) == ([0, 34560 - 96, 46080 - 96], [34560, 46080, 57600])
    assert dm.n_windows["test"] == 11425
    # an hourly file under an ETTm name is refused: the name promises 15-minute steps
    _frame(300, 7, "1h").to_csv(tmp_path / "ETTm1.csv", index=False)
    with pytest.raises(ValueError, match=r"ETTm1\.csv, line 3: not one step .*the series' step is 0 days 00:15:00"):
        CSVDataModule(str(tmp_path / "ETTm1.csv")).setup()


def test_ts_headerless_matrix_like_solar(tmp_path):
    rng = np.random.default_rng(0)
    values = np.round(rng.random((500, 5)), 4)
    (tmp_path / "solar_AL.txt").write_text("\n".join(",".join(map(str, r)) for r in values) + "\n")
    dm = CSVDataModule(str(tmp_path / "solar_AL.txt"), seq_len=24, label_len=12, pred_len=12, date_col=None,
                       target=None)
    dm.setup()
    assert dm.protocol == "ratio" and dm.n_inputs == 5 and dm.n_time_features == 1
    x, y, x_mark, _ = dm.datasets["train"][0]
    np.testing.assert_allclose(x.numpy(), dm.splits.scaler.transform(values[:24]), rtol=1e-5, atol=1e-6)
    assert x_mark.shape == (24, 1) and not x_mark.any()
