"""The one-step ops beside the scans: selective_state_update / ssd_state_update equal their `_ref` (one step of the
scan's sequential definition) and, stepped through a sequence, the scan itself; dtypes and named errors."""
import pytest
import torch

from ssmkit.core.ops import (selective_scan, selective_state_update, selective_state_update_ref, ssd, ssd_state_update,
                             ssd_state_update_ref)

F64 = torch.float64


def _scan_args(batch=2, dim=6, N=4, L=9, G=None, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    bc = (batch, N, L) if G is None else (batch, G, N, L)
    return dict(u=r(batch, dim, L), delta=r(batch, dim, L), A=-torch.rand(dim, N, generator=g, dtype=dtype) - 0.1,
                B=r(*bc), C=r(*bc), D=r(dim), z=r(batch, dim, L), delta_bias=r(dim), h0=r(batch, dim, N))


@pytest.mark.parametrize("G", [None, 1, 3])
def test_selective_state_update_equals_ref_and_the_scan(G):
    a = _scan_args(G=G)
    h, ys = a["h0"], []
    for t in range(a["u"].shape[-1]):
        step = [a["u"][..., t], a["delta"][..., t], a["A"], a["B"][..., t], a["C"][..., t], a["D"], a["z"][..., t],
                a["delta_bias"], True]
        y_t, h_new = selective_state_update(h, *step)
        y_ref, h_ref = selective_state_update_ref(h, *step)
        torch.testing.assert_close(y_t, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_new, h_ref, rtol=1e-12, atol=1e-12)
        h = h_new
        ys.append(y_t)
    y, last = selective_scan(a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"], True, True,
                             a["h0"], backend="torch")
    torch.testing.assert_close(torch.stack(ys, -1), y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, last, rtol=1e-10, atol=1e-10)


def test_selective_state_update_dtypes_and_errors():
    a = _scan_args(dtype=torch.float32)
    x = a["u"][..., 0].to(torch.bfloat16)
    y, h = selective_state_update(a["h0"], x, a["delta"][..., 0], a["A"], a["B"][..., 0], a["C"][..., 0], a["D"])
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    with pytest.raises(ValueError, match=r"state must have shape \(batch, dim, N\)"):
        selective_state_update(a["h0"][:, :5], a["u"][..., 0], a["delta"][..., 0], a["A"], a["B"][..., 0],
                               a["C"][..., 0])
    with pytest.raises(ValueError, match=r"dt must have shape \(batch, dim\)"):
        selective_state_update(a["h0"], a["u"][..., 0], a["delta"], a["A"], a["B"][..., 0], a["C"][..., 0])


def _ssd_args(batch=2, L=7, H=4, P=3, G=2, N=5, D_hdim=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    return dict(x=r(batch, L, H, P), dt=r(batch, L, H), A=-torch.rand(H, generator=g, dtype=F64) - 0.1,
                B=r(batch, L, G, N), C=r(batch, L, G, N), D=r(H, P) if D_hdim else r(H), z=r(batch, L, H, P),
                dt_bias=r(H), h0=r(batch, H, P, N))


@pytest.mark.parametrize("D_hdim,dt_limit", [(False, (0.0, float("inf"))), (True, (0.05, 0.5))])
def test_ssd_state_update_equals_ref_and_the_scan(D_hdim, dt_limit):
    a = _ssd_args(D_hdim=D_hdim)
    h, ys = a["h0"], []
    for t in range(a["x"].shape[1]):
        step = [a["x"][:, t], a["dt"][:, t], a["A"], a["B"][:, t], a["C"][:, t], a["D"], a["z"][:, t], a["dt_bias"],
                True, dt_limit]
        y_t, h_new = ssd_state_update(h, *step)
        y_ref, h_ref = ssd_state_update_ref(h, *step)
        torch.testing.assert_close(y_t, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_new, h_ref, rtol=1e-12, atol=1e-12)
        h = h_new
        ys.append(y_t)
    y, last = ssd(a["x"], a["dt"], a["A"], a["B"], a["C"], 4, D=a["D"], z=a["z"], dt_bias=a["dt_bias"],
                  dt_softplus=True, dt_limit=dt_limit, initial_states=a["h0"], return_final_states=True,
                  backend="torch")
    torch.testing.assert_close(torch.stack(ys, 1), y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, last, rtol=1e-10, atol=1e-10)


def test_ssd_state_update_dtypes_and_errors():
    a = {k: v.float() for k, v in _ssd_args().items()}
    y, h = ssd_state_update(a["h0"], a["x"][:, 0].bfloat16(), a["dt"][:, 0], a["A"], a["B"][:, 0], a["C"][:, 0])
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    with pytest.raises(ValueError, match=r"B must have shape \(batch, G, N\)"):
        ssd_state_update(a["h0"], a["x"][:, 0], a["dt"][:, 0], a["A"], a["B"], a["C"][:, 0])
    with pytest.raises(ValueError, match="must divide the H=4 heads"):
        ssd_state_update(a["h0"], a["x"][:, 0], a["dt"][:, 0], a["A"], a["B"][:, 0, :1].expand(2, 3, 5),
                         a["C"][:, 0, :1].expand(2, 3, 5))
