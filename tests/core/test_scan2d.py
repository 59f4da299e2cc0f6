"""Scan routes, cross_scan and cross_merge: exact permutations, exact inverses, adjointness."""
import itertools

import pytest
import torch

from ssmkit.core.ops import cross_merge, cross_scan, route
from ssmkit.core.ops.scan2d import ROUTES

SIZES = (1, 2, 5, 7, 14)


def _dyadic(*shape, dtype=torch.float64):
    """Random values with few mantissa bits, so sums of a handful of them are exact."""
    return torch.randint(-64, 64, shape).to(dtype) / 8


@pytest.mark.parametrize("H,W", list(itertools.product(SIZES, SIZES)))
def test_every_route_is_a_permutation_with_exact_inverse(H, W):
    for name in ROUTES:
        perm, inv = route(name, H, W)
        assert perm.dtype == torch.long and perm.shape == (H * W,)
        assert torch.equal(perm.sort().values, torch.arange(H * W)), name
        assert torch.equal(perm[inv], torch.arange(H * W)) and torch.equal(inv[perm], torch.arange(H * W))


@pytest.mark.parametrize("H,W", [(5, 7), (7, 5), (2, 14), (1, 5), (14, 14)])
def test_routes_are_walks_between_neighbours(H, W):
    """Snake and spiral move to a 4-neighbour each step; diagonal moves along or between anti-diagonals."""
    for name in ("snake", "snake_column", "spiral", "spiral_column"):
        r, c = route(name, H, W)[0].div(W, rounding_mode="floor"), route(name, H, W)[0] % W
        assert ((r.diff().abs() + c.diff().abs()) == 1).all(), name
    p = route("diagonal", H, W)[0]
    s = p // W + p % W
    assert (s.diff() >= 0).all() and (s.diff() <= 1).all()


def test_known_orders():
    grid = torch.arange(12).reshape(3, 4)
    assert route("raster", 3, 4)[0].tolist() == grid.flatten().tolist()
    assert route("column", 3, 4)[0].tolist() == grid.t().flatten().tolist()
    assert route("snake", 3, 4)[0].tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert route("spiral", 3, 4)[0].tolist() == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]
    assert route("diagonal", 3, 4)[0].tolist() == [0, 1, 4, 8, 5, 2, 3, 6, 9, 10, 7, 11]
    assert route("spiral_reversed", 3, 4)[0].tolist() == [6, 5, 4, 8, 9, 10, 11, 7, 3, 2, 1, 0]
    assert route("snake_column", 2, 2)[0].tolist() == [0, 2, 3, 1]


@pytest.mark.parametrize("H,W", [(1, 1), (2, 5), (7, 2), (5, 14), (14, 7)])
def test_cross_merge_of_cross_scan_is_K_times_x(H, W):
    x = _dyadic(2, H, W, 3)
    for routes in (["raster", "column", "raster_reversed", "column_reversed"], list(ROUTES)):
        xs = cross_scan(x, routes)
        assert xs.shape == (2, len(routes), H * W, 3)
        for k, name in enumerate(routes):
            assert torch.equal(xs[:, k], x.reshape(2, H * W, 3)[:, route(name, H, W)[0]])
        assert torch.equal(cross_merge(xs, routes, H, W), len(routes) * x)


@pytest.mark.parametrize("H,W", [(5, 7), (14, 2)])
def test_cross_scan_and_cross_merge_are_adjoint(H, W):
    routes = ["snake", "diagonal_reversed", "spiral", "column"]
    x, y = _dyadic(2, H, W, 4), _dyadic(2, len(routes), H * W, 4)
    assert torch.equal((cross_scan(x, routes) * y).sum(), (x * cross_merge(y, routes, H, W)).sum())


def test_vmamba_four_directions():
    """VMamba's cross-scan: row-major, column-major, and both flipped."""
    x = torch.randn(1, 3, 5, 2)
    xs = cross_scan(x, ["raster", "column", "raster_reversed", "column_reversed"])
    rows, cols = x.reshape(1, 15, 2), x.transpose(1, 2).reshape(1, 15, 2)
    for k, ref in enumerate((rows, cols, rows.flip(1), cols.flip(1))):
        assert torch.equal(xs[:, k], ref)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="route name"):
        route("zigzag", 3, 3)
    with pytest.raises(ValueError, match="H must be"):
        route("raster", 0, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        cross_scan(torch.randn(2, 3, 4), ["raster"])
    with pytest.raises(ValueError, match="route name"):
        cross_scan(torch.randn(1, 2, 2, 3), ["raster", "nope"])
    with pytest.raises(ValueError, match="routes must be"):
        cross_scan(torch.randn(1, 2, 2, 3), "raster")
    with pytest.raises(ValueError, match="y must have shape"):
        cross_merge(torch.randn(1, 2, 5, 3), ["raster", "column"], 2, 3)
    with pytest.raises(ValueError, match="y must have shape"):
        cross_merge(torch.randn(1, 3, 6, 3), ["raster", "column"], 2, 3)
