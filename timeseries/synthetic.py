"""A built-in ETT-like series (daily and weekly seasonality, trend, noise) written as a real CSV, so tests
and the demo go through the same reader and protocol as the real files."""
from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


def synthetic_ett_frame(n_rows: int = 17420, freq: str = "h", seed: int = 0, start: str = "2016-07-01") -> pd.DataFrame:
    """ETT-shaped frame: `date` at hourly ('h') or 15-minute ('t') steps, then the 7 ETT columns (OT last)."""
    rng = np.random.default_rng(seed)
    step = {"h": "h", "t": "15min"}[freq]
    dates = pd.date_range(start, periods=n_rows, freq=step)
    hours = (dates - dates[0]) / pd.Timedelta(hours=1)
    t = np.asarray(hours, dtype=np.float64)
    daily, weekly = np.sin(2 * np.pi * t / 24), np.sin(2 * np.pi * t / (24 * 7))
    cols = {"date": dates.strftime("%Y-%m-%d %H:%M:%S")}
    for i, name in enumerate(ETT_COLUMNS):
        trend = 0.002 * (i + 1) * t / 24
        noise = np.cumsum(rng.normal(0, 0.05, n_rows)) * 0.2 + rng.normal(0, 0.3, n_rows)
        cols[name] = np.round(5 + i + (2 + 0.3 * i) * daily + (1 - 0.1 * i) * weekly + trend + noise, 3)
    return pd.DataFrame(cols)


def write_synthetic_ett(path, n_rows: int = 17420, freq: str = "h", seed: int = 0) -> pathlib.Path:
    """Write `synthetic_ett_frame` as CSV at `path` (e.g. `<dir>/ETTh1.csv`) and return the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_ett_frame(n_rows, freq, seed).to_csv(path, index=False)
    return path
