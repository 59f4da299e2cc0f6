"""`ssmkit bench NAME`: run `benchmarks/NAME.py` of a source checkout (benchmarks are not installed)."""
from __future__ import annotations

import pathlib
import runpy
import sys
from typing import List

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def main(argv: List[str]) -> int:
    if not BENCH_DIR.is_dir():
        print("ssmkit bench: the benchmarks are not installed with the package; they run from a source checkout.\n"
              f"  (looked for {BENCH_DIR})\n"
              "  git clone the ssmkit repository, `pip install -e \".[all]\"` inside it, then run\n"
              "  `ssmkit bench NAME` or `python benchmarks/NAME.py` there.", file=sys.stderr)
        return 2
    names = sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))
    if not argv or argv[0] not in names:
        print(f"usage: ssmkit bench NAME [flags]  (benchmarks in {BENCH_DIR}: {', '.join(names)})", file=sys.stderr)
        return 2
    path = BENCH_DIR / f"{argv[0]}.py"
    sys.argv = [str(path), *argv[1:]]
    sys.path.insert(0, str(BENCH_DIR))  # as `python benchmarks/NAME.py` would: sibling helper modules import
    runpy.run_path(str(path), run_name="__main__")
    return 0
