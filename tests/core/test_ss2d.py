"""SS2D: K routes equal K independent 1-D selective scans, merged; v0 and v05_noz forms train on CPU."""
import pytest
import torch
import torch.nn.functional as F

from ssmkit.core.layers import SS2D
from ssmkit.core.ops import cross_merge, route, selective_scan_ref


def _independent_scans(layer, x):
    """Oracle: for each route, gather the sequence, project, run the fp64 reference scan, scatter back, sum."""
    Bsz, H, W, d = x.shape
    N, R = layer.d_state, layer.dt_rank
    flat = x.reshape(Bsz, H * W, d)
    out = torch.zeros_like(flat)
    for k, name in enumerate(layer.routes):
        perm, inv = route(name, H, W)
        seq = flat[:, perm]                                                     # (B, L, d)
        dt, Bk, Ck = (seq @ layer.x_proj_weight[k].t()).split([R, N, N], dim=-1)
        dt = dt @ layer.dt_projs_weight[k].t()
        sl = slice(k * d, (k + 1) * d)
        y = selective_scan_ref(seq.transpose(1, 2), dt.transpose(1, 2), -torch.exp(layer.A_logs[sl]),
                               Bk.transpose(1, 2), Ck.transpose(1, 2), layer.Ds[sl], None,
                               layer.dt_projs_bias[k], True)
        out += y.transpose(1, 2)[:, inv]
    return out.reshape(Bsz, H, W, d)


@pytest.mark.parametrize("routes", [("raster", "column", "raster_reversed", "column_reversed"),
                                    ("snake", "spiral_reversed", "diagonal")])
def test_ss2d_equals_independent_route_scans(routes):
    torch.manual_seed(0)
    layer = SS2D(8, d_state=4, routes=routes).double()
    x = torch.randn(2, 5, 7, layer.d_inner, dtype=torch.float64)
    got = cross_merge(layer.scan(x), layer.routes, 5, 7)
    torch.testing.assert_close(got, _independent_scans(layer, x), rtol=1e-10, atol=1e-10)


def test_ss2d_forward_matches_explicit_pipeline():
    torch.manual_seed(1)
    layer = SS2D(8, d_state=4).double()
    x = torch.randn(1, 4, 3, 8, dtype=torch.float64)
    xs, z = layer.in_proj(x).chunk(2, dim=-1)
    xs = F.silu(F.conv2d(xs.permute(0, 3, 1, 2), layer.conv2d.weight, layer.conv2d.bias, padding=1,
                         groups=layer.d_inner)).permute(0, 2, 3, 1)
    y = F.layer_norm(_independent_scans(layer, xs), (layer.d_inner,), layer.out_norm.weight, layer.out_norm.bias)
    torch.testing.assert_close(layer(x), layer.out_proj(y * F.silu(z)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("forward_type", ["v0", "v05_noz"])
def test_ss2d_forward_backward_vmamba_shapes(forward_type):
    torch.manual_seed(0)
    layer = SS2D(96, d_state=16 if forward_type == "v0" else 1, forward_type=forward_type)
    names = dict(layer.named_parameters())
    assert names["x_proj_weight"].shape == (4, 6 + 2 * layer.d_state, 192)
    assert names["dt_projs_weight"].shape == (4, 192, 6) and names["dt_projs_bias"].shape == (4, 192)
    assert names["A_logs"].shape == (4 * 192, layer.d_state) and names["Ds"].shape == (4 * 192,)
    assert names["in_proj.weight"].shape == ((384 if forward_type == "v0" else 192), 96)
    assert ("conv2d.bias" in names) == (forward_type == "v0")
    x = torch.randn(2, 14, 14, 96)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    y.square().mean().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_ss2d_bad_input():
    layer = SS2D(8, d_state=2)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 8, 5, 6))      # channels-first
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(5, 6, 8))         # missing batch
    with pytest.raises(ValueError, match="route name"):
        SS2D(8, routes=("raster", "hilbert"))
    with pytest.raises(ValueError, match="forward_type"):
        SS2D(8, forward_type="v3")
