"""MHS-VM's multi-head scan (VSSGate with the MHSM module), (B, H, W, d_model) -> same.

in_proj -> (x, z); x -> depthwise kxk conv + SiLU -> x_ssproj into `num_heads` subspaces of d_model // num_heads
channels -> head i scans its subspace along its own two routes and their reversals (K = 4; default patterns C:
snakes, X: diagonal zig-zags, S: spirals, Z: raster/column), each with its own VMamba-style engine (RouteScan)
-> each route's output back in raster order -> gated fusion unit over the K routes
    y = sum_k y_k * ReLU(std_k(y) / (mean_k(y - min_k y) + 1e-5) - t)
-> concatenate heads -> cat_norm (LayerNorm) -> y_proj -> out_norm (LayerNorm) -> * SiLU(z).
As in the paper there is no out_proj: y_proj maps back to d_model.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..init import dt_rank as resolve_dt_rank
from ..init import to_factory
from ..ops import check_tensor
from ..ops.scan2d import cross_unscan
from .contract import reject_state
from .ss2d import RouteScan

HEAD_PATTERNS = (("snake", "snake_column"), ("diagonal", "diagonal_column"), ("spiral", "spiral_column"),
                 ("raster", "column"))


def gated_fusion(ys: torch.Tensor, t: float) -> torch.Tensor:
    """GFU: ys (B, K, ...) route outputs -> (B, ...), the route sum gated by the routes' coefficient of variation."""
    cv = ys.std(dim=1) / ((ys - ys.min(dim=1, keepdim=True).values).mean(dim=1) + 1e-5)
    return ys.sum(dim=1) * F.relu(cv - t)


class MultiHeadScan(nn.Module):
    """Multi-head 2-D scan mixer; `route_pairs[i]` gives head i's two routes (each scanned also reversed)."""

    def __init__(self, d_model: int, num_heads: int = 4, d_state: int = 16,
                 route_pairs: Optional[Sequence[Tuple[str, str]]] = None, gfu_t: float = 0.5, d_conv: int = 3,
                 conv_bias: bool = True, bias: bool = False, dt_rank: Union[int, str] = "auto",
                 backend: str = "auto", device=None, dtype=None):
        super().__init__()
        route_pairs = HEAD_PATTERNS[:num_heads] if route_pairs is None else tuple(route_pairs)
        if len(route_pairs) != num_heads or any(len(p) != 2 for p in route_pairs):
            raise ValueError(f"route_pairs must give two route names for each of the {num_heads} heads, "
                             f"got {route_pairs!r}")
        if not 1 <= num_heads <= d_model:
            raise ValueError(f"num_heads must be in [1, d_model={d_model}], got {num_heads}")
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be a positive odd kernel size, got {d_conv}")
        self.d_model, self.num_heads, self.gfu_t = d_model, num_heads, gfu_t
        self.dim_sub = d_model // num_heads
        rank = resolve_dt_rank(self.dim_sub, dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.conv2d = nn.Conv2d(d_model, d_model, d_conv, padding=(d_conv - 1) // 2, groups=d_model, bias=conv_bias)
        self.x_ssproj = nn.Linear(d_model, self.dim_sub * num_heads, bias=False)
        self.heads = nn.ModuleList(
            RouteScan(self.dim_sub, (a, a + "_reversed", b, b + "_reversed"), d_state, rank, backend=backend)
            for a, b in route_pairs)
        self.cat_norm = nn.LayerNorm(self.dim_sub * num_heads)
        self.y_proj = nn.Linear(self.dim_sub * num_heads, d_model, bias=False)
        self.out_norm = nn.LayerNorm(d_model)
        to_factory(self, device, dtype)

    def scan_heads(self, xh: torch.Tensor) -> torch.Tensor:
        """Subspace inputs (B, H, W, num_heads * dim_sub) -> pre-fusion outputs (B, num_heads, K, H, W, dim_sub)."""
        s = check_tensor("xh", xh, ("B", "H", "W", self.num_heads * self.dim_sub))
        parts = xh.split(self.dim_sub, dim=-1)
        return torch.stack([cross_unscan(head.scan(p), head.routes, s["H"], s["W"])
                            for head, p in zip(self.heads, parts)], dim=1)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, H, W, d_model) channels-last -> same shape (a 2-D scan: no state)."""
        reject_state(self, state, return_state)
        check_tensor("x", x, ("B", "H", "W", self.d_model))
        if x.shape[1] == 0 or x.shape[2] == 0:  # an empty image (H or W = 0): an empty output; conv2d rejects it
            return torch.zeros_like(x)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv2d(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        ys = self.scan_heads(self.x_ssproj(xs))                                   # (B, h, K, H, W, dim_sub)
        fused = torch.cat([gated_fusion(ys[:, i], self.gfu_t) for i in range(self.num_heads)], dim=-1)
        y = self.y_proj(self.cat_norm(fused.to(x.dtype)))
        return self.out_norm(y) * F.silu(z)
