"""benchmarks/gpu_scan.py without a GPU: its CPU smoke run (`--device cpu --quick`, Triton interpreted) writes
passing rows for both ops, its checks catch a wrong backend, and asking for CUDA where there is none exits 2."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_scan.py"


@pytest.fixture(scope="module")
def gpu_scan():
    spec = importlib.util.spec_from_file_location("_ssmkit_bench_gpu_scan", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.heavy  # runs the whole GPU benchmark script under Triton's interpreter: 25-40 s, `make test-heavy`
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_cpu_quick_run_writes_passing_rows(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "gpu_scan.json").read_text())
    rows = result["rows"]
    assert result["quick"] and result["backends"]["scan"]["triton"] == "ok" == result["backends"]["ssd"]["triton"]
    cases = {(r["op"], r["dtype"], r["L"], r["backend"]) for r in rows}
    assert cases == {(op, d, L, b) for op in ("scan", "ssd") for d in ("bf16", "fp32") for L in (16, 40)
                     for b in ("torch", "triton")}
    for r in rows:
        assert "error" not in r and r["ok_vs_torch_fp32"], r
        assert 0 <= r["err_vs_torch_fp32"] <= r["tolerance"] == {"fp32": 1e-4, "bf16": 2e-2}[r["dtype"]], r
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and r["fwd_bwd_x_vs_torch"] > 0, r
        assert ("ok_vs_ref_fp64" in r) == (r["L"] == 16), r  # the fp64 oracle is checked at the smallest length
        assert r.get("ok_vs_ref_fp64", True), r
    md = (tmp_path / "gpu_scan.md").read_text()
    assert md.startswith(f"# GPU scan benchmark ({result['date']})") and md.count("| triton |") == 8


def test_checks_fail_a_wrong_backend(gpu_scan):
    """A backend off by 1e-3 relative in its output fails both the fp32 torch and the fp64 oracle check."""
    op = gpu_scan._ops()["scan"]
    off = op._replace(call=lambda backend, s, t: op.call("torch", s, t) * (1.001 if backend == "off" else 1.0))
    rows = gpu_scan.bench_case(off, "scan", op.quick_shape, 9, "fp32", ["torch", "off"], check_ref=True, repeats=1,
                               warmup=0, device=torch.device("cpu"))
    good, bad = rows
    assert gpu_scan.passed(good) and good["err_vs_ref_fp64"] < 1e-6
    assert not bad["ok_vs_torch_fp32"] and not bad["ok_vs_ref_fp64"] and not gpu_scan.passed(bad)
    assert bad["err_vs_torch_fp32"] == pytest.approx(1e-3, rel=1e-2)


def test_missing_cuda_exits_2_naming_the_cpu_smoke_test(gpu_scan, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_scan.main(["--device", "cuda", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "--device cpu --quick" in err
    assert not list(tmp_path.iterdir())
