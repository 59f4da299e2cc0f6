"""The Triton selective scan (`kernels/triton`) under Triton's CPU interpreter (TRITON_INTERPRET=1) against the
float64 oracle: outputs and gradients of every input, on tiny shapes (the interpreter is slow)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ssmkit import kernels

_spec = importlib.util.spec_from_file_location("_ssmkit_scan_cases_t", Path(__file__).with_name("_scan_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(scope="module")
def tri(triton_scan):
    return triton_scan


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", ["inv", "var", "grp"])
@pytest.mark.parametrize("opts", ["plain", "all"])
def test_layouts_and_options(tri, dtype, layout, opts):
    on = opts == "all"
    case, sp = cases.make_case(batch=2, dim=4, nstate=3, length=37, layout=layout, dtype=dtype, has_D=on, has_z=on,
                               has_bias=on, softplus=on, has_h0=on)
    cases.assert_matches_oracle(tri, case, sp, TOL[dtype])


@pytest.mark.parametrize("length", [1, 7, 16, 33])
def test_lengths(tri, length):
    case, sp = cases.make_case(batch=1, dim=2, nstate=4, length=length, layout="var", dtype=torch.float32)
    cases.assert_matches_oracle(tri, case, sp, TOL[torch.float32])


@pytest.mark.parametrize("dim,groups", [(12, 3), (6, 2)])
def test_channel_blocks_inside_groups(tri, dim, groups):
    """Blocks of channels must not straddle groups (dim 12 / 3 groups: blocks of 4; dim 6 / 2 groups: of 1)."""
    case, sp = cases.make_case(batch=1, dim=dim, nstate=5, length=9, layout="grp", groups=groups,
                               dtype=torch.float64)
    case["C"] = torch.randn(dim, 5, dtype=torch.float64)  # mixed: grouped B, time-invariant C
    cases.assert_matches_oracle(tri, case, sp, TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs(tri, dtype):
    case, sp = cases.make_case(batch=1, dim=4, nstate=4, length=20, dtype=dtype)
    y, last, grads = cases.outputs_and_grads(tri, case, sp)
    assert y.dtype == dtype and last.dtype == torch.float32
    y_ref, last_ref = cases.scan_oracle(*[case[k] for k in cases.NAMES[:8]], sp, True, case["initial_state"])
    assert cases.rel_err(y, y_ref) < 1e-2 and cases.rel_err(last, last_ref) < 1e-5
    for k, g in grads.items():
        assert g.dtype == case[k].dtype and torch.isfinite(g).all(), k


def test_continuation_with_initial_state(tri):
    case, sp = cases.make_case(batch=1, dim=2, nstate=3, length=30, layout="var", dtype=torch.float64,
                               has_h0=False)
    y, last = cases.call(tri, case, sp)
    cut = 13
    timed = ("u", "delta", "z", "B", "C")
    first = {k: (v[..., :cut] if k in timed else v) for k, v in case.items()}
    second = {k: (v[..., cut:] if k in timed else v) for k, v in case.items()}
    y1, h1 = cases.call(tri, first, sp)
    y2, h2 = cases.call(tri, dict(second, initial_state=h1), sp)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)


def test_needs_cuda_or_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(kernels.BackendUnavailable, match="CUDA tensors"):
        kernels.load("triton", "selective_scan", torch.device("cpu"))
    with pytest.raises(kernels.BackendUnavailable, match="no ssd_nope kernel"):
        kernels.load("triton", "ssd_nope", torch.device("cpu"))
