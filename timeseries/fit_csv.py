"""`ssmkit forecast fit --csv FILE --target COL --horizon H [--model s_mamba]`: forecast a user's own CSV the way
the benchmarks do. The file's step picks the time features, its columns the channel count and its name the split
(ETT borders for ETTh* / ETTm*, 70/10/20 otherwise); the model trains with early stopping on validation MSE, the
best checkpoint is tested on every test window, and the metrics (JSON), the checkpoint and a forecast of the H
steps after the file's end (CSV + PNG) are written to --out."""
from __future__ import annotations

import argparse
import json
import pathlib
from typing import Sequence

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger

from .data import CSVDataModule, read_series_csv
from .task import ForecastTask

# Settings for a series without published ones: the models' ETT settings at a CPU-friendly size
# (the per-dataset official settings are the configs in configs/timeseries/).
MODELS = {
    "s_mamba": ({"class_path": "ssmkit.timeseries.models.SMamba",
                 "init_args": {"d_model": 128, "d_ff": 128, "e_layers": 2, "d_state": 2}}, {"lr": 1e-4}),
    "nlinear": ({"class_path": "ssmkit.timeseries.models.NLinear"}, {"lr": 5e-3}),
    "dlinear": ({"class_path": "ssmkit.timeseries.models.DLinear"}, {"lr": 5e-3}),
    "spacetime": ({"class_path": "ssmkit.timeseries.models.SpaceTime",
                   "init_args": {"d_model": 128, "n_blocks": 1, "kernel_dim": 64, "n_kernels": 16, "dropout": 0.25}},
                  {"lr": 1e-3, "optimizer": "adamw", "scheduler": "cosine", "weight_decay": 1e-4}),
    "chimera": ({"class_path": "ssmkit.timeseries.models.Chimera",
                 "init_args": {"d_model": 16, "e_layers": 1, "d_state": 8, "kernel_dim": 32, "n_kernels": 8}},
                {"lr": 1e-2}),
}


def fit_csv(csv, target: str, horizon: int, out, model: str = "s_mamba", seq_len: int = 96, max_epochs: int = 10,
            patience: int = 3, batch_size: int = 32, seed: int = 2021, features: str = "M", irregular: str = "error",
            progress: bool = True, **trainer_kwargs) -> dict:
    """Train `model` on `csv`, test its best checkpoint, write metrics.json, the checkpoint and forecast.csv/.png
    under `out`; returns the metrics record (with the paths written)."""
    from .forecast import forecast_to_files

    if model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
    step = read_series_csv(csv, irregular=irregular).attrs["step"]
    freq = "t" if step < pd.Timedelta(hours=1) else "h"
    out = pathlib.Path(out)
    L.seed_everything(seed, workers=True, verbose=False)
    data = CSVDataModule(str(csv), seq_len=seq_len, label_len=seq_len // 2, pred_len=horizon, features=features,
                         target=target, freq=freq, batch_size=batch_size, seed=seed, irregular=irregular)
    spec, task_args = MODELS[model]
    task = ForecastTask(spec, **task_args)
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/loss", mode="min",
                           save_top_k=1, enable_version_counter=False)
    callbacks = [EarlyStopping(monitor="val/loss", mode="min", patience=patience), best]
    trainer = L.Trainer(max_epochs=max_epochs, default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
                        callbacks=callbacks + ([RichProgressBar()] if progress else []),
                        enable_progress_bar=progress, **trainer_kwargs)
    trainer.fit(task, data)
    tested = next(c for c in trainer.callbacks if type(c).__name__ == "TestAfterFit")
    ckpt = best.best_model_path or str(out / "checkpoints" / "last.ckpt")
    if not best.best_model_path:
        trainer.save_checkpoint(ckpt)
    record = {"csv": str(csv), "target": target, "horizon": horizon, "model": model, "seq_len": seq_len,
              "step": str(step), "freq": freq, "channels": data.n_inputs, "protocol": data.protocol,
              "n_windows": data.n_windows, "test": tested.results[0] if tested.results else None,
              "checkpoint": ckpt}
    paths = forecast_to_files(ckpt, csv, out / "forecast.csv", plot=str(out / "forecast.png"), variables=[target])
    record["forecast"] = [str(p) for p in paths]
    (out / "metrics.json").write_text(json.dumps(record, indent=1))
    return record


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="ssmkit forecast fit", description=__doc__)
    p.add_argument("--csv", required=True, help="series CSV: a `date` column, then numeric columns")
    p.add_argument("--target", required=True, help="the column to forecast (moved last; with --features M all "
                   "columns are forecast and scored, with MS only this one)")
    p.add_argument("--horizon", type=int, required=True, help="steps to forecast (H)")
    p.add_argument("--model", default="s_mamba", choices=sorted(MODELS))
    p.add_argument("--seq-len", type=int, default=96, help="look-back L")
    p.add_argument("--features", default="M", choices=("M", "MS", "S"))
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--irregular", default="error", choices=("error", "warn"),
                   help="repeated or missing timestamps: refuse the file (default) or keep its rows with a warning")
    p.add_argument("--out", default="forecast_fit", help="folder for metrics.json, checkpoints/, forecast.csv/.png")
    args = p.parse_args(argv)
    record = fit_csv(args.csv, args.target, args.horizon, args.out, model=args.model, seq_len=args.seq_len,
                     max_epochs=args.max_epochs, batch_size=args.batch_size, seed=args.seed,
                     features=args.features, irregular=args.irregular)
    test = record["test"] or {}
    print(f"test MSE {test.get('test/mse', float('nan')):.4f}  MAE {test.get('test/mae', float('nan')):.4f} on "
          f"{record['n_windows']['test']} windows ({record['protocol']} split, {record['channels']} channels, "
          f"step {record['step']})")
    for path in [pathlib.Path(args.out) / "metrics.json", record["checkpoint"], *record["forecast"]]:
        print(pathlib.Path(path).resolve())
    return 0
