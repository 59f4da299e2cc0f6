"""`ssmkit demo`: a short training tour of each installed domain, ending with one summary table.

Each tour stop is a module with `demo(out_dir, steps) -> DemoResult`; a domain whose module or extra is missing
is listed as skipped with the reason.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import pathlib
import time
import warnings
from typing import List

from rich.console import Console
from rich.table import Table

# (name, module, default steps)
TOUR = [
    ("core", "ssmkit.selective_copy", 300),
    ("vision", "ssmkit.vision.demo", 60),
    ("timeseries", "ssmkit.timeseries.demo", 60),
    ("audio", "ssmkit.audio.demo", 60),
    ("genomics", "ssmkit.genomics.demo", 60),
    ("recsys", "ssmkit.recsys.demo", 60),
]


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the domain package itself failed to import (missing extra)
        return False


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="ssmkit demo", description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs/demo"), help="output folder")
    parser.add_argument("--only", default="", help="comma-separated tour stops, e.g. core,vision")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every stop's training steps")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {name for name, _, _ in TOUR}
    if unknown:
        parser.error(f"--only: unknown stops {sorted(unknown)}; known: {[n for n, _, _ in TOUR]}")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):  # the tour prints its own summary
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    console = Console()
    results, skipped = [], []
    start = time.perf_counter()
    for name, module, steps in TOUR:
        if only and name not in only:
            continue
        if not _present(module):
            skipped.append((name, f"{module} is not available"))
            continue
        console.print(f"[bold]ssmkit demo[/bold]: {name} ...")
        try:
            demo = importlib.import_module(module).demo
        except ImportError as e:
            skipped.append((name, str(e)))
            continue
        results.append((name, demo(args.out / name, max(1, int(steps * args.steps_scale)))))
    table = Table(title=f"ssmkit demo ({time.perf_counter() - start:.0f} s)")
    for col in ("domain", "model", "task", "steps", "first loss", "last loss", "metric", "seconds"):
        table.add_column(col, justify="right" if col in ("steps", "first loss", "last loss", "seconds") else "left")
    for name, r in results:
        table.add_row(name, r.model, r.task, str(r.steps), f"{r.first_loss:.4f}", f"{r.last_loss:.4f}",
                      f"{r.metric_name} {r.metric:.4f}", f"{r.seconds:.1f}")
    console.print(table)
    for name, r in results:
        for path in r.outputs:
            console.print(f"  {name}: {path}")
    for name, why in skipped:
        console.print(f"  skipped {name}: {why}")
    return 0
