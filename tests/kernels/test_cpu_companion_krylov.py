"""The C++ companion Krylov recurrences (`kernels/cpu/companion_krylov.cpp`) against the dense `_ref` oracles in fp64:
columns, gradients of a, b, k, v (gradcheck and the oracle's autograd), fp32, NaN propagation, dispatch."""
from __future__ import annotations

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops.companion_recurrence import (closed_loop_krylov, closed_loop_krylov_ref, companion_krylov,
                                                  companion_krylov_ref)


@pytest.fixture(scope="module")
def cpp():
    try:
        return (kernels.load("cpp", "companion_krylov", torch.device("cpu")),
                kernels.load("cpp", "closed_loop_krylov", torch.device("cpu")))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


def _params(H=3, d=5, lead=(2,), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b, k = (0.4 * torch.randn(H, d, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    return a, b, k, torch.randn(*lead, H, d, generator=g, dtype=torch.float64).to(dtype)


def _leaves(*ts):
    return [t.clone().requires_grad_() for t in ts]


@pytest.mark.parametrize("L", [1, 2, 9, 40])
@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
@pytest.mark.parametrize("d", [1, 2, 7])
def test_matches_oracle_values_and_gradients(cpp, L, lead, d):
    open_cpp, closed_cpp = cpp
    a, b, k, v = _params(d=d, lead=lead, seed=L + d)
    for fn, ref, args in ((open_cpp, companion_krylov_ref, (a, v)), (closed_cpp, closed_loop_krylov_ref, (a, b, k, v))):
        x, y = _leaves(*args), _leaves(*args)
        got, want = fn(*x, L), ref(*y, L)
        assert got.shape == (*lead, 3, d, L)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        G = torch.randn_like(want)
        (got * G).sum().backward()
        (want * G).sum().backward()
        for p, q in zip(x, y):  # the oracle leaves a grad of None where it does not use an input (a, b, k at L = 1)
            want_grad = torch.zeros_like(q) if q.grad is None else q.grad
            torch.testing.assert_close(p.grad, want_grad, rtol=1e-10, atol=1e-10)


def test_gradcheck(cpp):
    open_cpp, closed_cpp = cpp
    a, b, k, v = _leaves(*_params(H=2, d=4, lead=(2,)))
    assert torch.autograd.gradcheck(lambda *t: open_cpp(*t, 6), (a, v))
    assert torch.autograd.gradcheck(lambda *t: closed_cpp(*t, 6), (a, b, k, v))


def test_fp32(cpp):
    open_cpp, closed_cpp = cpp
    a, b, k, v = _params(H=4, d=16, lead=(3,), dtype=torch.float32)
    got = closed_cpp(a, b, k, v, 50)
    assert got.dtype == torch.float32
    want = closed_loop_krylov_ref(a.double(), b.double(), k.double(), v.double(), 50)
    # The closed loop grows to ~1e10 over 50 steps, so an elementwise rtol judges rounding, not the kernel (it moved
    # with the compiler's instruction choice): the fp32 kernel must be as accurate as the oracle run in fp32, and
    # within 1e-6 of the largest column entry.
    err = (got.double() - want).abs().max()
    err_ref32 = (closed_loop_krylov_ref(a, b, k, v, 50).double() - want).abs().max()
    assert err <= 2 * err_ref32 and err <= 1e-6 * want.abs().max(), (float(err), float(err_ref32))


def test_nonfinite_propagates_like_the_recurrence(cpp):
    """A NaN / inf in v reaches exactly the columns the PyTorch recurrence reaches, and never one the dense oracle
    keeps finite (the oracle's dense product spreads it wider: 0 * NaN there is NaN)."""
    open_cpp, closed_cpp = cpp
    a, b, k, v = _params(d=6, lead=(2,))
    for bad in (float("nan"), float("inf")):
        vb = v.clone()
        vb[1, 0, 2] = bad
        for got, torch_path, ref in (
                (open_cpp(a, vb, 12), companion_krylov(a, vb, 12, backend="torch"), companion_krylov_ref(a, vb, 12)),
                (closed_cpp(a, b, k, vb, 12), closed_loop_krylov(a, b, k, vb, 12, backend="torch"),
                 closed_loop_krylov_ref(a, b, k, vb, 12))):
            assert torch.equal(got.isnan(), torch_path.isnan()) and torch.equal(got.isinf(), torch_path.isinf())
            assert not got[1, 0, 2, 0].isfinite()                       # it does not disappear
            assert (got.isfinite() | ~ref.isfinite()).all()                # none where the oracle is finite
            finite = ref.isfinite()
            torch.testing.assert_close(got[finite], ref[finite], rtol=1e-12, atol=1e-12)


def test_dispatch(cpp, monkeypatch):
    a, b, k, v = _params()
    torch.testing.assert_close(closed_loop_krylov(a, b, k, v, 7, backend="torch"),
                               closed_loop_krylov(a, b, k, v, 7, backend="cpp"), rtol=1e-12, atol=1e-12)
    calls = []
    monkeypatch.setattr(kernels.cpu, "_CALLABLES", {"companion_krylov": lambda **kw: calls.append(1) or cpp[0](**kw)})
    companion_krylov(a, v, 5)
    assert calls == [1]
    companion_krylov(a.half(), v.half(), 5)           # fp16: the PyTorch path
    companion_krylov(a, v.float(), 5)                 # mixed dtypes: the PyTorch path
    companion_krylov(a, v, 0)                         # no columns: the PyTorch path's empty result
    assert calls == [1]
    with pytest.raises(kernels.BackendUnavailable, match="dtype"):
        companion_krylov(a.half(), v.half(), 5, backend="cpp")
