"""`ssmkit bench NAME`: run `benchmarks/NAME.py` of a source checkout (benchmarks are not installed)."""
from __future__ import annotations

import pathlib
import runpy
import sys
from typing import List

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def main(argv: List[str]) -> int:
    names = sorted(p.stem for p in BENCH_DIR.glob("*.py")) if BENCH_DIR.is_dir() else []
    if not argv or argv[0] not in names:
        where = f"benchmarks in {BENCH_DIR}: {', '.join(names)}" if names else f"no benchmarks/ folder at {BENCH_DIR}"
        print(f"usage: ssmkit bench NAME [flags]  ({where})", file=sys.stderr)
        return 2
    path = BENCH_DIR / f"{argv[0]}.py"
    sys.argv = [str(path), *argv[1:]]
    sys.path.insert(0, str(BENCH_DIR))  # as `python benchmarks/NAME.py` would: sibling helper modules import
    runpy.run_path(str(path), run_name="__main__")
    return 0
