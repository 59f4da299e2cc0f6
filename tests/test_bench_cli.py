"""`ssmkit bench`: lists the benchmarks of a checkout, and says what to do when run outside one."""
import pathlib

from ssmkit import bench


def test_bench_outside_a_checkout_says_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "BENCH_DIR", tmp_path / "missing")
    assert bench.main(["scan"]) == 2
    err = capsys.readouterr().err
    assert "source checkout" in err and "benchmarks/NAME.py" in err


def test_bench_unknown_name_lists_the_benchmarks(capsys):
    assert bench.main(["no_such_benchmark"]) == 2
    err = capsys.readouterr().err
    present = sorted(p.stem for p in pathlib.Path(bench.BENCH_DIR).glob("*.py") if not p.stem.startswith("_"))
    assert "scan" in present and all(name in err for name in present)
