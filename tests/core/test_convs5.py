"""ConvS5: parallel scan == complex128 sequential recurrence; step == forward; HiPPO-N init; ZOH; bad input."""
import pytest
import torch

from ssmkit.core.layers import ConvS5, ConvS5State
from ssmkit.core.layers.convs5 import hippo_n_eigenvalues
from ssmkit.core.ops import convssm_scan, convssm_scan_ref


def _same_conv(x, kernel):
    """'same' 2-D convolution written as a sum over taps: x (N, H, W, I), kernel (O, I, k, k) -> (N, H, W, O)."""
    k = kernel.shape[-1]
    N, H, W, _ = x.shape
    xp = torch.zeros(N, H + k - 1, W + k - 1, x.shape[-1], dtype=x.dtype)
    xp[:, k // 2:k // 2 + H, k // 2:k // 2 + W] = x
    return sum(torch.einsum("nhwi,oi->nhwo", xp[:, i:i + H, j:j + W], kernel[:, :, i, j])
               for i in range(k) for j in range(k))


def _sequential_complex128(layer, u, x0):
    """Oracle: the ConvS5 equations in complex128, one frame at a time."""
    lam = torch.complex(layer.Lambda_re.double().clamp(max=-1e-4), layer.Lambda_im.double())
    lam_bar = torch.exp(lam * layer.log_step.double().exp())
    B = torch.view_as_complex(layer.B.double().contiguous())
    C = torch.view_as_complex(layer.C.double().contiguous())
    B_bar = ((lam_bar - 1) / lam)[:, None, None, None] * B
    x, ys = x0.to(torch.complex128), []
    for u_k in u.double().to(torch.complex128).unbind(1):
        x = lam_bar * x + _same_conv(u_k, B_bar)
        ys.append(2 * _same_conv(x, C).real + layer.D.double() * u_k.real)
    return torch.stack(ys, 1), x


@pytest.mark.parametrize("kB,kC", [(1, 1), (3, 3), (5, 5), (3, 1)])
def test_parallel_scan_matches_complex128_recurrence(kB, kC):
    torch.manual_seed(kB * 7 + kC)
    layer = ConvS5(3, d_state=4, kernel_size=kB, kernel_size_C=kC, dt_min=0.05, dt_max=0.5)
    u = torch.randn(2, 9, 5, 7, 3)
    x0 = torch.randn(2, 5, 7, 4, dtype=torch.complex64)
    y, (last,) = layer(u, ConvS5State(x0), return_state=True)
    y_ref, last_ref = _sequential_complex128(layer, u, x0)
    assert y.dtype == torch.float32 and last.dtype == torch.complex64
    assert ((y.double() - y_ref).norm() / y_ref.norm()) < 1e-6
    assert ((last.to(torch.complex128) - last_ref).abs().norm() / last_ref.abs().norm()) < 1e-6


@pytest.mark.parametrize("T", [1, 2, 5, 8, 13])
def test_op_parallel_equals_sequential(T):
    torch.manual_seed(T)
    lam_bar = torch.exp(torch.complex(-torch.rand(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)))
    Bu = torch.randn(2, T, 3, 2, 4, dtype=torch.complex128)
    x0 = torch.randn(2, 3, 2, 4, dtype=torch.complex128)
    torch.testing.assert_close(convssm_scan(lam_bar, Bu, x0), convssm_scan_ref(lam_bar, Bu, x0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(convssm_scan(lam_bar, Bu), convssm_scan_ref(lam_bar, Bu), rtol=1e-12, atol=1e-12)


def test_step_equals_forward_and_state_continues(step_through):
    torch.manual_seed(0)
    layer = ConvS5(4, d_state=6, kernel_size=3)
    u = torch.randn(2, 7, 4, 5, 4)
    y, last = layer(u, return_state=True)
    ys, state = step_through(layer, u)
    torch.testing.assert_close(ys, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state.x, last.x, rtol=1e-5, atol=1e-5)
    y1, mid = layer(u[:, :3], return_state=True)
    torch.testing.assert_close(torch.cat([y1, layer(u[:, 3:], mid)], 1), y, rtol=1e-5, atol=1e-5)


def test_hippo_n_init_clip_and_gradients():
    lam = hippo_n_eigenvalues(8)
    assert torch.allclose(lam.real, torch.full((8,), -0.5, dtype=torch.float64))
    assert (lam.imag > 0).all()
    # the eigenvalues are those of the normal part of HiPPO-LegS: S = A + p p^T
    n = torch.arange(16, dtype=torch.float64)
    A = -torch.tril(torch.sqrt(2 * n[:, None] + 1) * torch.sqrt(2 * n[None] + 1), -1) - torch.diag(n + 1)
    S = A + torch.outer(torch.sqrt(n + 0.5), torch.sqrt(n + 0.5))
    eig = torch.linalg.eigvals(S)
    assert torch.allclose(eig[eig.imag > 0].imag.sort().values, lam.imag.sort().values, atol=1e-8)
    layer = ConvS5(3, d_state=4)
    with torch.no_grad():
        layer.Lambda_re.fill_(0.3)  # unstable: the clip keeps |Lambda_bar| < 1
    lam_bar, _ = layer.discretize(torch.float32)
    assert (lam_bar.abs() < 1).all()
    layer = ConvS5(3, d_state=4)
    u = torch.randn(1, 4, 3, 5, 3)
    layer(u).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_convs5_bad_input():
    layer = ConvS5(3, d_state=4)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 4, 3, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 4, 3, 5, 7))   # (B, T, C, H, W): channels-first frames
    with pytest.raises(ValueError, match=r"state.x must have shape"):
        layer.step(torch.randn(1, 3, 5, 3), ConvS5State(torch.zeros(1, 3, 5, 5, dtype=torch.complex64)))
    with pytest.raises(ValueError, match="kernel_size must be"):
        ConvS5(3, kernel_size=2)
