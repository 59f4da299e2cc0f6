"""`ssmkit demo` step: S-Mamba forecasts a built-in ETT-like series through the real CSV + ETT protocol path."""
from __future__ import annotations

import pathlib
import time

import torch

from ssmkit.train import DemoResult, LossHistory, demo_trainer, seed, smoothed

from .data import ETTDataModule
from .plot import plot_forecast
from .synthetic import write_synthetic_ett
from .task import ForecastTask


def demo(out_dir: pathlib.Path, steps: int = 60) -> DemoResult:
    """Write a synthetic ETTh1.csv, train a small S-Mamba (L = 96, H = 24) for `steps` steps, test it on every
    test window and plot one forecast of OT; returns the summary row."""
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    seed(0)
    csv = write_synthetic_ett(out_dir / "data" / "ETTh1.csv")
    data = ETTDataModule(str(csv.parent), "ETTh1", seq_len=96, label_len=48, pred_len=24, batch_size=32,
                         eval_batch_size=256)
    task = ForecastTask({"class_path": "ssmkit.timeseries.models.SMamba",
                         "init_args": {"d_model": 32, "d_ff": 32, "e_layers": 1}},
                        lr=3e-3, scheduler="cosine", test_after_fit=False)
    history = LossHistory()
    trainer = demo_trainer(out_dir, steps, [history], limit_val_batches=2)
    trainer.fit(task, data)
    mse = trainer.test(task, data, verbose=False)[0]["test/mse"]
    x, y, x_mark, _ = data.datasets["test"][len(data.datasets["test"]) - 1]
    with torch.no_grad():
        pred = task.eval()(x[None], x_mark[None])[0]
    inv = data.inverse_transform
    plot = plot_forecast(inv(x.double()).numpy(), inv(pred.double()).numpy(), out_dir / "forecast.png",
                         data.splits.columns, truth=inv(y[-24:].double()).numpy(), variables=["HUFL", "OT"])
    first, last = smoothed(history.losses)
    return DemoResult(model="S-Mamba (d_model 32)", task="forecast synthetic ETTh1, L=96 H=24",
                      steps=len(history.losses), first_loss=first, last_loss=last, metric_name="test MSE",
                      metric=float(mse), seconds=time.perf_counter() - t0, outputs=[csv, plot])
