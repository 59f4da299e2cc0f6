"""Forecasting data: CSV reading with named errors, the split protocols, windows and the DataModule.

The protocol is the community harness's (Informer / Time-Series-Library), re-implemented:
- Files named ETTh* (hourly): train rows [0, 8640), val [8640 - L, 11520), test [11520 - L, 14400);
  ETTm* (15-minute): every border x 4.
- Every other file: 70/10/20 with int() rounding, val/test start L rows early (`Dataset_Custom`, `Dataset_Solar`).
- A per-column StandardScaler fitted on the train rows only, applied to all rows; metrics on that scale.
- Window s: x = rows [s, s + L), y = rows [s + L - label_len, s + L + H); every window of every split is used.
- Feature modes: M (all -> all), S (target -> target), MS (all -> target). The target is always the last column.
The channel count comes from the file (`n_inputs` after `setup`), so a model config never states it.

The reader checks what it reads: UTF-8 (or the given encoding) text that ends with a newline (a file cut mid-row
is refused, not read with a shortened last number), increasing timestamps at one step (ETTh 1 h, ETTm 15 min,
otherwise the most common step), and finite cells that fit in float32. Every error names the file and the line.
"""
from __future__ import annotations

import io
import logging
import pathlib
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from ssmkit.data import ResumableDataModule

log = logging.getLogger(__name__)

FEATURES = ("M", "S", "MS")
SPLITS = ("train", "val", "test")
_MONTH_H = 30 * 24  # the harness's 30-day "month" in hourly rows


IRREGULAR = ("error", "warn")
_ETT_STEPS = {"ETTh": pd.Timedelta(hours=1), "ETTm": pd.Timedelta(minutes=15)}
_F32_MAX = float(np.finfo(np.float32).max)


