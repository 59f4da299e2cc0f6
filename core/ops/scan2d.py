"""Scan routes over an H x W grid, and the cross-scan / cross-merge of VMamba's SS2D.

A route is a permutation `perm` of the raster-flattened grid: the sequence scanned along the route is
`x_flat[perm]`, and `seq[inverse]` puts a sequence back into raster order. Routes (each also `<name>_reversed`):

- `raster`: rows top to bottom, each left to right.        `column`: columns left to right, each top down.
- `snake`: boustrophedon by rows (first row left to right). `snake_column`: the same by columns.
- `diagonal`: zig-zag over anti-diagonals r + c = s from the top-left corner (as JPEG orders coefficients:
  even s run up-right, odd s run down-left).                 `diagonal_column`: its transpose.
- `spiral`: clockwise from the top-left corner inward.      `spiral_column`: its transpose (counter-clockwise).

cross_scan / cross_merge are pure index gathers (and a sum over routes): no arithmetic on the values,
no device context managers, so they are exact and adjoint to each other.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Sequence, Tuple

import torch

from ._checks import check_tensor


def _raster(H: int, W: int) -> List[int]:
    return list(range(H * W))


def _snake(H: int, W: int) -> List[int]:
    return [r * W + (c if r % 2 == 0 else W - 1 - c) for r in range(H) for c in range(W)]


def _diagonal(H: int, W: int) -> List[int]:
    order = []
    for s in range(H + W - 1):
        rows = range(max(0, s - W + 1), min(H - 1, s) + 1)
        rows = reversed(rows) if s % 2 == 0 else rows
        order.extend(r * W + (s - r) for r in rows)
    return order


def _spiral(H: int, W: int) -> List[int]:
    order = []
    top, bottom, left, right = 0, H - 1, 0, W - 1
    while top <= bottom and left <= right:
        order.extend(top * W + c for c in range(left, right + 1))
        order.extend(r * W + right for r in range(top + 1, bottom + 1))
        if top < bottom:
            order.extend(bottom * W + c for c in range(right - 1, left - 1, -1))
        if left < right:
            order.extend(r * W + left for r in range(bottom - 1, top, -1))
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return order


_BASE = {"raster": _raster, "snake": _snake, "diagonal": _diagonal, "spiral": _spiral}
_TRANSPOSED = {"column": "raster", "snake_column": "snake", "diagonal_column": "diagonal",
               "spiral_column": "spiral"}
ROUTES = tuple(n + s for n in (*_BASE, *_TRANSPOSED) for s in ("", "_reversed"))


def _order(name: str, H: int, W: int) -> List[int]:
    if name in _BASE:
        return _BASE[name](H, W)
    # The transposed route walks the W x H grid; position r' * H + c' there is (row c', col r') here.
    return [(i % H) * W + i // H for i in _BASE[_TRANSPOSED[name]](W, H)]


@lru_cache(maxsize=256)
def _route_cpu(name: str, H: int, W: int) -> Tuple[torch.Tensor, torch.Tensor]:
    base, reverse = (name[: -len("_reversed")], True) if name.endswith("_reversed") else (name, False)
    order = _order(base, H, W)
    perm = torch.tensor(order[::-1] if reverse else order, dtype=torch.long)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(H * W)
    return perm, inverse


def route(name: str, H: int, W: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(perm, inverse) LongTensors of length H*W: `x_flat[perm]` is the route, `seq[inverse]` undoes it."""
    if name not in ROUTES:
        raise ValueError(f"route name must be one of {list(ROUTES)}, got {name!r}")
    for arg, v in (("H", H), ("W", W)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{arg} must be a positive int, got {v!r}")
    perm, inverse = _route_cpu(name, H, W)
    return perm.clone(), inverse.clone()


def _stacked(routes: Sequence[str], H: int, W: int, device, which: int) -> torch.Tensor:
    if isinstance(routes, str) or len(routes) == 0:
        raise ValueError(f"routes must be a non-empty list of route names, got {routes!r}")
    return torch.stack([route(r, H, W)[which] for r in routes]).to(device)


def cross_scan(x: torch.Tensor, routes: Sequence[str]) -> torch.Tensor:
    """x (B, H, W, C) channels-last -> (B, K, H*W, C): the grid read along each of the K routes."""
    s = check_tensor("x", x, ("B", "H", "W", "C"), floating=False)
    perms = _stacked(routes, s["H"], s["W"], x.device, 0)                     # (K, L)
    return x.reshape(s["B"], s["H"] * s["W"], s["C"])[:, perms]


def cross_unscan(y: torch.Tensor, routes: Sequence[str], H: int, W: int) -> torch.Tensor:
    """y (B, K, H*W, C) in route order -> (B, K, H, W, C): each route put back into raster order, kept apart."""
    s = check_tensor("y", y, ("B", len(routes) if not isinstance(routes, str) else "K", H * W, "C"),
                     floating=False)
    inverses = _stacked(routes, H, W, y.device, 1)                            # (K, L)
    k = torch.arange(len(routes), device=y.device)[:, None]
    return y[:, k, inverses].reshape(s["B"], len(routes), H, W, s["C"])


def cross_merge(y: torch.Tensor, routes: Sequence[str], H: int, W: int) -> torch.Tensor:
    """y (B, K, H*W, C) in route order -> (B, H, W, C): each route put back into raster order, summed over K."""
    return cross_unscan(y, routes, H, W).sum(1)
