"""`ssmkit forecast`: forecast the next H steps after the end of a CSV (or after a chosen row, to compare with known
truth) with a trained ForecastTask checkpoint; and `ssmkit forecast fit`: train on a user's own CSV under the
protocol split, test, and write the metrics, the checkpoint and a forecast plot."""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from .data import StandardScaler, read_series_csv, time_features
from .plot import plot_forecast
from .task import ForecastTask


def load_task(checkpoint) -> ForecastTask:
    """ForecastTask from a checkpoint; a missing, truncated, foreign or garbage file raises an error naming it."""
    path = pathlib.Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty checkpoint file")
    try:
        task = ForecastTask.load_from_checkpoint(path, map_location="cpu")
    except Exception as e:  # torch / zip / pickle / Lightning each raise their own type for a bad file
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable ForecastTask checkpoint (truncated, corrupt or another kind of "
                         f"file): {type(e).__name__}: {first}") from e
    if task.data_info is None:
        raise ValueError(f"{path}: the checkpoint has no data record (columns, scaler); it was not written by "
                         f"ForecastTask training on a forecasting data module")
    return task


def forecast_frame(task: ForecastTask, csv, end: Optional[int] = None):
    """(forecast DataFrame with future dates, history (L, C) array, truth (H, C) array or None), CSV units.

    `end` is the number of data rows used as known history (default: all); rows after it, when present, are the truth.
    """
    info = task.data_info
    if info is None:
        raise ValueError("the task has no data record: load a checkpoint written by ForecastTask training")
    date_col = info.get("date_col", "date")
    df = read_series_csv(csv, date_col, info.get("encoding", "utf-8"))
    missing = [c for c in info["columns"] if c not in df.columns]
    if missing:
        raise ValueError(f"{csv}, line 1: columns {missing} used in training are missing")
    L, H, k = info["seq_len"], info["pred_len"], info["n_targets"]
    end = len(df) if end is None else end
    if not L <= end <= len(df):
        raise ValueError(f"{csv}: end must be in [{L}, {len(df)}] (need seq_len = {L} rows of history), got {end}")
    values = df[info["columns"]].to_numpy(np.float64)
    scaler = StandardScaler(info["mean"], info["scale"]) if info["mean"] is not None else None
    scaled = scaler.transform(values) if scaler else values
    if date_col is None:
        future_labels = {"row": np.arange(end, end + H)}
        marks = np.zeros((L, 1))
    else:
        dates = pd.DatetimeIndex(df[date_col])
        step = df.attrs["step"]
        future = pd.date_range(dates[end - 1] + step, periods=H, freq=step)
        future_labels = {date_col: future.strftime("%Y-%m-%d %H:%M:%S")}
        marks = time_features(dates[end - L:end], info["freq"])
    x = torch.as_tensor(scaled[end - L:end], dtype=torch.float32)[None]
    x_mark = torch.as_tensor(marks, dtype=torch.float32)[None]
    task.eval()
    with torch.no_grad():
        pred = task(x, x_mark)[0, :, -k:].double().numpy()
    if scaler:
        pred = scaler.inverse_transform(pred, slice(-k, None))
    targets = info["columns"][-k:]
    frame = pd.DataFrame({**future_labels, **{c: pred[:, i] for i, c in enumerate(targets)}})
    truth = values[end:end + H, -k:] if end + H <= len(df) else None
    return frame, values[end - L:end, -k:], truth


def forecast_to_files(checkpoint, csv, out_csv, plot: Optional[str] = None, variables: Optional[Sequence[str]] = None,
                      end: Optional[int] = None) -> List[pathlib.Path]:
    """Load `checkpoint`, forecast after `end` rows of `csv`, write `out_csv` (and the `plot` PNG); return paths."""
    task = load_task(checkpoint)
    frame, history, truth = forecast_frame(task, csv, end)
    out_csv = pathlib.Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out_csv, index=False)
    written = [out_csv]
    if plot:
        columns = list(frame.columns[1:])
        written.append(plot_forecast(history, frame[columns].to_numpy(), plot, columns, truth=truth,
                                     variables=variables))
    return written


def _predict_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmkit forecast", description="Forecast the next H steps after a CSV's end "
                                "(or after row --end) with a ForecastTask checkpoint; write CSV and optionally PNG. "
                                "`ssmkit forecast fit -h`: train on your own CSV.")
    p.add_argument("--checkpoint", required=True, help="a .ckpt written by `ssmkit fit` on a timeseries config")
    p.add_argument("--csv", required=True, help="series CSV with a date column and the training columns")
    p.add_argument("--out", required=True, help="forecast CSV to write")
    p.add_argument("--plot", help="PNG of history, forecast and (when known) truth")
    p.add_argument("--variables", nargs="+", help="columns to plot (default: all forecast columns)")
    p.add_argument("--end", type=int, help="data rows used as history (default: all); later rows are the truth")
    args = p.parse_args(argv)
    for path in forecast_to_files(args.checkpoint, args.csv, args.out, plot=args.plot, variables=args.variables,
                                  end=args.end):
        print(path.resolve())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`ssmkit forecast --checkpoint CKPT --csv FILE --out OUT.csv [--plot OUT.png] [--variables ...] [--end N]`,
    or `ssmkit forecast fit --csv FILE --target COL --horizon H [--model s_mamba] ...` (see `.fit_csv`).
    A bad checkpoint or CSV ends with one line naming the file and the reason (exit code 1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["fit"]:
            from .fit_csv import main as fit_main
            return fit_main(argv[1:])
        return _predict_main(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"ssmkit forecast: error: {e}", file=sys.stderr)
        return 1


