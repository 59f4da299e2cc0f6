"""Mamba mixer: forward against mamba_ssm's slow path written out, step == forward, continuation through
state, a mamba_ssm state_dict (d_model 768) loading strictly, and mamba_ssm's initialisation."""
import math

import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import Mamba
from ssmkit.core.layers.mamba import init_dt_bias
from ssmkit.core.ops import selective_scan_ref

F64 = torch.float64


def mamba(seed=0, **kw):
    torch.manual_seed(seed)
    m = Mamba(8, d_state=4, **kw).double()
    with torch.no_grad():  # move D and the conv bias away from their init so that they are exercised
        m.D.add_(torch.randn_like(m.D))
        if m.conv1d.bias is not None:
            m.conv1d.bias.add_(torch.randn_like(m.conv1d.bias))
    return m


def slow_forward(m, x):
    """mamba_simple.Mamba's non-fused path: nn.Conv1d's own forward (padded, cut to L) and the scan oracle."""
    L = x.shape[1]
    xz = m.in_proj(x).transpose(1, 2)
    xs, z = xz.chunk(2, dim=1)
    xs = F.silu(m.conv1d(xs)[..., :L])
    dbl = m.x_proj(xs.transpose(1, 2))
    dt, B, C = dbl.split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = (dt @ m.dt_proj.weight.T).transpose(1, 2)
    y = selective_scan_ref(xs, dt, -torch.exp(m.A_log), B.transpose(1, 2), C.transpose(1, 2), m.D, z,
                           m.dt_proj.bias, delta_softplus=True)
    return m.out_proj(y.transpose(1, 2))


@pytest.mark.parametrize("kw", [dict(), dict(d_conv=3, expand=1, dt_rank=3, bias=True, conv_bias=False)])
def test_forward_matches_slow_path(kw):
    m = mamba(**kw)
    x = torch.randn(2, 13, 8, dtype=F64)
    with torch.no_grad():
        assert torch.allclose(m(x), slow_forward(m, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(), dict(d_conv=2, expand=1.5, dt_rank=2)])
def test_step_equals_forward(kw, step_through):
    m = mamba(**kw)
    x = torch.randn(2, 11, 8, dtype=F64)
    with torch.no_grad():
        y, (conv_f, ssm_f) = m(x, return_state=True)
        steps, state = step_through(m, x)
    assert torch.allclose(steps, y, rtol=1e-12, atol=1e-12)
    assert torch.allclose(state[0], conv_f, rtol=1e-12, atol=1e-12)
    assert torch.allclose(state[1], ssm_f, rtol=1e-12, atol=1e-12)


def test_forward_continues_from_state_and_step_continues_forward():
    m = mamba(1)
    x = torch.randn(2, 15, 8, dtype=F64)
    with torch.no_grad():
        y = m(x)
        y1, s = m(x[:, :6], return_state=True)
        y2, s2 = m(x[:, 6:12], state=s, return_state=True)
        y3 = m(x[:, 12:], state=s2)
        assert torch.allclose(torch.cat([y1, y2, y3], 1), y, rtol=1e-12, atol=1e-12)
        y_t, _ = m.step(x[:, 6], s)
        assert torch.allclose(y_t, y[:, 6], rtol=1e-12, atol=1e-12)


def test_initial_state_shapes_and_dtypes():
    m = Mamba(8, d_state=4, d_conv=3)
    conv, ssm = m.initial_state(5)
    assert conv.shape == (5, 16, 2) and ssm.shape == (5, 16, 4)
    assert conv.dtype == ssm.dtype == torch.float32 and not conv.any() and not ssm.any()
    conv, ssm = m.double().initial_state(1)
    assert conv.dtype == ssm.dtype == F64


def test_fp32_forward_backward_reaches_every_parameter():
    m = Mamba(8, d_state=4)
    x = torch.randn(2, 9, 8)
    y = m(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    y.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


MAMBA_SSM_768 = {"in_proj.weight": (3072, 768), "conv1d.weight": (1536, 1, 4), "conv1d.bias": (1536,),
                 "x_proj.weight": (80, 1536), "dt_proj.weight": (1536, 48), "dt_proj.bias": (1536,),
                 "A_log": (1536, 16), "D": (1536,), "out_proj.weight": (768, 1536)}


def test_loads_mamba_ssm_state_dict_strictly():
    """The keys and shapes of mamba_ssm.modules.mamba_simple.Mamba(768) (mamba-130m's layers)."""
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(*s, generator=g) for k, s in MAMBA_SSM_768.items()}
    m = Mamba(768)
    assert m.dt_rank == 48 and m.d_inner == 1536
    assert m.load_state_dict(sd, strict=True) is not None
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(RuntimeError, match="Unexpected key"):
        m.load_state_dict({**sd, "extra.weight": torch.zeros(1)}, strict=True)


def test_initialisation_follows_mamba_ssm():
    m = Mamba(32, d_state=6, dt_min=0.01, dt_max=0.05)
    assert torch.allclose(m.A_log, torch.log(torch.arange(1.0, 7.0)).expand(64, 6))
    assert torch.equal(m.D, torch.ones(64))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    assert dt.max() / dt.min() > 2  # spread log-uniformly, not a constant
    bound = m.dt_rank ** -0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > 0.5 * bound
    assert m.A_log._optim == m.D._optim == {"weight_decay": 0.0} and m.dt_proj.bias._no_reinit


def test_dt_bias_inverts_softplus_and_floors():
    torch.manual_seed(0)
    dt = F.softplus(init_dt_bias(4000, 1e-3, 1e-1, 1e-4))
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    median = dt.median().item()  # log-uniform: median at the geometric mean
    assert abs(math.log(median) - 0.5 * (math.log(1e-3) + math.log(1e-1))) < 0.2
    assert torch.allclose(F.softplus(init_dt_bias(10, 1e-5, 1e-5, 1e-3)), torch.full((10,), 1e-3))
    with pytest.raises(ValueError, match="dt_min"):
        init_dt_bias(4, 0.1, 0.01, 1e-4)


def test_bad_input_names_argument():
    m = Mamba(8, d_state=4)
    with pytest.raises(ValueError, match=r"x must have shape \(\?, \?, 8\)"):
        m(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"x_t must have shape \(\?, 8\)"):
        m.step(torch.randn(2, 1, 8), m.initial_state(2))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        m(torch.ones(2, 5, 8, dtype=torch.long))
