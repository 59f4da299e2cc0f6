"""S4D / S4 (DPLR) kernels and layers: convolution == recurrence, Hurwitz stability, bounded stepping."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from ssmkit.core.layers import S4, S4D
from ssmkit.core.layers.s4 import hippo_legs_nplr
from ssmkit.core.ops import (dplr_discretize, dplr_kernel, dplr_kernel_ref, dplr_matrix, s4d_kernel,
                             s4d_kernel_ref)


def _random_dplr(H=3, N=4, R=1, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
    dt = (torch.rand(H, generator=g, dtype=torch.float64) * 0.2 + 1e-3).to(dtype)
    Lam = torch.complex(-torch.exp(torch.randn(H, N, generator=g, dtype=torch.float64)),
                        3 * torch.randn(H, N, generator=g, dtype=torch.float64)).to(cdt)
    cplx = lambda *s: torch.randn(*s, generator=g, dtype=torch.complex128).to(cdt)
    return dt, Lam, cplx(R, H, N), cplx(H, N), cplx(H, N)


@pytest.mark.parametrize("L", [1, 7, 100, 257])
@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_s4d_kernel_equals_recurrence_fp64(L, method):
    dt, Lam, _, B, C = _random_dplr(seed=L)
    k, ref = s4d_kernel(dt, Lam, B, C, L, method), s4d_kernel_ref(dt, Lam, B, C, L, method)
    assert (k - ref).abs().max() < 1e-10 * ref.abs().max().clamp_min(1)


@pytest.mark.parametrize("L", [1, 7, 100, 257])
@pytest.mark.parametrize("R", [1, 2])
def test_dplr_kernel_equals_dense_recurrence_fp64(L, R):
    dt, Lam, P, B, C = _random_dplr(R=R, seed=L)
    k, ref = dplr_kernel(dt, Lam, P, B, C, L), dplr_kernel_ref(dt, Lam, P, B, C, L)
    assert (k - ref).abs().max() < 1e-10 * ref.abs().max().clamp_min(1)


def test_dplr_kernel_node_chunking_and_fp32():
    dt, Lam, P, B, C = _random_dplr(seed=5)
    full = dplr_kernel(dt, Lam, P, B, C, 300)
    assert (dplr_kernel(dt, Lam, P, B, C, 300, node_chunk=7) - full).abs().max() < 1e-12
    k32 = dplr_kernel(*_random_dplr(seed=5, dtype=torch.float32), 300)
    assert k32.dtype == torch.float32 and (k32.double() - full).abs().max() < 1e-4 * full.abs().max()


def _conv_vs_step(layer, L, dtype, step_through, seed=0):
    torch.manual_seed(seed)
    layer = layer.to(dtype)
    x = torch.randn(2, L, layer.d_model, dtype=dtype)
    with torch.no_grad():
        y = layer(x)
        ys, _ = step_through(layer, x)
    return (y - ys).abs().max().item() / y.abs().max().item()


@pytest.mark.parametrize("cls", [S4D, S4])
@pytest.mark.parametrize("L", [1, 37, 200])
def test_layer_convolution_equals_stepping(cls, L, step_through):
    torch.manual_seed(L)
    layer = cls(8, d_state=16)
    assert _conv_vs_step(layer, L, torch.float64, step_through) < 1e-8
    assert _conv_vs_step(layer, L, torch.float32, step_through) < 1e-4


def test_s4d_inv_init_and_dt_range(step_through):
    layer = S4D(4, d_state=8, init="inv", dt_min=1e-2, dt_max=2e-2)
    dt, A, _, _ = layer.kernel.params()
    assert ((dt >= 1e-2 - 1e-7) & (dt <= 2e-2 + 1e-7)).all()
    n = torch.arange(4)
    assert torch.allclose(A[0].imag, 8 / math.pi * (8 / (2 * n + 1) - 1))
    assert _conv_vs_step(layer, 23, torch.float64, step_through) < 1e-8


def test_hippo_nplr_reproduces_legs_spectrum():
    N = 8
    Lam, P, _ = hippo_legs_nplr(N)
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    legs = -torch.tril(r[:, None] * r[None, :], -1) - torch.diag(n + 1)
    ours = torch.linalg.eigvals(dplr_matrix(Lam[None], P[None, None]))[0]
    want = torch.linalg.eigvals(legs)
    key = lambda z: sorted(z.tolist(), key=lambda c: (round(c.real, 6), round(c.imag, 6)))
    assert torch.allclose(torch.tensor(key(ours)), torch.tensor(key(want)), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(a_real=st.lists(st.floats(-6, 4), min_size=3, max_size=3),
       a_imag=st.lists(st.floats(-100, 100), min_size=3, max_size=3),
       p=st.lists(st.floats(-30, 30), min_size=12, max_size=12))
def test_hurwitz_tied_A_is_stable_for_any_parameters(a_real, a_imag, p):
    real = torch.tensor(a_real, dtype=torch.float64)
    Lam = torch.complex(-torch.exp(real), -torch.tensor(a_imag, dtype=torch.float64))[None]  # (1, 3)
    pt = torch.tensor(p, dtype=torch.float64).view(2, 1, 3, 2)
    P = torch.complex(pt[..., 0], pt[..., 1])  # rank 2
    A = dplr_matrix(Lam, P)[0]
    bound = -torch.exp(real).min().item()  # Re eig <= lambda_max((A + A^*)/2) <= max Re Lambda
    herm = torch.linalg.eigvalsh((A + A.conj().T) / 2)
    assert herm.max() <= bound * (1 - 1e-9)
    assert torch.linalg.eigvals(A).real.max() <= bound + 1e-9 * (1 + A.abs().max())
    dA, _ = dplr_discretize(torch.tensor([0.1], dtype=torch.float64), Lam, P, Lam)
    assert torch.linalg.matrix_norm(dA[0], ord=2) <= 1 + 1e-12


def test_stepping_16k_steps_from_random_state_stays_bounded():
    torch.manual_seed(0)
    layer = S4(4, d_state=8)
    with torch.no_grad():
        for p in (layer.kernel.P, layer.kernel.B, layer.kernel.A_imag):
            p.mul_(5 * torch.randn_like(p))
        dA, dB, C = layer._step_matrices()
    x = torch.randn(1, 4, 8, dtype=torch.complex64) * 100
    x0 = x.abs().square().sum(-1).sqrt()
    norms = []
    for _ in range(16384):
        x = torch.einsum("hnm,bhm->bhn", dA, x)
        norms.append(x.abs().square().sum(-1).sqrt())
    norms = torch.stack(norms)
    assert torch.isfinite(norms).all()
    assert (norms <= x0 * (1 + 1e-5)).all()  # dissipative A: the bilinear dA never expands the state
    assert (norms[1:] <= norms[:-1] * (1 + 1e-5) + 1e-6).all()


def test_s4_bad_input():
    with pytest.raises(ValueError, match="even"):
        S4D(4, d_state=7)
    with pytest.raises(ValueError, match="even"):
        S4(4, d_state=5)
    with pytest.raises(ValueError, match="n_ssm must divide"):
        S4(6, d_state=4, n_ssm=4)
    with pytest.raises(ValueError, match=r"x must have shape \(\?, \?, 4\)"):
        S4D(4, d_state=4)(torch.randn(2, 10, 5))
    layer = S4D(4, d_state=4)
    with pytest.raises(ValueError, match=r"state.h must have shape"):
        layer.step(torch.randn(2, 4), layer.initial_state(3))
    dt, Lam, P, B, C = _random_dplr()
    with pytest.raises(ValueError, match=r"C must have shape \(H, N\)"):
        dplr_kernel(dt, Lam, P, B, C[:, :2], 10)
    with pytest.raises(ValueError, match="L must be a non-negative int"):  # L = 0 is an empty kernel (issue 17)
        s4d_kernel(dt, Lam, B, C, -1)
