"""The O(d) companion Krylov recurrences (SpaceTime's and Chimera's fast path) against their dense oracles and the
released code's repeated squaring, in fp64 with gradients; SpaceTime and Chimera give the same loss and gradients
with either kernel method."""
import pytest
import torch

from ssmkit.core.ops.companion import companion_kernel_ref, companion_matrix, krylov
from ssmkit.core.ops.companion_recurrence import (closed_loop_krylov, closed_loop_krylov_ref,
                                                  companion_kernel_recurrence, companion_krylov, companion_krylov_ref)
from ssmkit.timeseries.models import Chimera, SpaceTime


def _params(H=4, d=6, lead=(3,)):
    g = torch.Generator().manual_seed(0)
    a, b, k = (0.4 * torch.randn(H, d, generator=g, dtype=torch.float64) for _ in range(3))
    v = torch.randn(*lead, H, d, generator=g, dtype=torch.float64)
    return a, b, k, v


@pytest.mark.parametrize("L", [0, 1, 2, 37])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_ts_companion_krylov_matches_dense_powers(L, lead):
    a, b, k, v = _params(lead=lead)
    A = companion_matrix(a)
    M = (A + b.unsqueeze(-1) * k.unsqueeze(-2)).transpose(-1, -2)
    got, got_cl = companion_krylov(a, v, L), closed_loop_krylov(a, b, k, v, L)
    assert got.shape == got_cl.shape == (*lead, 4, 6, L)
    torch.testing.assert_close(got, companion_krylov_ref(a, v, L), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_cl, closed_loop_krylov_ref(a, b, k, v, L), rtol=1e-12, atol=1e-12)
    # the explicit matrix powers, independent of both implementations
    for l in range(L):
        torch.testing.assert_close(got[..., l], torch.einsum("hij,...hj->...hi", torch.linalg.matrix_power(A, l), v))
        torch.testing.assert_close(got_cl[..., l], torch.einsum("hij,...hj->...hi", torch.linalg.matrix_power(M, l), v))
    if L:
        torch.testing.assert_close(got, krylov(A, v, L), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(companion_kernel_recurrence(a, b, k, L), companion_kernel_ref(a, b, k, L))


def test_ts_companion_krylov_gradients():
    a, b, k, v = (t.requires_grad_() for t in _params(H=2, d=4, lead=(2,)))
    assert torch.autograd.gradcheck(lambda *t: companion_krylov(t[0], t[1], 7), (a, v))
    assert torch.autograd.gradcheck(lambda *t: closed_loop_krylov(*t, 7), (a, b, k, v))


def test_ts_companion_krylov_errors():
    a, b, k, v = _params()
    with pytest.raises(ValueError, match="v must have shape"):
        companion_krylov(a, v[..., :5], 3)
    with pytest.raises(ValueError, match="L must be a non-negative int"):
        closed_loop_krylov(a, b, k, v, -1)


@pytest.mark.parametrize("name", ["spacetime", "chimera"])
def test_ts_models_same_with_either_kernel_method(name):
    def build(method):
        torch.manual_seed(0)
        if name == "spacetime":
            return SpaceTime(24, 12, 3, d_model=16, n_blocks=1, kernel_dim=8, n_kernels=4, dropout=0.0,
                             kernel_method=method).double()
        return Chimera(24, 12, 3, d_model=8, d_state=4, kernel_dim=8, n_kernels=4, dropout=0.0,
                       kernel_method=method).double()
    x, y = torch.randn(2, 24, 3, dtype=torch.float64), torch.randn(2, 12, 3, dtype=torch.float64)
    losses, grads = [], []
    for method in ("squaring", "recurrence"):
        model = build(method)
        loss = model.loss(x, y, None, n_targets=3) if name == "spacetime" else (model(x) - y).pow(2).mean()
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in model.parameters() if p.grad is not None])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1, rtol=1e-8, atol=1e-10)
