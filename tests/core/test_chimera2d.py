"""Chimera's 2-D selective SSM: wavefront parallel form == 2-D recurrence (fp64), and the mixer trains."""
import math

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import Chimera2DSSM
from ssmkit.core.ops import selective_scan_2d, selective_scan_2d_ref


def _args(b, L, V, D, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    A = -(torch.rand(2, D, N, generator=g, dtype=torch.float64) + 0.1)
    rho = torch.rand(2, D, N, generator=g, dtype=torch.float64) * 2 - 1
    return (r(b, L, V, D), r(b, L, V, D), r(b, L, V, D), A, rho, r(b, L, V, N), r(b, L, V, N), r(b, L, V, N),
            r(b, L, V, N), r(D), r(2, D))


def _scalar_oracle(u, d1, d2, A, rho, B1, B2, C1, C2, D, bias):
    """Written from the equations with Python floats, one (batch, channel, state) at a time."""
    b, L, V, Dm = u.shape
    N = A.shape[-1]
    y = torch.zeros(b, L, V, Dm, dtype=torch.float64)
    sp = lambda x: math.log1p(math.exp(x))
    for i in range(b):
        for d in range(Dm):
            for n in range(N):
                A1, A4, r2, r3 = A[0, d, n].item(), A[1, d, n].item(), rho[0, d, n].item(), rho[1, d, n].item()
                h1 = [[0.0] * (V + 1) for _ in range(L + 1)]   # padded: index 0 is "outside the grid"
                h2 = [[0.0] * (V + 1) for _ in range(L + 1)]
                for t in range(L):
                    for v in range(V):
                        x = u[i, t, v, d].item()
                        s1 = sp(d1[i, t, v, d].item() + bias[0, d].item())
                        s2 = sp(d2[i, t, v, d].item() + bias[1, d].item())
                        a1, a4 = math.exp(s1 * A1), math.exp(s2 * A4)
                        h1[t + 1][v + 1] = (a1 * h1[t][v + 1] + (1 - a1) * r2 * h2[t][v + 1]
                                            + (a1 - 1) / A1 * B1[i, t, v, n].item() * x)
                        h2[t + 1][v + 1] = (a4 * h2[t + 1][v] + (1 - a4) * r3 * h1[t + 1][v]
                                            + (a4 - 1) / A4 * B2[i, t, v, n].item() * x)
                        y[i, t, v, d] += (C1[i, t, v, n].item() * h1[t + 1][v + 1]
                                          + C2[i, t, v, n].item() * h2[t + 1][v + 1])
    return y + D * u


def test_reference_recurrence_matches_equations():
    args = _args(1, 3, 4, 2, 2)
    torch.testing.assert_close(selective_scan_2d_ref(*args, delta_softplus=True), _scalar_oracle(*args),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L,V", [(1, 1), (4, 3), (1, 6), (7, 1), (5, 5), (3, 8)])
def test_parallel_form_equals_2d_recurrence(L, V):
    args = _args(2, L, V, 3, 2, seed=L * 10 + V)
    ref = selective_scan_2d_ref(*args, delta_softplus=True)
    got = selective_scan_2d(*args, delta_softplus=True)
    assert (got - ref).abs().max() < 1e-10
    # fp32 inputs: states in fp32, output in the input dtype
    got32 = selective_scan_2d(*(a.float() for a in args), delta_softplus=True)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-4, atol=1e-4)


def test_dependence_cone():
    """y[t, v] depends on exactly the cells (t' <= t, v' <= v)."""
    args = list(_args(1, 4, 5, 2, 2))
    u = args[0].clone().requires_grad_(True)
    y = selective_scan_2d(u, *args[1:], delta_softplus=True)
    y[0, 2, 3].sum().backward()
    nz = u.grad[0].abs().sum(-1) > 0
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[:3, :4] = True
    assert torch.equal(nz, expected)


def test_chimera_layer_gradients_and_variate_directions():
    torch.manual_seed(0)
    layer = Chimera2DSSM(16, d_state=4)
    x = torch.randn(2, 6, 5, 16)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    # forward and backward modules: the output at the first variate sees the last one, and vice versa
    xr = x.clone().requires_grad_(True)
    layer(xr)[0, -1, 0].sum().backward()
    assert xr.grad[0, :, -1].abs().sum() > 0
    # the trend head starts with smaller time steps than the seasonal head
    dt = F.softplus(layer.dt_projs_bias[0, 0])
    assert dt[:8].max() <= 0.01 + 1e-6 and dt[8:].min() >= 0.01 - 1e-6


def test_chimera_bad_input():
    layer = Chimera2DSSM(8, d_state=2)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 6, 8))
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 8, 6, 5))
    args = list(_args(1, 3, 2, 2, 2))
    args[3] = torch.randn(3, 2, 2)
    with pytest.raises(ValueError, match="A must have shape"):
        selective_scan_2d(*args)
