"""The C++ CPU selective scan (`kernels/cpu`) against the float64 oracle: outputs and gradients of every input."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ssmkit import kernels

_spec = importlib.util.spec_from_file_location("_ssmkit_scan_cases", Path(__file__).with_name("_scan_cases.py"))
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


@pytest.fixture(scope="module")
def cpp():
    """The compiled backend callable (compiled once per test session; skipped where no compiler works)."""
    try:
        return kernels.load("cpp", "selective_scan", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


OPTIONS = {  # name: (has_D, has_z, has_bias, softplus, has_h0)
    "plain": (False, False, False, False, False),
    "all": (True, True, True, True, True),
    "z_softplus": (False, True, False, True, False),
    "D_bias_h0": (True, False, True, False, True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", ["inv", "var", "grp"])
@pytest.mark.parametrize("opts", list(OPTIONS))
def test_layouts_and_options(cpp, dtype, layout, opts):
    D, z, bias, sp, h0 = OPTIONS[opts]
    case, sp = cases.make_case(length=77, nstate=5, layout=layout, dtype=dtype, has_D=D, has_z=z, has_bias=bias,
                               softplus=sp, has_h0=h0)
    cases.assert_matches_oracle(cpp, case, sp, TOL[dtype])


@pytest.mark.parametrize("length", [1, 7, 64, 129, 1000, 4097])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_lengths(cpp, dtype, length):
    layout = "grp" if length % 2 else "var"
    case, sp = cases.make_case(batch=1, dim=2, nstate=3, length=length, layout=layout, dtype=dtype)
    cases.assert_matches_oracle(cpp, case, sp, TOL[dtype])


@pytest.mark.parametrize("layout", ["inv", "var", "grp"])
@pytest.mark.parametrize("has_h0", [False, True])
def test_batch_blocks_and_no_last_state(cpp, layout, has_h0):
    """A batch of 131 rows (the backward sums parameter gradients in blocks of 2 rows: 66 blocks, the last one
    short), two chunks, and the call most training makes: no last state asked for (the kernel then computes none);
    gradients of every input against the oracle. Then the same with the initial state frozen (no dh0 computed)."""
    case, sp = cases.make_case(batch=131, dim=4, nstate=5, length=70, layout=layout, dtype=torch.float64,
                               has_h0=has_h0)

    def grads_of(fn, c, frozen=()):
        leaves = {k: (v.detach().clone().requires_grad_(k not in frozen) if v is not None else None)
                  for k, v in c.items()}
        y = cases.call(fn, leaves, sp, return_last_state=False)
        gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        present = [k for k in cases.NAMES if leaves[k] is not None and k not in frozen]
        return y, dict(zip(present, torch.autograd.grad((y * gy).sum(), [leaves[k] for k in present])))

    y, grads = grads_of(cpp, case)
    y_ref, grads_ref = grads_of(cases.scan_oracle, case)
    assert cases.rel_err(y, y_ref) < TOL[torch.float64]
    assert set(grads) == set(grads_ref)
    for k in grads_ref:
        assert cases.rel_err(grads[k], grads_ref[k]) < TOL[torch.float64], k
    if has_h0:
        _, frozen = grads_of(cpp, case, frozen=("initial_state",))
        assert "initial_state" not in frozen and torch.equal(frozen["A"], grads["A"])


@pytest.mark.parametrize("nstate", [1, 8, 16, 17, 40])
def test_state_sizes(cpp, nstate):
    """N that is below, equal to and above the vector width (the state is padded to whole vectors)."""
    for dtype in (torch.float32, torch.float64):
        case, sp = cases.make_case(batch=1, dim=3, nstate=nstate, length=70, layout="var", dtype=dtype, groups=1)
        cases.assert_matches_oracle(cpp, case, sp, TOL[dtype])


def test_mixed_groups_and_layouts(cpp):
    """B and C may differ: B grouped with 2 groups, C time-invariant; and B (batch, N, L) with C in 4 groups."""
    case, sp = cases.make_case(batch=2, dim=8, nstate=4, length=50, layout="grp", groups=2)
    case["C"] = torch.randn(8, 4)
    cases.assert_matches_oracle(cpp, case, sp, TOL[torch.float32])
    case, sp = cases.make_case(batch=2, dim=8, nstate=4, length=50, layout="var", dtype=torch.float64)
    case["C"] = torch.randn(2, 4, 4, 50, dtype=torch.float64)
    cases.assert_matches_oracle(cpp, case, sp, TOL[torch.float64])


def test_many_channels_per_group(cpp):
    """More channels than backward segments, and groups of B/C accumulated over several segments."""
    case, sp = cases.make_case(batch=1, dim=96, nstate=4, length=20, layout="grp", groups=3, dtype=torch.float64)
    cases.assert_matches_oracle(cpp, case, sp, TOL[torch.float64])


@pytest.mark.parametrize("length", [1, 5, 70])
def test_gradcheck(cpp, length):
    case, sp = cases.make_case(batch=1, dim=2, nstate=3, length=length, layout="var", dtype=torch.float64)
    names = [k for k in cases.NAMES if case[k] is not None]
    leaves = [case[k].clone().requires_grad_(True) for k in names]

    def f(*xs):
        kw = dict(zip(names, xs))
        return cpp(kw["u"], kw["delta"], kw["A"], kw["B"], kw["C"], kw["D"], kw["z"], kw["delta_bias"], sp, True,
                   kw["initial_state"])

    assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_continuation_with_initial_state(cpp):
    """Scanning [x1; x2] equals scanning x1, then x2 from x1's final state; gradients flow through the state."""
    case, sp = cases.make_case(batch=2, dim=3, nstate=4, length=150, layout="var", dtype=torch.float64, has_h0=False)
    y, last = cases.call(cpp, case, sp)
    cut = 67
    first = {k: (v[..., :cut] if k in ("u", "delta", "z") or (k in ("B", "C") and v.dim() > 2) else v)
             for k, v in case.items()}
    second = {k: (v[..., cut:] if k in ("u", "delta", "z") or (k in ("B", "C") and v.dim() > 2) else v)
              for k, v in case.items()}
    y1, h1 = cases.call(cpp, first, sp)
    second["initial_state"] = h1
    y2, h2 = cases.call(cpp, second, sp)
    torch.testing.assert_close(torch.cat([y1, y2], -1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h2, last, rtol=1e-12, atol=1e-12)
    # gradient of the second piece's output w.r.t. the first piece's u goes through last_state
    u = case["u"].clone().requires_grad_(True)
    full = dict(case, u=u)
    y_full = cases.call(cpp, full, sp)[0]
    (g_full,) = torch.autograd.grad(y_full[..., cut:].sum(), u)
    u1 = u.detach()[..., :cut].clone().requires_grad_(True)
    _, h1 = cases.call(cpp, dict(first, u=u1), sp)
    y2 = cases.call(cpp, dict(second, initial_state=h1), sp)[0]
    (g1,) = torch.autograd.grad(y2.sum(), u1)
    torch.testing.assert_close(g1, g_full[..., :cut], rtol=1e-10, atol=1e-12)


def test_return_last_state_false_and_dtypes(cpp):
    case, sp = cases.make_case(dtype=torch.float32)
    y = cases.call(cpp, case, sp, return_last_state=False)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    y, last = cases.call(cpp, case, sp)
    assert last.dtype == torch.float32 and last.shape == (2, 4, 5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_compute_in_fp32(cpp, dtype):
    case, sp = cases.make_case(dtype=dtype, length=40)
    y, last = cases.call(cpp, case, sp)
    assert y.dtype == dtype and last.dtype == torch.float32
    y_ref, last_ref = cases.scan_oracle(*[case[k] for k in cases.NAMES[:8]], sp, True, case["initial_state"])
    assert cases.rel_err(y, y_ref) < 1e-2
    assert cases.rel_err(last, last_ref) < 1e-5
    _, _, grads = cases.outputs_and_grads(cpp, case, sp)
    for k, g in grads.items():
        assert g.dtype == case[k].dtype and torch.isfinite(g).all(), k


def test_extreme_decay_and_softplus_threshold(cpp):
    """delta*A far below the float exp range (decays flush to 0) and softplus inputs above its threshold 20."""
    case, _ = cases.make_case(batch=1, dim=4, nstate=5, length=40, dtype=torch.float32, softplus=True)
    case["delta"] = case["delta"] * 30.0  # raw deltas up to ~+-50: both softplus branches
    case["A"] = case["A"] * 20.0          # delta*A down to about -1000 per step
    cases.assert_matches_oracle(cpp, case, True, 2e-5)


def test_nan_propagates(cpp):
    case, sp = cases.make_case(batch=1, dim=3, nstate=4, length=20, dtype=torch.float32, has_h0=False)
    case["u"][0, 1, 5] = float("nan")
    y, last = cases.call(cpp, case, sp)
    assert torch.isnan(y[0, 1, 5:]).all() and torch.isnan(last[0, 1]).all()
    assert torch.isfinite(y[0, 0]).all() and torch.isfinite(y[0, 2]).all() and torch.isfinite(y[0, 1, :5]).all()


def test_thread_count_does_not_change_results(cpp):
    case, sp = cases.make_case(batch=2, dim=16, nstate=6, length=90, layout="grp", groups=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = cases.outputs_and_grads(cpp, case, sp)
        torch.set_num_threads(2)
        b = cases.outputs_and_grads(cpp, case, sp)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for k in a[2]:
        assert torch.equal(a[2][k], b[2][k]), k


def test_available_and_dispatch(cpp):
    assert kernels.available("cpu")["cpp"] == "ok"
    from ssmkit.core.ops import _dispatch

    def torch_impl(*a):
        raise AssertionError("auto must pick cpp here")

    assert _dispatch.select("selective_scan", "auto", torch.device("cpu"), torch_impl) is cpp
    assert _dispatch.select("selective_scan", "cpp", torch.device("cpu"), torch_impl) is cpp
    with pytest.raises(kernels.BackendUnavailable, match="CPU tensors"):
        kernels.load("cpp", "selective_scan", torch.device("meta"))
    with pytest.raises(kernels.BackendUnavailable, match="no ssd_nope kernel"):
        kernels.load("cpp", "ssd_nope", torch.device("cpu"))


def test_missing_compiler_is_reported_not_raised(tmp_path):
    """With no working compiler: import works, available() names the build error, auto falls back to torch,
    backend='cpp' raises BackendUnavailable with the compiler error; the build is tried (and warned about) once."""
    code = textwrap.dedent("""
        import warnings, torch
        import ssmkit
        from ssmkit import kernels
        from ssmkit.core.ops import _dispatch
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            report = kernels.available("cpu")
            assert report["cpp"] != "ok", report
            assert "cannot build" in report["cpp"], report
            impl = lambda *a: "torch"
            assert _dispatch.select("selective_scan", "auto", torch.device("cpu"), impl) is impl
            try:
                _dispatch.select("selective_scan", "cpp", torch.device("cpu"), impl)
            except kernels.BackendUnavailable as e:
                assert "cannot build" in str(e)
            else:
                raise AssertionError("backend='cpp' must raise")
        built = [x for x in w if "C++ CPU backend is unavailable" in str(x.message)]
        assert len(built) == 1, [str(x.message) for x in w]
        print("OK", report["cpp"][:200])
    """)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), SSMKIT_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("layout", ["inv", "var", "grp"])
def test_public_op_against_selective_scan_ref(cpp, dtype, layout):
    """Through `ssmkit.core.ops.selective_scan(backend="cpp")` and backend="auto" (which picks cpp on CPU),
    against the lead's `selective_scan_ref` evaluated in float64."""
    from ssmkit.core.ops import selective_scan, selective_scan_ref

    case, sp = cases.make_case(batch=2, dim=4, nstate=5, length=129, layout=layout, dtype=dtype)

    def op(backend):
        return lambda *a: selective_scan(*a, backend=backend)

    ref = lambda *a: selective_scan_ref(*a)  # noqa: E731
    y, last, grads = cases.outputs_and_grads(op("cpp"), case, sp)
    case64 = {k: (v.double() if v is not None else None) for k, v in case.items()}
    y_ref, last_ref, grads_ref = cases.outputs_and_grads(ref, case64, sp)
    assert cases.rel_err(y, y_ref) < TOL[dtype] and cases.rel_err(last, last_ref) < TOL[dtype]
    for k in grads_ref:
        assert cases.rel_err(grads[k], grads_ref[k]) < TOL[dtype], k
    y_auto = cases.call(op("auto"), case, sp)[0]
    assert torch.equal(y_auto, y)
