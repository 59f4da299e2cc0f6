"""Hydra: its dense quasiseparable matrix, zero-diagonal scan terms, two-sided dependence, hydra's key layout."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import Hydra
from ssmkit.core.layers.hydra import shifted_scans

F64 = torch.float64


def test_hydra_state_dict_matches_goombalab_layout():
    m = Hydra(256)  # d_inner 512, headdim 64 -> 8 heads, d_state 64, ngroups 1
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"in_proj.weight": (2 * 512 + 4 * 64 + 16, 256), "conv1d.weight": (512 + 4 * 64, 1, 7),
                      "conv1d.bias": (768,), "dt_bias": (8,), "A_log": (8,), "D": (8,), "fc_D.weight": (8, 512),
                      "norm.weight": (512,), "out_proj.weight": (256, 512)}
    assert torch.equal(m.A_log, torch.zeros(8))


def dense_hydra(m, u):
    """Hydra written as its L x L mixing matrix per (batch, head): shift(SS_f) + flipped shift(SS_b) + diagonal."""
    H, P, G, N, di = m.nheads, m.headdim, m.ngroups, m.d_state, m.d_inner
    batch, L, _ = u.shape
    z, xBC, dt = m.in_proj(u).split([di, m.conv_dim, 2 * H], dim=-1)
    xBC = F.silu(F.conv1d(xBC.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=m.d_conv // 2,
                          groups=m.conv_dim)).transpose(1, 2)
    x, Bf, Cf, Bb, Cb = xBC.split([di, G * N, G * N, G * N, G * N], dim=-1)
    dtf, dtb = (F.softplus(d + m.dt_bias) for d in dt.split([H, H], dim=-1))
    A = -torch.exp(m.A_log)
    diag = x @ m.fc_D.weight.T + m.D
    y = torch.zeros(batch, L, H, P, dtype=u.dtype)
    i, j = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    for b in range(batch):
        for h in range(H):
            g = slice((h // (H // G)) * N, (h // (H // G) + 1) * N)
            Ef = F.pad(torch.cumsum(dtf[b, :, h] * A[h], 0), (1, 0))      # Ef[k] = sum of log-decays before k
            Eb = F.pad(torch.cumsum(dtb[b, :, h] * A[h], 0), (1, 0))
            # forward SS[i, j] = C_i.B_j exp(a_{j+1} + ... + a_i) dt_j (i >= j); backward mirrors it (j >= i)
            SSf = (Cf[b, :, g] @ Bf[b, :, g].T) * torch.exp(Ef[1:, None] - Ef[None, 1:]) * dtf[b, :, h] * (i >= j)
            SSb = (Cb[b, :, g] @ Bb[b, :, g].T) * torch.exp(Eb[None, :-1] - Eb[:-1, None]) * dtb[b, :, h] * (j >= i)
            M = torch.zeros(L, L, dtype=u.dtype)
            M[1:] += SSf[:-1]                                            # shift: row t reads SS_f row t - 1
            M[:-1] += SSb[1:]                                            # row t reads SS_b row t + 1
            M += torch.diag(diag[b, :, h])
            y[b, :, h] = M @ x[b, :, h * P:(h + 1) * P]
    return m.out_proj(m.norm(y.flatten(-2), z))


@pytest.mark.parametrize("L,ngroups,chunk", [(1, 1, 4), (24, 2, 5), (64, 1, 16)])
def test_hydra_equals_dense_quasiseparable_matrix(L, ngroups, chunk):
    torch.manual_seed(0)
    m = Hydra(8, d_state=3, headdim=4, ngroups=ngroups, chunk_size=chunk).double()
    with torch.no_grad():
        m.A_log.copy_(torch.randn(m.nheads))
        u = torch.randn(2, L, 8, dtype=F64)
        assert torch.allclose(m(u), dense_hydra(m, u), atol=1e-11, rtol=0)


def test_hydra_scan_terms_are_strictly_triangular():
    """d y_fw[t] / d x[s] = 0 for s >= t and d y_bw[t] / d x[s] = 0 for s <= t: no scan term has a diagonal."""
    g = torch.Generator().manual_seed(1)
    L, H, P, G, N = 7, 2, 2, 1, 3
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)
    dt_f, dt_b, B_f, C_f, B_b, C_b = r(1, L, H), r(1, L, H), r(1, L, G, N), r(1, L, G, N), r(1, L, G, N), r(1, L, G, N)
    A = -torch.rand(H, generator=g, dtype=F64) - 0.1
    x = r(1, L, H, P)
    for term in (0, 1):
        J = torch.autograd.functional.jacobian(
            lambda x: shifted_scans(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, chunk_size=3)[term], x)
        dep = J.abs().sum((0, 2, 3, 4, 6, 7))                            # (t, s): how much y[t] depends on x[s]
        t, s = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
        allowed = s < t if term == 0 else s > t
        assert dep[~allowed].abs().max() == 0
        assert (dep[allowed] > 0).all()


def test_hydra_output_depends_on_both_sides_beyond_the_conv():
    torch.manual_seed(2)
    m = Hydra(8, d_state=4, headdim=4).double()
    u = torch.randn(1, 30, 8, dtype=F64, requires_grad=True)
    m(u)[0, 15].sum().backward()
    per_pos = u.grad.abs().sum((0, 2))
    assert per_pos[:12].min() > 0 and per_pos[19:].min() > 0            # outside the conv's reach of +-3


def test_hydra_bad_arguments():
    with pytest.raises(ValueError, match="d_conv"):
        Hydra(8, headdim=4, d_conv=4)
    with pytest.raises(ValueError, match="headdim"):
        Hydra(8, headdim=5)
    with pytest.raises(ValueError, match="u"):
        Hydra(8, headdim=4)(torch.randn(1, 3, 7))
