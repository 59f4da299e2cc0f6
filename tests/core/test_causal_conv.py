"""causal_conv1d: the fast path and `causal_conv1d_ref` against a numpy loop, continuation through
initial_state / return_final_state, one-step updates against the full conv, gradients and bad input."""
import numpy as np
import pytest
import torch

from ssmkit import kernels
from ssmkit.core.ops import causal_conv1d, causal_conv1d_ref, causal_conv1d_update

F64 = torch.float64


def numpy_conv(x, w, b=None, activation=None, past=None):
    """y[b, d, t] = act(bias[d] + sum_k w[d, k] * x[b, d, t - W + 1 + k]); earlier inputs from `past` or 0."""
    x, w = x.detach().numpy(), w.detach().numpy()
    batch, dim, L = x.shape
    W = w.shape[1]
    past = np.zeros((batch, dim, W - 1)) if past is None else past.detach().numpy()
    y = np.zeros((batch, dim, L))
    for t in range(L):
        for k in range(W):
            s = t - (W - 1) + k
            y[:, :, t] += w[:, k] * (x[:, :, s] if s >= 0 else past[:, :, W - 1 + s])
    if b is not None:
        y += b.detach().numpy()[:, None]
    if activation == "silu":
        y = y / (1 + np.exp(-y))
    return torch.from_numpy(y)


def inputs(batch=2, dim=3, L=9, W=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64).to(dtype).requires_grad_(True)
    return r(batch, dim, L), r(dim, W), r(dim), r(batch, dim, W - 1)


@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("L", [1, 5, 17])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_matches_ref_and_numpy(W, L, activation):
    x, w, b, s = inputs(L=L, W=W)
    for bias, state in ((None, None), (b, None), (b, s)):
        want = numpy_conv(x, w, bias, activation, state)
        got = causal_conv1d(x, w, bias, activation, initial_state=state)
        ref = causal_conv1d_ref(x, w, bias, activation, initial_state=state)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
        assert torch.allclose(ref, want, rtol=1e-12, atol=1e-12)


def test_swish_is_silu_and_fp32_keeps_dtype():
    x, w, b, _ = inputs(dtype=torch.float32)
    y = causal_conv1d(x, w, b, "swish")
    assert y.dtype == torch.float32
    assert torch.allclose(y, causal_conv1d(x, w, b, "silu"))
    assert torch.allclose(y.double(), numpy_conv(x.double(), w.double(), b.double(), "silu"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("split", [1, 2, 6])
@pytest.mark.parametrize("fn", [causal_conv1d, causal_conv1d_ref])
def test_continuation_through_final_state(split, fn):
    x, w, b, _ = inputs(L=9, W=4)
    y, final = fn(x, w, b, "silu", return_final_state=True)
    y1, s1 = fn(x[..., :split], w, b, "silu", return_final_state=True)
    y2, s2 = fn(x[..., split:], w, b, "silu", initial_state=s1, return_final_state=True)
    assert torch.allclose(torch.cat([y1, y2], -1), y, rtol=1e-12, atol=1e-12)
    assert torch.equal(final, x[..., -3:]) and torch.equal(s2, final)
    assert s1.shape == (2, 3, 3)


def test_final_state_of_short_sequence_keeps_older_inputs():
    """L < W - 1: the state is the tail of [initial_state; x]."""
    x, w, _, s = inputs(L=1, W=4)
    for fn in (causal_conv1d, causal_conv1d_ref):
        _, final = fn(x, w, initial_state=s, return_final_state=True)
        assert torch.equal(final, torch.cat([s[..., 1:], x], -1))


@pytest.mark.parametrize("activation", [None, "silu"])
def test_update_steps_equal_full_conv(activation):
    x, w, b, s = inputs(L=8, W=4)
    with torch.no_grad():
        y = causal_conv1d(x, w, b, activation, initial_state=s)
        state, steps = s, []
        for x_t in x.unbind(-1):
            y_t, state = causal_conv1d_update(x_t, state, w, b, activation)
            steps.append(y_t)
    assert torch.allclose(torch.stack(steps, -1), y, rtol=1e-12, atol=1e-12)
    assert torch.equal(state, x[..., -3:])


def test_gradients_match_ref():
    x, w, b, s = inputs(L=11, W=4)
    args = (x, w, b, s)
    gy = torch.randn(2, 3, 11, dtype=F64)
    g = torch.autograd.grad(causal_conv1d(x, w, b, "silu", initial_state=s), args, gy)
    g_ref = torch.autograd.grad(causal_conv1d_ref(x, w, b, "silu", initial_state=s), args, gy)
    for a, r in zip(g, g_ref):
        assert torch.allclose(a, r, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: causal_conv1d(*t[:3], "silu", initial_state=t[3]), args)


BAD = [
    (dict(x=lambda x: x[0]), ValueError, ["x", "(batch, dim, L)"]),
    (dict(w=lambda w: w[:2]), ValueError, ["weight", "(dim, W)"]),
    (dict(b=lambda b: b[:1]), ValueError, ["bias", "(dim)"]),
    (dict(s=lambda s: s[..., :2]), ValueError, ["initial_state", "(batch, dim, 3)"]),
    (dict(x=lambda x: x.long()), TypeError, ["x", "floating-point"]),
    (dict(w=lambda w: w.to("meta")), ValueError, ["one device", "weight on meta"]),
]


@pytest.mark.parametrize("change,exc,words", BAD)
def test_bad_input(change, exc, words):
    t = dict(zip("xwbs", (v.detach() for v in inputs())))
    for k, f in change.items():
        t[k] = f(t[k])
    with pytest.raises(exc) as info:
        causal_conv1d(t["x"], t["w"], t["b"], "silu", initial_state=t["s"])
    assert all(word in str(info.value) for word in words), str(info.value)


def test_bad_activation_backend_and_update_state():
    x, w, b, s = (v.detach() for v in inputs())
    with pytest.raises(ValueError, match="activation must be one of .* got 'relu'"):
        causal_conv1d(x, w, activation="relu")
    with pytest.raises(ValueError, match="backend must be"):
        causal_conv1d(x, w, backend="nope")
    with pytest.raises(kernels.BackendUnavailable, match="mamba_ssm"):
        causal_conv1d(x, w, backend="mamba_ssm")
    with pytest.raises(ValueError, match=r"conv_state must have shape \(batch, dim, 3\)"):
        causal_conv1d_update(x[..., 0], s[..., :2], w)


def test_nan_propagates_to_window_only():
    x, w, b, _ = (v.detach().clone() for v in inputs(L=10, W=3))
    x[0, 1, 4] = float("nan")
    y = causal_conv1d(x, w, b)
    assert torch.isnan(y[0, 1, 4:7]).all()
    nan = torch.isnan(y)
    nan[0, 1, 4:7] = False
    assert not nan.any()