def _read_text(path: pathlib.Path, encoding: str) -> str:
    """The whole file as text; a decode error or a missing final newline (a cut file) names the file and line."""
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(f"{path}: empty file, expected a header line and data rows")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not valid {encoding} text (byte {raw[e.start]:#04x} at offset "
                         f"{e.start}); pass the file's encoding (e.g. encoding='latin-1')") from None
    if not text.endswith("\n"):
        last = text.rsplit("\n", 1)[-1]
        raise ValueError(f"{path}, line {text.count(chr(10)) + 1}: the file ends inside a row ({last[-30:]!r} has no "
                         f"line end), so it looks cut off; if that row is complete, end the file with a newline")
    return text


def check_timestamps(dates: pd.DatetimeIndex, path, step: Optional[pd.Timedelta] = None,
                     irregular: str = "error", first_line: int = 2) -> pd.Timedelta:
    """Check that `dates` increase at one step and return that step (`step`, or the most common difference).

    A timestamp before the previous one always raises; a repeated timestamp or a different step (missing or extra
    rows) raises with `irregular="error"` and is logged with its line with `"warn"` (for published files known to
    have them, e.g. Weather). Errors name the file and the first offending line (`first_line` = line of row 0)."""
    if irregular not in IRREGULAR:
        raise ValueError(f"irregular must be one of {IRREGULAR}, got {irregular!r}")
    diffs = dates[1:] - dates[:-1]
    if len(diffs) == 0:
        raise ValueError(f"{path}: need at least two rows to tell the series' time step, got {len(dates)}")
    back = np.flatnonzero(diffs < pd.Timedelta(0))
    if back.size:
        i = back[0] + 1
        raise ValueError(f"{path}, line {i + first_line}: timestamp {dates[i]} is before the previous row's "
                         f"{dates[i - 1]}; rows must be in time order")
    if step is None:
        positive = diffs[diffs > pd.Timedelta(0)]
        if len(positive) == 0:
            raise ValueError(f"{path}, line {first_line + 1}: every timestamp equals {dates[0]} (constant "
                             f"timestamps); each row needs its own time")
        step = pd.Series(positive).mode().iloc[0]
    for bad, what in ((diffs == pd.Timedelta(0), "duplicate timestamp"),
                      ((diffs != step) & (diffs != pd.Timedelta(0)), "not one step after the previous row")):
        rows = np.flatnonzero(bad)
        if rows.size == 0:
            continue
        i = rows[0] + 1
        msg = (f"{path}, line {i + first_line}: {what}: {dates[i]} after {dates[i - 1]} (the series' step is "
               f"{step}; {rows.size} such row(s))")
        if irregular == "error":
            raise ValueError(msg + "; fix the file, or pass irregular='warn' to keep its rows as they are")
        log.warning(msg + "; kept as they are (irregular='warn')")
    return step


def read_series_csv(path, date_col: Optional[str] = "date", encoding: str = "utf-8",
                    step: Optional[pd.Timedelta] = None, irregular: str = "error") -> pd.DataFrame:
    """Read a forecasting CSV (a date column then numeric variables) into a DataFrame with parsed dates.

    `date_col=None` reads a header-less numeric matrix (Solar's `solar_AL.txt`), columns named "0", "1", ...
    Raises ValueError naming the file and its line (1-based, header = line 1) for an undecodable or cut-off file,
    a missing date column, a ragged row, an unparseable, repeated, out-of-order or off-step date (see
    `check_timestamps`; the step is kept in `df.attrs["step"]`), an empty or non-numeric cell, and a value that is
    not finite or does not fit in float32.
    """
    path = pathlib.Path(path)
    text = _read_text(path, encoding)
    header = 0 if date_col is not None else None
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, header=header)
    except pd.errors.ParserError as e:
        row = re.search(r"starting at row (\d+)", str(e))  # the tokenizer's 0-based line of an unclosed quote
        where = f", line {int(row[1]) + 1}" if row else ""
        raise ValueError(f"{path}{where}: malformed CSV: {str(e).strip()}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, expected a header line with a '{date_col}' column") from None
    first_line = 2 if date_col is not None else 1
    if date_col is None:
        df.columns = [str(c) for c in df.columns]
        out = pd.DataFrame(index=df.index)
    else:
        if date_col not in df.columns:
            raise ValueError(f"{path}, line 1: no '{date_col}' column in the header {list(df.columns)}")
        if df.shape[1] < 2:
            raise ValueError(f"{path}, line 1: need at least one variable column besides '{date_col}'")
        dates = pd.to_datetime(df[date_col], errors="coerce")
        bad = np.flatnonzero(dates.isna().to_numpy())
        if bad.size:
            raise ValueError(f"{path}, line {bad[0] + 2}: cannot parse date {df[date_col].iloc[bad[0]]!r}")
        step = check_timestamps(pd.DatetimeIndex(dates), path, step, irregular)
        out = pd.DataFrame({date_col: dates})
    for col in df.columns.drop(date_col) if date_col is not None else df.columns:
        cells = df[col].fillna("").str.strip()
        values = pd.to_numeric(cells, errors="coerce").to_numpy(np.float64)
        for bad, what in ((np.isnan(values), "non-numeric cell"), (np.isinf(values), "non-finite value"),
                          (np.abs(values) > _F32_MAX, "value too large for float32 (max 3.4e38)")):
            rows = np.flatnonzero(bad)
            if rows.size:
                raise ValueError(f"{path}, line {rows[0] + first_line}, column '{col}': {what} "
                                 f"{df[col].iloc[rows[0]]!r}")
        out[col] = values
    out.attrs["step"] = step
    return out


def time_features(dates, freq: str = "h") -> np.ndarray:
    """The harness's `timeF` features in [-0.5, 0.5]: (n, 4) for freq 'h', (n, 5) for 't' (minute first).

    HourOfDay hour/23, DayOfWeek weekday/6, DayOfMonth (day-1)/30, DayOfYear (dayofyear-1)/365, MinuteOfHour
    minute/59, each minus 0.5.
    """
    d = pd.DatetimeIndex(dates)
    cols = [d.hour / 23.0, d.day_of_week / 6.0, (d.day - 1) / 30.0, (d.day_of_year - 1) / 365.0]
    if freq == "t":
        cols = [d.minute / 59.0] + cols
    elif freq != "h":
        raise ValueError(f"freq must be 'h' (hourly features) or 't' (adds minute-of-hour), got {freq!r}")
    return np.stack([np.asarray(c, dtype=np.float64) for c in cols], axis=1) - 0.5


PROTOCOLS = ("auto", "ett", "ratio")


