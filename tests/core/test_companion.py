"""Companion SSM: FFT and squaring kernels vs explicit powers; layer step == forward; closed-loop rollout."""
import pytest
import torch

from ssmkit.core.layers import ClosedLoopCompanionSSM, CompanionSSM
from ssmkit.core.ops import (companion_kernel, companion_kernel_ref, companion_kernel_squaring, companion_matrix,
                             fft_conv_ref, krylov)
from ssmkit.core.ops.fft_conv import fft_conv_bank


def _abc(d, H=3, seed=0, radius=0.9):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(H, d, generator=g, dtype=torch.float64)
    a = radius * a / a.abs().sum(-1, keepdim=True)  # spectral radius <= radius
    return a, torch.randn(H, d, generator=g, dtype=torch.float64), torch.randn(H, d, generator=g, dtype=torch.float64)


def _explicit_powers(a, b, c, L):
    A = companion_matrix(a)
    return torch.stack([torch.einsum("hi,hij,hj->h", c, torch.linalg.matrix_power(A, l), b) for l in range(L)], -1)


def test_companion_matrix_is_shift_plus_last_column():
    a = torch.arange(1.0, 5.0)[None]
    A = companion_matrix(a)[0]
    assert torch.equal(A[1:, :-1], torch.eye(3)) and torch.equal(A[:, -1], a[0]) and A[0, :-1].abs().sum() == 0


@pytest.mark.parametrize("d", [4, 64])
@pytest.mark.parametrize("L", [1, 336, 720])
def test_companion_fft_kernel_equals_explicit_powers(d, L):
    a, b, c = _abc(d, seed=d + L)
    ref = companion_kernel_ref(a, b, c, L)
    assert (companion_kernel(a, b, c, L) - ref).abs().max() < 1e-8
    assert (companion_kernel_squaring(a, b, c, L) - ref).abs().max() < 1e-8
    if L <= 336 and d == 4:
        assert (_explicit_powers(a, b, c, L) - ref).abs().max() < 1e-10


@pytest.mark.parametrize("L", [1, 2, 5, 8, 13])
def test_krylov_columns_are_powers_times_x(L):
    a, _, _ = _abc(6, H=3, seed=L)
    A = companion_matrix(a)
    x = torch.randn(2, 3, 6, dtype=torch.float64)  # a leading batch dim over the H matrices
    want = torch.stack([torch.einsum("hij,bhj->bhi", torch.linalg.matrix_power(A, l), x) for l in range(L)], -1)
    torch.testing.assert_close(krylov(A, x, L), want)


def test_companion_fft_kernel_gradient_matches_squaring():
    a, b, c = (t.clone().requires_grad_() for t in _abc(8, seed=1))
    w = torch.randn(3, 50, dtype=torch.float64)
    g1 = torch.autograd.grad((companion_kernel(a, b, c, 50) * w).sum(), (a, b, c))
    g2 = torch.autograd.grad((companion_kernel_squaring(a, b, c, 50) * w).sum(), (a, b, c))
    assert all((x - y).abs().max() < 1e-8 for x, y in zip(g1, g2))


@pytest.mark.parametrize("method", ["squaring", "fft"])
def test_companion_layer_step_equals_forward(method, step_through):
    torch.manual_seed(0)
    layer = CompanionSSM(6, kernel_dim=5, n_kernels=3, norm_order=0, skip_connection=True,
                         kernel_method=method).double()
    x = torch.randn(2, 40, 6, dtype=torch.float64)
    with torch.no_grad():
        layer.a.mul_(0.8 / layer.a.abs().sum(-1, keepdim=True))  # keep eigenvalues off the unit circle
        y = layer(x)
        ys, _ = step_through(layer, x)
    assert (y - ys).abs().max() < 1e-10


