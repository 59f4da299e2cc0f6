"""The C++ depthwise causal conv1d (`kernels/cpu/causal_conv.cpp`) against `causal_conv1d_ref` in fp64: outputs
and the gradients of x, weight and bias, on strided inputs, many batch blocks, every tap count; fp32; dispatch."""
from __future__ import annotations

import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops.conv import causal_conv1d, causal_conv1d_ref


@pytest.fixture(scope="module")
def cpp():
    try:
        return kernels.load("cpp", "causal_conv1d", torch.device("cpu"))
    except kernels.BackendUnavailable as e:
        pytest.skip(f"cpp backend unavailable here: {e}")


def _inputs(batch, dim, L, W, dtype, seed=0):
    """x as the Mamba mixer passes it: a (batch, dim, L) transposed slice of a (batch, L, 2 dim) projection."""
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(batch, L, 2 * dim, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    w = torch.randn(dim, W, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    b = torch.randn(dim, generator=g, dtype=torch.float64).to(dtype).requires_grad_(True)
    return xz, w, b


def _run(fn, xz, w, b, activation, use_bias, seed=1):
    dim = w.shape[0]
    y = fn(xz[..., :dim].transpose(1, 2), w, b if use_bias else None, activation)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)
    leaves = [xz, w] + ([b] if use_bias else [])
    return y.detach(), torch.autograd.grad((y * gy).sum(), leaves)


def _err(a, b):
    if b.numel() == 0:  # W = 1: no initial state
        return 0.0 if a.shape == b.shape else float("inf")
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 1, 4), (2, 5, 3, 4), (131, 4, 7, 4), (3, 6, 70, 4), (2, 4, 9, 1),
                                   (2, 4, 5, 2)])  # (batch, dim, L, W): L < W, 66 batch blocks, W = 1
def test_matches_reference_fp64(cpp, shape, activation, use_bias):
    xz, w, b = _inputs(*shape, dtype=torch.float64, seed=sum(shape))
    y, grads = _run(cpp, xz, w, b, activation, use_bias)
    y_ref, grads_ref = _run(causal_conv1d_ref, xz, w, b, activation, use_bias)
    assert _err(y, y_ref) < 1e-12
    for name, g, r in zip(("x", "weight", "bias"), grads, grads_ref):
        assert _err(g, r) < 1e-12, name


def test_fp32_against_fp64_reference(cpp):
    xz, w, b = _inputs(64, 16, 12, 4, dtype=torch.float32)
    y, grads = _run(cpp, xz, w, b, "silu", True)
    y_ref, grads_ref = _run(causal_conv1d_ref, *(t.detach().double().requires_grad_(True) for t in (xz, w, b)),
                            "silu", True)
    assert y.dtype == torch.float32 and _err(y, y_ref) < 1e-5
    for name, g, r in zip(("x", "weight", "bias"), grads, grads_ref):
        assert g.dtype == torch.float32 and _err(g, r) < 1e-5, name


@pytest.mark.parametrize("W", [1, 4])
def test_initial_and_final_state_with_gradients(cpp, W):
    """With an initial state (the W - 1 inputs before the start) and the final state returned: values and the
    gradients of x, weight, bias and the initial state, through y and through the final state, as the reference."""
    xz, w, b = _inputs(3, 5, 6, W, dtype=torch.float64, seed=W)
    h0 = torch.randn(3, 5, W - 1, dtype=torch.float64, requires_grad=True)

    def grads(fn):
        y, last = fn(xz[..., :5].transpose(1, 2), w, b, "silu", initial_state=h0, return_final_state=True)
        g = torch.Generator().manual_seed(5)
        loss = (y * torch.randn(y.shape, generator=g, dtype=torch.float64)).sum() + (last * 3).sum()
        return y.detach(), last.detach(), torch.autograd.grad(loss, [xz, w, b, h0])

    y, last, g = grads(cpp)
    y_ref, last_ref, g_ref = grads(causal_conv1d_ref)
    assert _err(y, y_ref) < 1e-12 and torch.equal(last, last_ref)
    for name, a, r in zip(("x", "weight", "bias", "initial_state"), g, g_ref):
        assert _err(a, r) < 1e-12, name


def test_auto_dispatch_takes_cpp_with_and_without_state(cpp):
    """backend="auto" gives the cpp result on a plain call and on a stateful one, so a layer's output does not
    depend on whether it was asked for its state."""
    xz, w, b = _inputs(2, 4, 6, 4, dtype=torch.float32)
    x = xz[..., :4].transpose(1, 2)
    assert torch.equal(causal_conv1d(x, w, b, "silu"), cpp(x, w, b, "silu"))
    y, last = causal_conv1d(x, w, b, "silu", return_final_state=True)
    assert torch.equal(y, cpp(x, w, b, "silu")) and torch.equal(last, x[:, :, -3:])


def test_nonfinite_input_stays_at_and_after_its_position(cpp):
    """A NaN at time 2 reaches y at times 2..2 + W - 1 only (causal), as in the reference."""
    xz, w, b = _inputs(1, 3, 10, 4, dtype=torch.float64)
    x = xz.detach()[..., :3].transpose(1, 2).clone()
    x[0, 1, 2] = float("nan")
    y = cpp(x, w.detach(), b.detach(), "silu")
    assert torch.equal(y.isnan(), causal_conv1d_ref(x, w.detach(), b.detach(), "silu").isnan())
    assert y[0, 1, :2].isfinite().all() and y[0, 1, 2:6].isnan().all() and y[0, 1, 6:].isfinite().all()


def test_rejects_mixed_dtypes(cpp):
    x = torch.randn(1, 2, 5)
    with pytest.raises(RuntimeError, match="weight must have dtype"):
        cpp(x, torch.randn(2, 4, dtype=torch.float64), None, None)