def ett_borders(name: str, seq_len: int) -> Tuple[List[int], List[int]]:
    """(starts, ends) row borders of train/val/test for ETTh* (hourly) or ETTm* (15-minute, x4)."""
    if name.startswith("ETTh"):
        k = 1
    elif name.startswith("ETTm"):
        k = 4
    else:
        raise ValueError(f"name must start with 'ETTh' or 'ETTm', got {name!r}")
    m = _MONTH_H * k
    return [0, 12 * m - seq_len, 16 * m - seq_len], [12 * m, 16 * m, 20 * m]


def ratio_borders(n_rows: int, seq_len: int) -> Tuple[List[int], List[int]]:
    """(starts, ends) row borders of a 70/10/20 split with int() rounding (the harness's `Dataset_Custom`)."""
    n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
    n_val = n_rows - n_train - n_test
    return [0, n_train - seq_len, n_rows - n_test - seq_len], [n_train, n_train + n_val, n_rows]


def split_protocol(path, protocol: str = "auto") -> str:
    """'ett' for files named ETTh* / ETTm* (the harness's month borders), 'ratio' (70/10/20) for any other;
    an explicit 'ett' needs such a name, since the name says hourly or 15-minute."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    stem = pathlib.Path(path).stem
    is_ett = stem[:4] in _ETT_STEPS
    if protocol == "ett" and not is_ett:
        raise ValueError(f"protocol 'ett' needs a file named ETTh* or ETTm*, got {pathlib.Path(path).name!r}")
    return "ett" if protocol == "ett" or (protocol == "auto" and is_ett) else "ratio"


class StandardScaler:
    """Per-column mean / population std (sklearn's StandardScaler, ddof=0), fitted on train rows only."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean, self.scale = np.asarray(mean, np.float64), np.asarray(scale, np.float64)

    @classmethod
    def fit(cls, rows: np.ndarray) -> "StandardScaler":
        from sklearn.preprocessing import StandardScaler as Sk
        sk = Sk().fit(rows)
        return cls(sk.mean_, sk.scale_)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.scale

    def inverse_transform(self, x, columns: Optional[slice] = None):
        """Undo the scaling of an array or tensor whose last axis holds `columns` of the fitted ones."""
        cols = slice(None) if columns is None else columns
        mean, scale = self.mean[cols], self.scale[cols]
        if isinstance(x, torch.Tensor):
            scale, mean = (torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in (scale, mean))
        return x * scale + mean


class ForecastWindows(Dataset):
    """Sliding windows over one split: item s -> (x (L, C_in), y (label_len + H, C_out), x_mark, y_mark)."""

    def __init__(self, data: np.ndarray, marks: np.ndarray, seq_len: int, label_len: int, pred_len: int,
                 n_targets: int):
        self.data = torch.as_tensor(data, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.seq_len, self.label_len, self.pred_len, self.n_targets = seq_len, label_len, pred_len, n_targets

    def __len__(self) -> int:
        return max(0, len(self.data) - self.seq_len - self.pred_len + 1)

    def all_windows(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Every window at once, (x (N, L, C_in), y (N, H, C_out)) with y the forecast part only (no label
        steps): what a closed-form fit on the split needs."""
        n = len(self)
        x = self.data.unfold(0, self.seq_len, 1)[:n].transpose(1, 2)
        y = self.data[self.seq_len:, -self.n_targets:].unfold(0, self.pred_len, 1)[:n].transpose(1, 2)
        return x.contiguous(), y.contiguous()

    def __getitem__(self, s: int):
        if not 0 <= s < len(self):
            raise IndexError(f"window {s} out of range [0, {len(self)})")
        e = s + self.seq_len
        r0, r1 = e - self.label_len, e + self.pred_len
        return (self.data[s:e], self.data[r0:r1, -self.n_targets:], self.marks[s:e], self.marks[r0:r1])


@dataclass
class SeriesSplits:
    """A scaled series cut into the three protocol splits (row ranges into `data`)."""
    data: np.ndarray          # (n_rows, C_in) scaled, target last
    marks: np.ndarray         # (n_rows, n_time_features); one zero column for a file without dates
    dates: Optional[pd.DatetimeIndex]
    columns: List[str]
    starts: List[int]
    ends: List[int]
    scaler: Optional[StandardScaler]


def prepare_series(df: pd.DataFrame, path, borders, features: str, target: str, seq_len: int, pred_len: int,
                   freq: str, scale: bool, date_col: Optional[str] = "date") -> SeriesSplits:
    """Select columns for the feature mode (target last), check the length, scale with train rows only."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
    if target not in df.columns:
        raise ValueError(f"{path}, line 1: target column '{target}' not in the header {list(df.columns)}")
    variables = [c for c in df.columns if c not in (date_col, target)] + [target]
    columns = [target] if features == "S" else variables
    starts, ends = borders(len(df), seq_len)
    short = [n for n, s, e in zip(SPLITS, starts, ends) if s < 0 or e - s < seq_len + pred_len]
    if len(df) < ends[2] or short:
        raise ValueError(f"{path}: too few rows ({len(df)} data rows, up to line {len(df) + 1}) for the splits "
                         f"{list(zip(starts, ends))} with seq_len + pred_len = {seq_len + pred_len}"
                         + (f" (no full window in {short})" if short else ""))
    values = df[columns].to_numpy(np.float64)
    scaler = StandardScaler.fit(values[starts[0]:ends[0]]) if scale else None
    data = scaler.transform(values) if scale else values
    # squares of the scaled values must stay finite in float32 (the loss and the metrics)
    huge = np.flatnonzero(np.abs(data).max(axis=1) > np.sqrt(_F32_MAX) / 16)
    if huge.size:
        r = huge[0]
        c = int(np.argmax(np.abs(data[r])))
        raise ValueError(f"{path}, line {r + (2 if date_col else 1)}, column '{columns[c]}': value "
                         f"{float(values[r, c]):g} is {data[r, c]:.3g} train-row standard deviations from the mean; "
                         f"its square would overflow float32 in the loss and the metrics")
    if date_col is None:
        return SeriesSplits(data, np.zeros((len(df), 1)), None, columns, starts, ends, scaler)
    dates = pd.DatetimeIndex(df[date_col])
    return SeriesSplits(data, time_features(dates, freq), dates, columns, starts, ends, scaler)


class ForecastDataModule(ResumableDataModule):
    """Windows of one series file for the three splits; the split protocol comes from the file name
    (`split_protocol`) and the channel count from the file (`n_inputs`, known after `setup`).

    Train is shuffled with a seeded generator; val and test keep every window (no drop_last), and the window
    counts are logged and kept in `n_windows`. `freq` picks the time features ('h': 4, 't': 5 with the minute;
    default 't' for ETTm files, else 'h'); `date_col=None` reads a header-less matrix (Solar) with a zero time
    feature; `irregular='warn'` keeps repeated or missing timestamps (logged) instead of refusing the file."""

    def __init__(self, path: str, seq_len: int = 96, label_len: int = 48, pred_len: int = 96, features: str = "M",
                 target: Optional[str] = "OT", freq: Optional[str] = None, scale: bool = True, batch_size: int = 32,
                 eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0, protocol: str = "auto",
                 date_col: Optional[str] = "date", encoding: str = "utf-8", irregular: str = "error"):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if not 0 <= label_len <= seq_len:
            raise ValueError(f"label_len must be in [0, seq_len={seq_len}], got {label_len}")
        if irregular not in IRREGULAR:
            raise ValueError(f"irregular must be one of {IRREGULAR}, got {irregular!r}")
        self.path = pathlib.Path(path)
        self.protocol = split_protocol(self.path, protocol)
        self.ett_kind = self.path.stem[:4] if self.protocol == "ett" else None
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.features, self.target, self.scale = features, target, scale
        self.freq = freq or ("t" if self.ett_kind == "ETTm" else "h")
        self.date_col, self.encoding, self.irregular = date_col, encoding, irregular
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.splits: Optional[SeriesSplits] = None
        self.step: Optional[pd.Timedelta] = None
        self.datasets: Dict[str, ForecastWindows] = {}
        self.n_windows: Dict[str, int] = {}

    def csv_path(self) -> pathlib.Path:
        return self.path

    def borders(self, n_rows: int, seq_len: int):
        if self.protocol == "ett":
            return ett_borders(self.path.stem, seq_len)
        return ratio_borders(n_rows, seq_len)

    @property
    def n_inputs(self) -> int:
        """Channels fed to the model: 1 for S, all variables for M and MS (read from the file by `setup`)."""
        if self.splits is None:
            raise RuntimeError("n_inputs is read from the file: call setup() first")
        return 1 if self.features == "S" else self.splits.data.shape[1]

    @property
    def n_targets(self) -> int:
        """Channels forecast and scored: the last `n_targets` input channels (all for M, 1 for S and MS)."""
        return self.n_inputs if self.features == "M" else 1

    @property
    def n_time_features(self) -> int:
        if self.date_col is None:
            return 1
        return 5 if self.freq == "t" else 4

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits is None:
            path = self.csv_path()
            df = read_series_csv(path, self.date_col, self.encoding, _ETT_STEPS.get(self.ett_kind), self.irregular)
            self.step = df.attrs["step"]
            target = self.target if self.target is not None else df.columns[-1]
            self.target = target
            self.splits = prepare_series(df, path, self.borders, self.features, target, self.seq_len,
                                         self.pred_len, self.freq, self.scale, self.date_col)
            sp = self.splits
            for i, split in enumerate(SPLITS):
                rows = slice(sp.starts[i], sp.ends[i])
                self.datasets[split] = ForecastWindows(sp.data[rows], sp.marks[rows], self.seq_len, self.label_len,
                                                       self.pred_len, self.n_targets)
                self.n_windows[split] = len(self.datasets[split])
            log.info("%s: %s protocol, %d channels, step %s, windows %s (seq_len=%d, pred_len=%d, features=%s, "
                     "seed=%d)", path, self.protocol, self.n_inputs, self.step, self.n_windows, self.seq_len,
                     self.pred_len, self.features, self.seed)

    def loader(self, split: str) -> DataLoader:
        if not self.datasets:
            self.setup()
        return self.split_loader(self.datasets[split], split == "train", self.batch_size, self.seed, self.num_workers,
                                 eval_batch_size=self.eval_batch_size)

    def describe(self) -> dict:
        """Plain-Python record of what a model trained on this data expects (kept in checkpoints)."""
        sc = self.splits.scaler
        return {"columns": list(self.splits.columns), "features": self.features, "target": self.target,
                "freq": self.freq, "seq_len": self.seq_len, "pred_len": self.pred_len, "n_targets": self.n_targets,
                "mean": None if sc is None else sc.mean.tolist(), "scale": None if sc is None else sc.scale.tolist(),
                "seed": self.seed, "date_col": self.date_col, "encoding": self.encoding,
                "step": None if self.step is None else str(self.step), "protocol": self.protocol}

    def inverse_transform(self, y):
        """Undo scaling of targets (..., n_targets) back to the CSV's units."""
        if self.splits.scaler is None:
            return y
        return self.splits.scaler.inverse_transform(y, slice(-self.n_targets, None))


class CSVDataModule(ForecastDataModule):
    """Any series file: a `date` column and numeric variables (target moved last), or a header-less matrix with
    `date_col=None`. The protocol follows the file name: ETT borders for ETTh* / ETTm*, 70/10/20 otherwise."""

    def __init__(self, path: str, seq_len: int = 96, label_len: int = 48, pred_len: int = 96, features: str = "M",
                 target: Optional[str] = "OT", freq: Optional[str] = None, scale: bool = True, batch_size: int = 32,
                 eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0, protocol: str = "auto",
                 date_col: Optional[str] = "date", encoding: str = "utf-8", irregular: str = "error"):
        super().__init__(path, seq_len, label_len, pred_len, features, target, freq, scale, batch_size,
                         eval_batch_size, num_workers, seed, protocol, date_col, encoding, irregular)
        self.save_hyperparameters()


class ETTDataModule(ForecastDataModule):
    """ETTh1 / ETTh2 / ETTm1 / ETTm2 as `<root>/<name>.csv` under the harness's fixed month borders.

    `freq` defaults to 'h' for ETTh and 't' (5 features) for ETTm; S-Mamba's scripts use 'h' for both.
    """

    def __init__(self, root: str, name: str = "ETTh1", seq_len: int = 96, label_len: int = 48, pred_len: int = 96,
                 features: str = "M", target: str = "OT", freq: Optional[str] = None, scale: bool = True,
                 batch_size: int = 32, eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0):
        ett_borders(name, seq_len)  # validates the name early
        super().__init__(str(pathlib.Path(root) / f"{name}.csv"), seq_len, label_len, pred_len, features, target,
                         freq, scale, batch_size, eval_batch_size, num_workers, seed, protocol="ett")
        self.save_hyperparameters()
        self.root, self.name = pathlib.Path(root), name
