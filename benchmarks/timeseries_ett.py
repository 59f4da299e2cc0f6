"""Train and test forecasting models on the real ETT files under the standard protocol (L = 96, or --seq-len 336; features M),
several seeds each, and print mean +- std of test MSE / MAE next to the published numbers and the
NLinear-ridge floor (shared/reference/timeseries.md section 5). Writes JSON and a markdown table.

  python benchmarks/timeseries_ett.py --root ../shared/data/ett --models nlinear dlinear \
      --datasets ETTh1 ETTh2 --seeds 2021 2022 2023

`nlinear_ridge` is the floor itself, fitted in closed form on the training windows (deterministic, one run);
`--merge` adds the runs of earlier JSON outputs (e.g. other seeds) to the table; `--set task.lr=1e-4
model.d_model=32` runs a variant of the published configs (rows labelled `model[task.lr=1e-4,...]`).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from ssmkit.timeseries import ETTDataModule
from ssmkit.timeseries.experiments import DATASETS, HORIZONS, MODELS, apply_overrides, build, experiment_config
from ssmkit.timeseries.models import NLinear

RIDGE = "nlinear_ridge"

# (MSE, MAE) published at L = 96, multivariate, standardised scale.
PUBLISHED = {
    "s_mamba": {"ETTh1": [(.386, .405), (.443, .437), (.489, .468), (.502, .489)],
                "ETTh2": [(.296, .348), (.376, .396), (.424, .431), (.426, .444)],
                "ETTm1": [(.333, .368), (.376, .390), (.408, .413), (.475, .448)]},
    "dlinear": {"ETTh1": [(.386, .400), (.437, .432), (.481, .459), (.519, .516)],
                "ETTh2": [(.333, .387), (.477, .476), (.594, .541), (.831, .657)]},
}
NLINEAR_RIDGE_FLOOR = {"ETTh1": [(.383, .392), (.434, .421), (.476, .443), (.470, .462)],
                       "ETTh2": [(.289, .338), (.374, .390), (.413, .425), (.419, .442)],
                       "ETTm1": [(.351, .371), (.389, .390), (.422, .412), (.483, .446)]}
# the same closed-form floor at L = 336 (reference section 5); published numbers above are L = 96 only
NLINEAR_RIDGE_FLOOR_336 = {"ETTh1": [(.370, .391), (.403, .411), (.428, .426), (.434, .450)],
                           "ETTh2": [(.272, .335), (.334, .376), (.359, .400), (.393, .435)],
                           "ETTm1": [(.301, .343), (.336, .363), (.370, .383), (.426, .416)]}
FLOORS = {96: NLINEAR_RIDGE_FLOOR, 336: NLINEAR_RIDGE_FLOOR_336}


def run_one(model: str, dataset: str, H: int, seed: int, root: str, max_epochs: int, workdir: str,
            seq_len: int = 96, overrides=(), log_dir=None) -> dict:
    """Fit with early stopping, reload the best checkpoint, test on every window; metrics and timings.
    With `overrides` (task./model./data.KEY=VALUE) the row's model is labelled `model[overrides]`; with `log_dir`
    the per-epoch train / val metrics go to <log_dir>/<model>_<dataset>_L<L>_H<H>_seed<seed>/metrics.csv."""
    L.seed_everything(seed, workers=True, verbose=False)
    config = apply_overrides(experiment_config(model, dataset, H, seq_len=seq_len, root=root, seed=seed,
                                               max_epochs=max_epochs), overrides)
    task, data, trainer_kwargs = build(config)
    logger = (CSVLogger(log_dir, name=f"{model}_{dataset}_L{seq_len}_H{H}_seed{seed}", version="")
              if log_dir else False)
    trainer = L.Trainer(default_root_dir=workdir, logger=logger, enable_progress_bar=False,
                        enable_model_summary=False, **trainer_kwargs)
    t0 = time.perf_counter()
    trainer.fit(task, data)
    fit_s = time.perf_counter() - t0
    res = trainer.test(task, data, ckpt_path="best", verbose=False)[0]
    label = f"{model}[{','.join(overrides)}]" if overrides else model
    return {"model": label, "dataset": dataset, "seq_len": seq_len, "pred_len": H, "seed": seed, "mse": res["test/mse"],
            "mae": res["test/mae"], "n_test_windows": int(res["test/n_windows"]), "epochs": trainer.current_epoch,
            "fit_seconds": fit_s, "seconds_per_epoch": fit_s / max(1, trainer.current_epoch),
            "best_val_mse": float(trainer.checkpoint_callback.best_model_score)}


def run_ridge(dataset: str, H: int, root: str, seq_len: int = 96) -> dict:
    """The NLinear-ridge floor: closed-form fit on every training window, scored on every test window."""
    data = ETTDataModule(root, dataset, seq_len=seq_len, pred_len=H)
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
    return {"model": RIDGE, "dataset": dataset, "seq_len": seq_len, "pred_len": H, "seed": None,
            "mse": err.pow(2).mean().item(), "mae": err.abs().mean().item(), "n_test_windows": len(x), "epochs": 0,
            "fit_seconds": fit_s, "seconds_per_epoch": fit_s, "best_val_mse": val_mse}


def _ms(values):
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def _mean_pairs(pairs):
    return tuple(statistics.fmean(p[j] for p in pairs) for j in (0, 1))


def summarise(runs: list, seq_len: int = 96) -> list:
    """One row per model x dataset x horizon (and an 'avg' row per model x dataset) with mean / std; published
    numbers only at L = 96, the NLinear-ridge floor of the same L."""
    rows = []
    published = PUBLISHED if seq_len == 96 else {}
    order = MODELS + (RIDGE,)
    keys = sorted({(r["model"], r["dataset"]) for r in runs}, key=lambda k: (order.index(k[0].split("[")[0]), k))
    for model, dataset in keys:
        per_h = []
        for i, H in enumerate(HORIZONS):
            rs = [r for r in runs if (r["model"], r["dataset"], r["pred_len"]) == (model, dataset, H)]
            if not rs:
                continue
            pub = published.get(model, {}).get(dataset)
            row = {"model": model, "dataset": dataset, "H": str(H), "seeds": len(rs),
                   "mse": _ms([r["mse"] for r in rs]), "mae": _ms([r["mae"] for r in rs]),
                   "published": pub[i] if pub else None, "floor": FLOORS[seq_len][dataset][i],
                   "s_per_epoch": statistics.fmean(r["seconds_per_epoch"] for r in rs),
                   "epochs": statistics.fmean(r["epochs"] for r in rs), "n_test": rs[0]["n_test_windows"],
                   "val_mse": (statistics.fmean(r["best_val_mse"] for r in rs)
                               if all("best_val_mse" in r for r in rs) else None)}
            rows.append(row)
            per_h.append((i, row))
        if len(per_h) == len(HORIZONS):
            hrows = [row for _, row in per_h]
            pub = published.get(model, {}).get(dataset)
            floor = FLOORS[seq_len][dataset]
            rows.append({"model": model, "dataset": dataset, "H": "avg", "seeds": hrows[0]["seeds"],
                         "mse": (statistics.fmean(r["mse"][0] for r in hrows), None),
                         "mae": (statistics.fmean(r["mae"][0] for r in hrows), None),
                         "published": _mean_pairs(pub) if pub else None, "floor": _mean_pairs(floor),
                         "s_per_epoch": None, "epochs": None, "n_test": None,
                         "val_mse": (None if any(r["val_mse"] is None for r in hrows)
                                     else statistics.fmean(r["val_mse"] for r in hrows))})
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
    p.add_argument("--root", required=True, help="folder with ETTh1.csv, ETTh2.csv, ETTm1.csv")
    p.add_argument("--models", nargs="+", default=["nlinear", "dlinear"], choices=MODELS + (RIDGE,))
    p.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2"], choices=DATASETS)
    p.add_argument("--horizons", nargs="+", type=int, default=list(HORIZONS), choices=HORIZONS)
    p.add_argument("--seeds", nargs="+", type=int, default=[2021, 2022, 2023])
    p.add_argument("--seq-len", type=int, default=96, choices=sorted(FLOORS), help="look-back L")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="benchmarks/results/timeseries_ett")
    p.add_argument("--log-dir", default=None, help="keep each run's per-epoch metrics.csv here (e.g. to see "
                   "where validation turns)")
    p.add_argument("--merge", nargs="*", default=[], help="earlier JSON outputs whose runs join the table")
    p.add_argument("--set", nargs="*", default=[], metavar="PART.KEY=VALUE", dest="overrides",
                   help="change the published config: task.lr=1e-4, model.d_model=32, data.batch_size=64")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs, merged_by_machine = [], {}
    for path in args.merge:
        earlier = json.loads(pathlib.Path(path).read_text())
        runs += [r for r in earlier["runs"] if r.get("seq_len", 96) == args.seq_len]
        merged_by_machine.setdefault(earlier["machine"], []).append(path)
    # file names only: the folders they were merged from are local to the machine that ran them
    merged = [f"merged from {pathlib.Path(paths[0]).name if len(paths) == 1 else f'{len(paths)} files'}: {m}"
              for m, paths in merged_by_machine.items()]
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            for dataset in args.datasets:
                for H in args.horizons:
                    for seed in ([None] if model == RIDGE else args.seeds):
                        r = (run_ridge(dataset, H, args.root, args.seq_len) if model == RIDGE else
                             run_one(model, dataset, H, seed, args.root, args.max_epochs, work, args.seq_len,
                                     args.overrides, args.log_dir))
                        print(json.dumps(r), flush=True)
                        runs.append(r)
    rows = summarise(runs, args.seq_len)
    table = markdown(rows)
    machine = (f"L = {args.seq_len}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
               f"torch {torch.__version__}")
    machine = "; ".join([f"this run: {machine}"] + merged) if merged else machine
    print(f"\n{machine}\n{table}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "machine": machine, "runs": runs,
                                                    "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(f"{machine}\n\n{table}\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
