"""Train and test forecasting models on any dataset of the standard long-term set (or any CSV) under the protocol,
by running the generated configs (configs/timeseries/) through the same LightningCLI as `ssmkit fit`, several seeds
each, and print mean +- std of test MSE / MAE next to the published numbers and the NLinear-ridge floor
(`ssmkit.timeseries.published`). Writes JSON and a markdown table (default: outside the checkout, under the
system's temp folder; --out to choose).

  python benchmarks/timeseries_ett.py --data-dir ../shared/data/ett --models nlinear dlinear \
      --datasets ETTh1 ETTh2 --seeds 2021 2022 2023
  python benchmarks/timeseries_ett.py --models s_mamba --datasets weather --data-dir ~/data/weather
  python benchmarks/timeseries_ett.py --models s_mamba --datasets ~/my_series.csv --horizons 24

A dataset name picks `<model>_<dataset>_<H>.yaml` and reads `--data-dir/<the file the config names>`; a CSV path
uses the config of the standard dataset with that file name (weather.csv -> Weather), else ETTh1's settings, with the
split the file name implies (ETT borders for ETTh* / ETTm*, 70/10/20 otherwise). `nlinear_ridge` is the floor
itself, fitted in closed form (deterministic, one run); `--merge` adds the runs of earlier JSON outputs;
`--set --model.init_args.lr=1e-4 --model.init_args.model.init_args.d_model=32` passes dotted LightningCLI
overrides to every run (rows labelled `model[overrides]`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import platform
import statistics
import tempfile
import time

import torch

from ssmkit.cli import lightning_cli
from ssmkit.timeseries.data import CSVDataModule
from ssmkit.timeseries.models import NLinear
from ssmkit.timeseries.published import floor, horizons, published

RIDGE = "nlinear_ridge"
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "timeseries"


def _make_configs():
    spec = importlib.util.spec_from_file_location("make_configs", CONFIGS / "make_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MC = _make_configs()
MODELS = MC.MODELS
BY_LOWER = {name.lower(): name for name in MC.DATASETS}
BY_FILE = {pathlib.Path(d["path"]).name: name for name, d in MC.DATASETS.items()}


def resolve(entry: str, data_dir) -> tuple:
    """(label, standard dataset whose config applies, data file) for a dataset name or a CSV path."""
    if entry.lower() in BY_LOWER:
        name = BY_LOWER[entry.lower()]
        expected = pathlib.Path(MC.DATASETS[name]["path"])
        root = pathlib.Path(data_dir) if data_dir else pathlib.Path(".")
        path = next((p for p in (root / expected.name, root / expected) if p.is_file()), root / expected.name)
        return name, name, path
    path = pathlib.Path(entry).expanduser()
    if not path.is_file():
        raise SystemExit(f"--datasets: {entry!r} is neither a dataset of the standard set {list(MC.DATASETS)} nor a "
                         f"file")
    return path.stem, BY_FILE.get(path.name, "ETTh1"), path


def run_one(model: str, label: str, dataset: str, path, H: int, seed: int, workdir: str, seq_len: int,
            max_epochs=None, overrides=(), log_dir=None) -> dict:
    """`ssmkit fit` on the config (fit, early stopping, test of the best checkpoint by TestAfterFit)."""
    config = CONFIGS / f"{MC.config_name(model, dataset, H, seq_len)}.yaml"
    if not config.is_file():
        raise SystemExit(f"no config {config.name} (model {model}, {dataset}, H = {H}, L = {seq_len})")
    logger = "false"
    if log_dir:
        logger = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {
            "save_dir": str(log_dir), "name": f"{model}_{label}_L{seq_len}_H{H}_seed{seed}", "version": ""}})
    args = ["fit", "--config", str(config), f"--data.init_args.path={path}", f"--seed_everything={seed}",
            f"--data.init_args.seed={seed}", f"--trainer.default_root_dir={workdir}", f"--trainer.logger={logger}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *overrides]
    if max_epochs is not None:
        args.append(f"--trainer.max_epochs={max_epochs}")
    t0 = time.perf_counter()
    cli = lightning_cli(args)
    seconds = time.perf_counter() - t0
    trainer = cli.trainer
    tested = next(c for c in trainer.callbacks if type(c).__name__ == "TestAfterFit")
    res = tested.results[0]
    best = trainer.checkpoint_callback.best_model_score
    return {"model": f"{model}[{','.join(overrides)}]" if overrides else model, "dataset": label, "seq_len": seq_len,
            "pred_len": H, "seed": seed, "mse": res["test/mse"], "mae": res["test/mae"],
            "n_test_windows": int(res["test/n_windows"]), "epochs": trainer.current_epoch, "fit_seconds": seconds,
            "seconds_per_epoch": seconds / max(1, trainer.current_epoch),
            "best_val_mse": None if best is None else float(best), "config": config.name}


def run_ridge(label: str, dataset: str, path, H: int, seq_len: int) -> dict:
    """The NLinear-ridge floor: closed-form fit on every training window, scored on every test window."""
    d = MC.DATASETS[dataset]
    data = CSVDataModule(str(path), seq_len=seq_len, pred_len=H, **d.get("data", {}))
    data.setup("fit")
    model = NLinear(seq_len, H, data.n_inputs)
    t0 = time.perf_counter()
    model.fit_closed_form(*data.datasets["train"].all_windows())
    fit_s = time.perf_counter() - t0
    with torch.no_grad():
        val_x, val_y = data.datasets["val"].all_windows()
        val_mse = (model(val_x) - val_y).pow(2).mean().item()
        x, y = data.datasets["test"].all_windows()
        err = model(x) - y
    return {"model": RIDGE, "dataset": label, "seq_len": seq_len, "pred_len": H, "seed": None,
            "mse": err.pow(2).mean().item(), "mae": err.abs().mean().item(), "n_test_windows": len(x), "epochs": 0,
            "fit_seconds": fit_s, "seconds_per_epoch": fit_s, "best_val_mse": val_mse}


def _ms(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list, seq_len: int = 96) -> list:
    """One row per model x dataset x horizon (and an 'avg' row when every horizon ran) with mean / std, the
    published numbers (L = 96 only) and the NLinear-ridge floor of the same L."""
    rows = []
    order = MODELS + (RIDGE,)
    keys = sorted({(r["model"], r["dataset"]) for r in runs},
                  key=lambda k: (order.index(k[0].split("[")[0]) if k[0].split("[")[0] in order else 99, k))
    for model, dataset in keys:
        base = model.split("[")[0]
        hs = horizons(dataset)
        per_h = []
        for H in hs:
            rs = [r for r in runs if (r["model"], r["dataset"], r["pred_len"]) == (model, dataset, H)]
            if not rs:
                continue
            vals = [r.get("best_val_mse") for r in rs]
            per_h.append({"model": model, "dataset": dataset, "H": str(H), "seeds": len(rs),
                          "mse": _ms([r["mse"] for r in rs]), "mae": _ms([r["mae"] for r in rs]),
                          "published": published(base, dataset, H) if seq_len == 96 else None,
                          "floor": floor(dataset, H, seq_len),
                          "s_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in rs),
                          "epochs": statistics.fmean(r["epochs"] for r in rs), "n_test": rs[0]["n_test_windows"],
                          "val_mse": None if None in vals else statistics.fmean(vals)})
        rows += per_h
        if len(per_h) == len(hs):
            vals = [r["val_mse"] for r in per_h]
            rows.append({"model": model, "dataset": dataset, "H": "avg", "seeds": per_h[0]["seeds"],
                         "mse": (statistics.fmean(r["mse"][0] for r in per_h), None),
                         "mae": (statistics.fmean(r["mae"][0] for r in per_h), None),
                         "published": published(base, dataset) if seq_len == 96 else None,
                         "floor": floor(dataset, None, seq_len), "s_per_epoch": None, "epochs": None,
                         "n_test": None, "val_mse": None if None in vals else statistics.fmean(vals)})
    return rows


def markdown(rows: list) -> str:
    def pm(v):
        return f"{v[0]:.3f}" if v[1] is None else f"{v[0]:.3f} ± {v[1]:.3f}"

    def pair(p):
        return "—" if p is None else f"{p[0]:.3f} / {p[1]:.3f}"
    out = ["| model | dataset | H | seeds | test windows | MSE | MAE | published MSE / MAE | NLinear-ridge floor "
           "| best val MSE | epochs | s / epoch |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epochs = "" if r["epochs"] is None else f"{r['epochs']:.1f}"
        spe = "" if r["s_per_epoch"] is None else f"{r['s_per_epoch']:.1f}"
        val = "" if r["val_mse"] is None else f"{r['val_mse']:.4f}"
        out.append(f"| {r['model']} | {r['dataset']} | {r['H']} | {r['seeds']} | {r['n_test'] or ''} | {pm(r['mse'])} "
                   f"| {pm(r['mae'])} | {pair(r['published'])} | {pair(r['floor'])} | {val} | {epochs} | {spe} |")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", "--root", dest="data_dir", help="folder holding the dataset files (by file name "
                   "or the config's relative path); not needed for CSV paths")
    p.add_argument("--models", nargs="*", default=["nlinear", "dlinear"], choices=MODELS + (RIDGE,),
                   help="none (`--models` alone) with --merge: only re-tabulate earlier runs")
    p.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2"],
                   help=f"names of the standard set ({', '.join(MC.DATASETS)}; any case) or CSV paths")
    p.add_argument("--horizons", nargs="+", type=int, help="default: the dataset's four (ILI 24..60, else 96..720)")
    p.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022, 2023])
    p.add_argument("--seq-len", type=int, help="look-back L (default: the dataset's standard one; 336 has "
                   "SpaceTime configs on ETT)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=str(pathlib.Path(tempfile.gettempdir()) / "ssmkit_bench" / "timeseries_ett"),
                   help="output stem: writes OUT.json and OUT.md (default under the temp folder)")
    p.add_argument("--log-dir", default=None, help="keep each run's per-epoch metrics.csv here")
    p.add_argument("--merge", nargs="*", default=[], help="earlier JSON outputs whose runs join the table")
    p.add_argument("--set", nargs=argparse.REMAINDER, default=[], dest="overrides",
                   help="dotted LightningCLI overrides for every run (must come last), e.g. --set "
                        "--model.init_args.lr=1e-4 --data.init_args.batch_size=64")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs, merged_by_machine = [], {}
    seq_lens = set()
    for path in args.merge:
        earlier = json.loads(pathlib.Path(path).read_text())
        runs += earlier["runs"]
        merged_by_machine.setdefault(earlier["machine"], []).append(path)
    merged = [f"merged from {pathlib.Path(paths[0]).name if len(paths) == 1 else f'{len(paths)} files'}: {m}"
              for m, paths in merged_by_machine.items()]
    with tempfile.TemporaryDirectory() as work:
        for entry in args.datasets:
            label, dataset, path = resolve(entry, args.data_dir)
            seq_len = args.seq_len or MC.DATASETS[dataset].get("seq_len", 96)
            seq_lens.add(seq_len)
            for model in args.models:
                for H in args.horizons or horizons(dataset):
                    for seed in ([None] if model == RIDGE else args.seeds):
                        r = (run_ridge(label, dataset, path, H, seq_len) if model == RIDGE else
                             run_one(model, label, dataset, path, H, seed, work, seq_len, args.max_epochs,
                                     args.overrides, args.log_dir))
                        print(json.dumps(r), flush=True)
                        runs.append(r)
    seq_len = seq_lens.pop() if len(seq_lens) == 1 else 96
    runs = [r for r in runs if r.get("seq_len", 96) == seq_len]
    rows = summarise(runs, seq_len)
    table = markdown(rows)
    machine = (f"L = {seq_len}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}")
    machine = "; ".join([f"this run: {machine}"] + merged) if merged else machine
    print(f"\n{machine}\n{table}")
    out = pathlib.Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "machine": machine, "runs": runs,
                                                    "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"{machine}\n\n{table}\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
