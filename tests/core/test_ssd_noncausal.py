"""Non-causal SSD (VSSD NC-SSD): dense L x L matrix form, sequential oracle, order-freedom."""
import pytest
import torch

from ssmkit.core.ops import ssd_noncausal, ssd_noncausal_ref

F64 = torch.float64


def make(batch=2, L=13, H=4, P=3, G=2, N=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    return dict(x=r(batch, L, H, P), dt=r(batch, L, H), A=torch.exp(r(H)), B=r(batch, L, G, N), C=r(batch, L, G, N),
                D=r(H, P), dt_bias=r(H))


@pytest.mark.parametrize("G", [1, 2, 4])
def test_ssd_noncausal_equals_dense_matrix(G):
    inp = make(G=G)
    y = ssd_noncausal(**inp, dt_softplus=True)
    batch, L, H, P = inp["x"].shape
    w = torch.nn.functional.softplus(inp["dt"] + inp["dt_bias"]) * inp["A"]     # (batch, L, H)
    for b in range(batch):
        for h in range(H):
            g = h // (H // G)
            M = inp["C"][b, :, g] @ inp["B"][b, :, g].T * w[b, :, h][None, :]     # M[i, j] = C_i . B_j w_j
            expected = M @ inp["x"][b, :, h] + inp["D"][h] * inp["x"][b, :, h]
            assert torch.allclose(y[b, :, h], expected, atol=1e-12, rtol=0)


def test_ssd_noncausal_is_order_free():
    inp = make(L=17)
    y = ssd_noncausal(**inp)
    perm = torch.randperm(17, generator=torch.Generator().manual_seed(5))
    permuted = {k: v[:, perm] if k in ("x", "dt", "B", "C") else v for k, v in inp.items()}
    assert torch.allclose(ssd_noncausal(**permuted), y[:, perm], atol=1e-12, rtol=0)


def test_ssd_noncausal_matches_sequential_ref_with_grads():
    leaves = {k: v.requires_grad_(True) for k, v in make().items()}
    up = torch.randn(2, 13, 4, 3, dtype=F64)
    y = ssd_noncausal(**leaves, dt_softplus=True)
    g = torch.autograd.grad((y * up).sum(), list(leaves.values()))
    y_r = ssd_noncausal_ref(**leaves, dt_softplus=True)
    g_r = torch.autograd.grad((y_r * up).sum(), list(leaves.values()))
    assert torch.allclose(y, y_r, atol=1e-11, rtol=0)
    for a, b in zip(g, g_r):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_ssd_noncausal_fp32_and_bad_input():
    inp = make()
    y32 = ssd_noncausal(**{k: v.float() for k, v in inp.items()})
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), ssd_noncausal_ref(**inp), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        ssd_noncausal(**{**inp, "B": torch.randn(2, 13, 3, 5, dtype=F64), "C": torch.randn(2, 13, 3, 5, dtype=F64)})
    with pytest.raises(ValueError, match="dt"):
        ssd_noncausal(**{**inp, "dt": torch.randn(2, 12, 4, dtype=F64)})