def test_closed_loop_rollout_equals_repeated_A_plus_BK():
    torch.manual_seed(0)
    layer = ClosedLoopCompanionSSM(4, kernel_dim=6, n_kernels=2).double()
    x = torch.randn(3, 25, 4, dtype=torch.float64)
    a, b, c = layer.ssm()
    k = layer.k / layer.k.abs().sum(-1, keepdim=True)
    with torch.no_grad():
        y, u_next = layer.forecast(x, horizon=30)
        for ch in range(4):
            h = ch // 2  # two channels per kernel
            A = companion_matrix(a[h:h + 1])[0]
            state = torch.zeros(3, 6, dtype=torch.float64)
            for u_t in x[:, :, ch].unbind(1):
                state = state @ A.T + u_t[:, None] * b[h]
            M = A + torch.outer(b[h], k[h])
            for j in range(30):
                assert torch.allclose(y[:, j, ch], state @ c[h], atol=1e-10)
                assert torch.allclose(u_next[:, j, ch], state @ k[h], atol=1e-10)
                state = state @ M.T
        # open loop: the last output of forward equals the first forecast (same state x_lag, same c)
        assert torch.allclose(layer(x)[:, -1], y[:, 0], atol=1e-10)
        assert torch.allclose(layer.next_input(x)[:, -1], u_next[:, 0], atol=1e-10)
        # y alone (training's read-out): the same y, no next inputs
        y_only, none = layer.forecast(x, horizon=30, next_inputs=False)
        assert none is None and torch.allclose(y_only, y, atol=1e-12)


@pytest.mark.parametrize("method", ["squaring", "recurrence"])
@pytest.mark.parametrize("heads", [1, 2])
def test_closed_loop_channels_first_and_open_loop_kernels_equal_the_default_layout(method, heads):
    torch.manual_seed(heads)
    layer = ClosedLoopCompanionSSM(4, kernel_dim=6, n_kernels=4 // heads, kernel_method=method).double()
    x = torch.randn(3, 25, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 30, 4, dtype=torch.float64)
    y, u_next = layer.forecast(x, horizon=30)
    y_cf, u_cf = layer.forecast(x.transpose(1, 2), horizon=30, channels_first=True)
    assert torch.allclose(y_cf.transpose(1, 2), y, atol=1e-12) and torch.allclose(u_cf.transpose(1, 2), u_next)
    params = (x, *layer.parameters())
    g = torch.autograd.grad((w[0] * y).sum() + (w[1] * u_next).sum(), params)
    g_cf = torch.autograd.grad((w[0] * y_cf.transpose(1, 2)).sum() + (w[1] * u_cf.transpose(1, 2)).sum(), params)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(g, g_cf))
    y_only, none = layer.forecast(x.transpose(1, 2), horizon=30, next_inputs=False, channels_first=True)
    assert none is None and torch.allclose(y_only, y_cf, atol=1e-12)
    # forward's and next_input's kernels, in one (2, d_model, L) tensor
    with torch.no_grad():
        out, nxt = fft_conv_bank(x.transpose(1, 2), layer.open_loop_kernels(25)).transpose(-1, -2)
        assert torch.allclose(out, layer(x), atol=1e-12) and torch.allclose(nxt, layer.next_input(x), atol=1e-12)


def test_companion_full_kernel_is_the_stateless_forward():
    torch.manual_seed(0)
    layer = CompanionSSM(6, kernel_dim=5, n_kernels=3, skip_connection=True, kernel_method="recurrence").double()
    x = torch.randn(2, 40, 6, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fft_conv_ref(x.transpose(1, 2), layer.full_kernel(40)).transpose(1, 2), layer(x),
                              atol=1e-10)
        assert layer.full_kernel(0).shape == (6, 0)


def test_companion_bad_input():
    with pytest.raises(ValueError, match="n_kernels must divide"):
        CompanionSSM(6, n_kernels=4)
    with pytest.raises(ValueError, match="kernel_method"):
        CompanionSSM(6, kernel_method="magic")
    a, b, c = _abc(4)
    with pytest.raises(ValueError, match=r"c must have shape \(H, d\)"):
        companion_kernel(a, b, c[:, :3], 10)
    with pytest.raises(ValueError, match="L must be a non-negative int"):  # L = 0 is an empty kernel (issue 17)
        companion_kernel_ref(a, b, c, -1)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        ClosedLoopCompanionSSM(2, kernel_dim=3).forecast(torch.randn(1, 5, 2), 0)
    with pytest.raises(ValueError, match=r"x must have shape \(\?, 2, \?\)"):
        ClosedLoopCompanionSSM(2, kernel_dim=3).forecast(torch.randn(1, 5, 2), 3, channels_first=True)
