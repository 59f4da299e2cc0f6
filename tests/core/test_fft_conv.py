"""fft_conv (and fft_conv_bank) against direct convolution, causality, two-sided variant and argument errors."""
import pytest
import torch

from ssmkit.core.ops import fft_conv, fft_conv_ref
from ssmkit.core.ops.fft_conv import fft_conv_bank, fft_conv_bank_ref, fft_size


@pytest.mark.parametrize("L", [1, 7, 1000, 4096])
def test_fft_conv_equals_direct_convolution_fp64(L):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, 3, L, dtype=torch.float64, generator=g)
    k = torch.randn(3, L, dtype=torch.float64, generator=g) / L ** 0.5
    assert (fft_conv(u, k) - fft_conv_ref(u, k)).abs().max() < 1e-10


@pytest.mark.parametrize("L,Lk", [(1, 1), (9, 4), (300, 300), (301, 17)])
def test_fft_conv_bidirectional_equals_direct(L, Lk):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, 3, L, dtype=torch.float64, generator=g)
    k = torch.randn(2, 3, Lk, dtype=torch.float64, generator=g)
    assert (fft_conv(u, k, bidirectional=True) - fft_conv_ref(u, k, bidirectional=True)).abs().max() < 1e-10


def test_fft_conv_short_kernel_is_zero_padded():
    u = torch.randn(1, 2, 50, dtype=torch.float64)
    k = torch.randn(2, 5, dtype=torch.float64)
    padded = torch.nn.functional.pad(k, (0, 45))
    assert torch.allclose(fft_conv(u, k), fft_conv(u, padded), atol=1e-12)


@pytest.mark.parametrize("t", [0, 1, 250, 511])
def test_fft_conv_is_causal(t):
    L = 512
    u = torch.randn(1, 4, L, dtype=torch.float64)
    k = torch.randn(4, L, dtype=torch.float64)
    v = u.clone()
    v[..., t:] += torch.randn(1, 4, L - t, dtype=torch.float64)  # perturb inputs at and after t
    y, yv = fft_conv(u, k), fft_conv(v, k)
    assert torch.allclose(y[..., :t], yv[..., :t], rtol=0, atol=1e-10)
    assert (y[..., t:] - yv[..., t:]).abs().max() > 1e-3  # the perturbation is seen from t on


def test_fft_conv_bidirectional_sees_the_future():
    u = torch.randn(1, 2, 64, dtype=torch.float64)
    k = torch.randn(2, 2, 64, dtype=torch.float64)
    v = u.clone()
    v[..., 40] += 1.0
    assert (fft_conv(u, k, True)[..., :40] - fft_conv(v, k, True)[..., :40]).abs().max() > 1e-3


def test_fft_conv_dtype_and_gradient():
    u = torch.randn(2, 3, 33, requires_grad=True)
    k = torch.randn(3, 33, requires_grad=True)
    y = fft_conv(u, k)
    assert y.dtype == torch.float32
    y.square().sum().backward()
    assert u.grad.shape == u.shape and torch.isfinite(k.grad).all()
    assert fft_conv(u.detach().to(torch.bfloat16), k.detach()).dtype == torch.bfloat16


def test_fft_conv_bad_input():
    u = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match="longer than the sequence"):
        fft_conv(u, torch.randn(3, 11))
    with pytest.raises(ValueError, match=r"k must have shape \(D, \?\)"):
        fft_conv(u, torch.randn(4, 10))
    with pytest.raises(ValueError, match=r"u must have shape \(B, D, L\)"):
        fft_conv(torch.randn(3, 10), torch.randn(3, 10))
    with pytest.raises(ValueError, match=r"k must have shape \(2, D, \?\)"):
        fft_conv(u, torch.randn(3, 10), bidirectional=True)
    with pytest.raises(TypeError, match="u must be a floating-point"):
        fft_conv(torch.ones(2, 3, 10, dtype=torch.long), torch.randn(3, 10))


@pytest.mark.parametrize("B,D,L,Lk,M", [(2, 3, 1, 1, 1), (2, 3, 96, 96, 2), (1, 4, 50, 7, 3), (3, 2, 337, 337, 2)])
def test_fft_conv_bank_values_and_gradients_equal_the_direct_convolution_fp64(B, D, L, Lk, M):
    g = torch.Generator().manual_seed(L + M)
    u = torch.randn(B, D, L, dtype=torch.float64, generator=g, requires_grad=True)
    k = (torch.randn(M, D, Lk, dtype=torch.float64, generator=g) / Lk ** 0.5).requires_grad_()
    w = torch.randn(M, B, D, L, dtype=torch.float64, generator=g)
    y, r = fft_conv_bank(u, k), fft_conv_bank_ref(u, k)
    assert y.shape == (M, B, D, L) and (y - r).abs().max() < 1e-10
    grads = torch.autograd.grad((y * w).sum(), (u, k))
    grads_ref = torch.autograd.grad((r * w).sum(), (u, k))
    for a, b in zip(grads, grads_ref):
        assert (a - b).abs().max() < 1e-10


def test_fft_conv_bank_gradcheck_and_float32():
    u = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_conv_bank, (u, k))
    y = fft_conv_bank(u.detach().float(), k.detach().float())
    assert y.dtype == torch.float32 and (y.double() - fft_conv_bank_ref(u, k)).abs().max() < 1e-4


def test_fft_conv_bank_nonfinite_and_empty_inputs_as_the_oracle():
    u = torch.randn(2, 3, 20, dtype=torch.float64)
    k = torch.randn(2, 3, 5, dtype=torch.float64)
    u[1, 2, 7] = float("nan")
    k[1, 0, 2] = float("inf")
    y, r = fft_conv_bank(u, k), fft_conv_bank_ref(u, k)
    bad = ~torch.isfinite(y)
    assert torch.equal(bad, ~torch.isfinite(r)) and bad[1].any() and not bad[0, 0].any()
    assert torch.allclose(y[~bad], r[~bad], atol=1e-10)
    assert fft_conv_bank(torch.randn(0, 3, 8), torch.randn(2, 3, 4)).shape == (2, 0, 3, 8)
    assert fft_conv_bank(torch.randn(2, 3, 8), torch.randn(0, 3, 4)).shape == (0, 2, 3, 8)


def test_fft_conv_bank_bad_input():
    u = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match="longer than the sequence"):
        fft_conv_bank(u, torch.randn(2, 3, 11))
    with pytest.raises(ValueError, match=r"k must have shape \(\?, D, \?\)"):
        fft_conv_bank(u, torch.randn(2, 4, 10))
    with pytest.raises(ValueError, match=r"k must have shape"):
        fft_conv_bank(u, torch.randn(3, 10))


def test_fft_size_is_the_smallest_2_3_5_smooth_length():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1
    for n in range(1, 400):
        m = fft_size(n)
        assert m >= n and smooth(m) and not any(smooth(j) for j in range(n, m))
