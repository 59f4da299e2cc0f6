"""MultiHeadScan (MHS-VM): independent heads along their own routes, gated route fusion, shapes and gradients."""
import pytest
import torch

from ssmkit.core.layers import MultiHeadScan
from ssmkit.core.layers.multihead_scan import gated_fusion
from ssmkit.core.ops import route


def test_heads_are_independent():
    torch.manual_seed(0)
    layer = MultiHeadScan(16, num_heads=4, d_state=4).double()
    xh = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    base = layer.scan_heads(xh)
    assert base.shape == (2, 4, 4, 5, 7, 4)
    for j in range(4):
        bumped = xh.clone()
        bumped[..., 4 * j:4 * (j + 1)] += torch.randn(2, 5, 7, 4, dtype=torch.float64)
        out = layer.scan_heads(bumped)
        for i in range(4):
            changed = not torch.equal(out[:, i], base[:, i])
            assert changed == (i == j), (i, j)


def test_each_head_scans_along_its_routes():
    """Route k of a head is causal along that route: output at route position p ignores later positions."""
    torch.manual_seed(0)
    layer = MultiHeadScan(8, num_heads=2, d_state=2).double()
    H, W = 4, 3
    xh = torch.randn(1, H, W, 8, dtype=torch.float64, requires_grad=True)
    ys = layer.scan_heads(xh)
    head, k = 1, 2                               # head 1 = diagonal patterns; route 2 = "diagonal_column"
    perm, _ = route(layer.heads[head].routes[k], H, W)
    p = 5
    cell = perm[p].item()
    ys[0, head, k].reshape(H * W, -1)[cell].sum().backward()
    g = xh.grad[0, ..., 4:8].reshape(H * W, -1).abs().sum(-1)
    assert (g[perm[:p + 1]] > 0).all() and (g[perm[p + 1:]] == 0).all()


def test_gated_fusion_formula():
    ys = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    for t in (0.0, 0.5):
        ref = torch.zeros(2, 3, 5, dtype=torch.float64)
        for idx in torch.cartesian_prod(torch.arange(2), torch.arange(3), torch.arange(5)).tolist():
            b, i, j = idx
            v = ys[b, :, i, j]
            mean = sum(v.tolist()) / 4
            std = (sum((e - mean) ** 2 for e in v.tolist()) / 3) ** 0.5
            cv = std / (sum(e - min(v.tolist()) for e in v.tolist()) / 4 + 1e-5)
            ref[b, i, j] = sum(v.tolist()) * max(cv - t, 0.0)
        torch.testing.assert_close(gated_fusion(ys, t), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("heads,H,W", [(3, 5, 9), (4, 6, 2)])
def test_shape_and_gradients_non_square(heads, H, W):
    torch.manual_seed(0)
    layer = MultiHeadScan(24, num_heads=heads, d_state=4, gfu_t=0.0)
    assert layer.heads[0].x_proj_weight.shape == (4, 1 + 8, 24 // heads)
    x = torch.randn(2, H, W, 24)
    y = layer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for n, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_multihead_bad_input():
    layer = MultiHeadScan(8, num_heads=2, d_state=2)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(1, 8, 4, 5))
    with pytest.raises(ValueError, match="route name"):
        MultiHeadScan(8, num_heads=1, route_pairs=[("raster", "hilbert")])
    with pytest.raises(ValueError, match="route_pairs"):
        MultiHeadScan(8, num_heads=2, route_pairs=[("raster", "column")])
