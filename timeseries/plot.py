"""Forecast plots: history, forecast and (when known) truth for chosen variables, one panel each."""
from __future__ import annotations

import pathlib
from typing import Optional, Sequence

import numpy as np


def plot_forecast(history: np.ndarray, forecast: np.ndarray, path, columns: Sequence[str],
                  truth: Optional[np.ndarray] = None, variables: Optional[Sequence[str]] = None) -> pathlib.Path:
    """Write a PNG: history (L, C) then forecast (H, C) [and truth (H, C)] for `variables` (default: last)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(columns)
    variables = list(variables) if variables else columns[-1:]
    missing = [v for v in variables if v not in columns]
    if missing:
        raise ValueError(f"variables {missing} not among the columns {columns}")
    L, H = len(history), len(forecast)
    fig, axes = plt.subplots(len(variables), 1, figsize=(9, 2.6 * len(variables)), squeeze=False)
    for ax, name in zip(axes[:, 0], variables):
        c = columns.index(name)
        ax.plot(np.arange(L), history[:, c], color="0.3", label="history")
        if truth is not None:
            ax.plot(np.arange(L, L + H), truth[:, c], color="tab:green", label="truth")
        ax.plot(np.arange(L, L + H), forecast[:, c], color="tab:red", label="forecast")
        ax.axvline(L - 0.5, color="0.7", linestyle=":")
        ax.set_ylabel(name)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
