"""Forecasting data: CSV reading with named errors, the ETT split protocol, windows and DataModules.

The protocol is the community harness's (Informer / Time-Series-Library), re-implemented:
- ETTh*: train rows [0, 8640), val [8640 - L, 11520), test [11520 - L, 14400); ETTm*: every border x 4.
- Other CSVs (date column, variables, target last): 70/10/20 with int() rounding, val/test start L rows early.
- A per-column StandardScaler fitted on the train rows only, applied to all rows; metrics on that scale.
- Window s: x = rows [s, s + L), y = rows [s + L - label_len, s + L + H); every window of every split is used.
- Feature modes: M (all -> all), S (target -> target), MS (all -> target). The target is always the last column.
"""
from __future__ import annotations

import logging
import pathlib
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


def read_series_csv(path, date_col: str = "date") -> pd.DataFrame:
    """Read a forecasting CSV (a date column then numeric variables) into a DataFrame with parsed dates.

    Raises ValueError naming the file and its line (1-based, header = line 1) for a missing date column,
    a ragged row, an unparseable date, or an empty or non-numeric cell.
    """
    path = pathlib.Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as e:
        raise ValueError(f"{path}: malformed CSV: {e}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file, expected a header line with a '{date_col}' column") from None
    if date_col not in df.columns:
        raise ValueError(f"{path}, line 1: no '{date_col}' column in the header {list(df.columns)}")
    if df.shape[1] < 2:
        raise ValueError(f"{path}, line 1: need at least one variable column besides '{date_col}'")
    dates = pd.to_datetime(df[date_col], errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{path}, line {bad[0] + 2}: cannot parse date {df[date_col].iloc[bad[0]]!r}")
    out = pd.DataFrame({date_col: dates})
    for col in df.columns.drop(date_col):
        values = pd.to_numeric(df[col].str.strip(), errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise ValueError(f"{path}, line {bad[0] + 2}, column '{col}': non-numeric cell {df[col].iloc[bad[0]]!r}")
        out[col] = values.astype(np.float64)
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
            return x * torch.as_tensor(scale, dtype=x.dtype, device=x.device) + torch.as_tensor(mean, dtype=x.dtype, device=x.device)
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
    marks: np.ndarray         # (n_rows, n_time_features)
    dates: pd.DatetimeIndex
    columns: List[str]
    starts: List[int]
    ends: List[int]
    scaler: Optional[StandardScaler]


def prepare_series(df: pd.DataFrame, path, borders, features: str, target: str, seq_len: int, pred_len: int,
                   freq: str, scale: bool, date_col: str = "date") -> SeriesSplits:
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
    dates = pd.DatetimeIndex(df[date_col])
    return SeriesSplits(data, time_features(dates, freq), dates, columns, starts, ends, scaler)


class ForecastDataModule(ResumableDataModule):
    """Windows of a CSV series for the three splits. Train is shuffled with a seeded generator; val and test
    keep every window (no drop_last), and the window counts are logged and kept in `n_windows`."""

    def __init__(self, seq_len: int = 96, label_len: int = 48, pred_len: int = 96, features: str = "M",
                 target: str = "OT", freq: str = "h", scale: bool = True, batch_size: int = 32,
                 eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0):
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        if not 0 <= label_len <= seq_len:
            raise ValueError(f"label_len must be in [0, seq_len={seq_len}], got {label_len}")
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.features, self.target, self.freq, self.scale = features, target, freq, scale
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed = num_workers, seed
        self.splits: Optional[SeriesSplits] = None
        self.datasets: Dict[str, ForecastWindows] = {}
        self.n_windows: Dict[str, int] = {}

    def csv_path(self) -> pathlib.Path:
        raise NotImplementedError

    def borders(self, n_rows: int, seq_len: int):
        raise NotImplementedError

    @property
    def n_inputs(self) -> int:
        """Channels fed to the model: 1 for S, all variables for M and MS."""
        return 1 if self.features == "S" else self.splits.data.shape[1]

    @property
    def n_targets(self) -> int:
        """Channels forecast and scored: the last `n_targets` input channels (all for M, 1 for S and MS)."""
        return self.n_inputs if self.features == "M" else 1

    @property
    def n_time_features(self) -> int:
        return 5 if self.freq == "t" else 4

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits is None:
            path = self.csv_path()
            df = read_series_csv(path)
            self.splits = prepare_series(df, path, self.borders, self.features, self.target, self.seq_len,
                                         self.pred_len, self.freq, self.scale)
            sp = self.splits
            for i, split in enumerate(SPLITS):
                rows = slice(sp.starts[i], sp.ends[i])
                self.datasets[split] = ForecastWindows(sp.data[rows], sp.marks[rows], self.seq_len, self.label_len,
                                                       self.pred_len, self.n_targets)
                self.n_windows[split] = len(self.datasets[split])
            log.info("%s: windows %s (seq_len=%d, pred_len=%d, features=%s, seed=%d)", path, self.n_windows,
                     self.seq_len, self.pred_len, self.features, self.seed)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        windows = self.datasets[split]
        # train: a seeded per-epoch order, sharded by rank, resumable mid-epoch (ssmkit.data); the loader's own
        # generator keeps iteration from drawing on the global random state (exact resume of dropout)
        sampler = self.train_sampler(windows, self.batch_size, self.seed) if shuffle else None
        return DataLoader(windows, batch_size=self.batch_size if shuffle else self.eval_batch_size, sampler=sampler,
                          drop_last=False, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def describe(self) -> dict:
        """Plain-Python record of what a model trained on this data expects (kept in checkpoints)."""
        sc = self.splits.scaler
        return {"columns": list(self.splits.columns), "features": self.features, "target": self.target,
                "freq": self.freq, "seq_len": self.seq_len, "pred_len": self.pred_len, "n_targets": self.n_targets,
                "mean": None if sc is None else sc.mean.tolist(), "scale": None if sc is None else sc.scale.tolist(),
                "seed": self.seed}

    def inverse_transform(self, y):
        """Undo scaling of targets (..., n_targets) back to the CSV's units."""
        if self.splits.scaler is None:
            return y
        return self.splits.scaler.inverse_transform(y, slice(-self.n_targets, None))


class ETTDataModule(ForecastDataModule):
    """ETTh1 / ETTh2 / ETTm1 / ETTm2 (`<root>/<name>.csv`) under the harness's fixed month borders.

    `freq` defaults to 'h' for ETTh and 't' (5 features) for ETTm; S-Mamba's scripts use 'h' for both.
    """

    def __init__(self, root: str, name: str = "ETTh1", seq_len: int = 96, label_len: int = 48, pred_len: int = 96,
                 features: str = "M", target: str = "OT", freq: Optional[str] = None, scale: bool = True,
                 batch_size: int = 32, eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0):
        ett_borders(name, seq_len)  # validates the name early
        super().__init__(seq_len, label_len, pred_len, features, target,
                         freq or ("t" if name.startswith("ETTm") else "h"), scale, batch_size, eval_batch_size,
                         num_workers, seed)
        self.save_hyperparameters()
        self.root, self.name = pathlib.Path(root), name

    def csv_path(self) -> pathlib.Path:
        return self.root / f"{self.name}.csv"

    def borders(self, n_rows: int, seq_len: int):
        return ett_borders(self.name, seq_len)


class CSVDataModule(ForecastDataModule):
    """Any CSV with a `date` column and numeric variables (target moved last), split 70/10/20."""

    def __init__(self, path: str, seq_len: int = 96, label_len: int = 48, pred_len: int = 96, features: str = "M",
                 target: str = "OT", freq: str = "h", scale: bool = True, batch_size: int = 32,
                 eval_batch_size: Optional[int] = None, num_workers: int = 0, seed: int = 0):
        super().__init__(seq_len, label_len, pred_len, features, target, freq, scale, batch_size, eval_batch_size,
                         num_workers, seed)
        self.save_hyperparameters()
        self.path = pathlib.Path(path)

    def csv_path(self) -> pathlib.Path:
        return self.path

    def borders(self, n_rows: int, seq_len: int):
        return ratio_borders(n_rows, seq_len)
