"""VMamba's SS2D: a selective scan along K routes over an image, merged back into the grid.

in_proj -> (x, z) -> depthwise kxk conv + SiLU -> cross_scan along K routes -> per-route x_proj (dt, B, C) and
dt_proj -> one grouped selective scan (u (B, K*d, L), B/C (B, K, N, L)) -> cross_merge -> LayerNorm
-> * SiLU(z) (v0 only) -> out_proj.  Parameter names and shapes follow VMamba (`x_proj_weight (K, R+2N, d)`,
`dt_projs_weight (K, d, R)`, `dt_projs_bias (K, d)`, `A_logs (K*d, N)`, `Ds (K*d)`, `in_proj`, `conv2d`,
`out_norm`, `out_proj`), so official checkpoints load by name.

forward_type "v0" (VMamba v0, "vanilla"): in_proj is 2*d_inner wide, conv with bias, SiLU(z) gate.
forward_type "v05_noz" (VMamba v2 "v05_noz"): no z branch, in_proj is d_inner wide, conv without bias.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dtypes import state_dtype
from ..init import dt_rank as resolve_dt_rank
from ..init import init_dt_bias, init_dt_proj, s4d_real_A_log, set_optim, to_factory
from ..ops import check_tensor
from ..ops.scan2d import cross_merge, cross_scan, route
from ..ops.selective_scan import selective_scan
from .contract import reject_state

VMAMBA_ROUTES = ("raster", "column", "raster_reversed", "column_reversed")
FORWARD_TYPES = ("v0", "v05_noz")


class RouteScan(nn.Module):
    """K per-route selective scans over a (B, H, W, d_inner) grid with VMamba's stacked parameters.

    `scan(x)` returns the K outputs in route order, (B, K, H*W, d_inner); SS2D and MultiHeadScan build on it.
    """

    def __init__(self, d_inner: int, routes: Sequence[str] = VMAMBA_ROUTES, d_state: int = 16,
                 dt_rank: int = 1, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 dt_scale: float = 1.0, backend: str = "auto"):
        super().__init__()
        if isinstance(routes, str) or len(routes) == 0:
            raise ValueError(f"routes must be a non-empty list of route names, got {routes!r}")
        for name in routes:
            route(name, 1, 1)  # raises on unknown names now, not at the first forward
        self.routes, self.d_inner, self.d_state, self.dt_rank = tuple(routes), d_inner, d_state, dt_rank
        self.backend = backend
        K = len(self.routes)
        bound = d_inner ** -0.5  # nn.Linear's default init, as each of VMamba's x_proj Linears
        self.x_proj_weight = nn.Parameter(torch.empty(K, dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, d_inner, dt_rank))
        init_dt_proj(self.dt_projs_weight, dt_rank, dt_scale)
        self.dt_projs_bias = nn.Parameter(torch.stack([init_dt_bias(d_inner, dt_min, dt_max, dt_init_floor)
                                                       for _ in range(K)]))
        self.dt_projs_bias._no_reinit = True
        self.A_logs = nn.Parameter(s4d_real_A_log(K * d_inner, d_state=d_state))
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        set_optim(self.A_logs, weight_decay=0.0)
        set_optim(self.Ds, weight_decay=0.0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, d_inner) -> (B, K, H*W, d_inner): route k's selective scan, in route k's order."""
        s = check_tensor("x", x, ("B", "H", "W", self.d_inner))
        Bsz, K, L, d, N = s["B"], len(self.routes), s["H"] * s["W"], self.d_inner, self.d_state
        xs = cross_scan(x, self.routes).transpose(2, 3)                         # (B, K, d, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(x.dtype))
        dts, Bs, Cs = x_dbl.split([self.dt_rank, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(x.dtype))
        f = state_dtype(x)
        y = selective_scan(xs.reshape(Bsz, K * d, L), dts.reshape(Bsz, K * d, L), -torch.exp(self.A_logs.to(f)),
                           Bs.contiguous(), Cs.contiguous(), self.Ds.to(f), None,
                           self.dt_projs_bias.to(f).reshape(-1), True, backend=self.backend)
        return y.reshape(Bsz, K, d, L).transpose(2, 3)

    forward = scan


class SS2D(RouteScan):
    """2-D selective scan mixer (B, H, W, d_model) -> (B, H, W, d_model)."""

    def __init__(self, d_model: int, d_state: int = 16, ssm_ratio: float = 2.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: Union[bool, None] = None, bias: bool = False,
                 forward_type: str = "v0", routes: Sequence[str] = VMAMBA_ROUTES, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0, backend: str = "auto",
                 device=None, dtype=None):
        if forward_type not in FORWARD_TYPES:
            raise ValueError(f"forward_type must be one of {FORWARD_TYPES}, got {forward_type!r}")
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be a positive odd kernel size, got {d_conv}")
        d_inner = int(ssm_ratio * d_model)
        rank = resolve_dt_rank(d_model, dt_rank)
        super().__init__(d_inner, routes, d_state, rank, dt_min, dt_max, dt_init_floor, dt_scale, backend)
        self.d_model, self.forward_type = d_model, forward_type
        self.gated = forward_type == "v0"
        conv_bias = self.gated if conv_bias is None else conv_bias
        self.in_proj = nn.Linear(d_model, d_inner * (2 if self.gated else 1), bias=bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        to_factory(self, device, dtype)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, H, W, d_model) channels-last -> same shape (a 2-D scan: no state)."""
        reject_state(self, state, return_state)
        s = check_tensor("x", x, ("B", "H", "W", self.d_model))
        if x.shape[1] == 0 or x.shape[2] == 0:  # an empty image (H or W = 0): an empty output; conv2d rejects it
            return torch.zeros_like(x)
        xz = self.in_proj(x)
        xs, z = xz.chunk(2, dim=-1) if self.gated else (xz, None)
        xs = F.silu(self.conv2d(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        y = cross_merge(self.scan(xs), self.routes, s["H"], s["W"])
        y = self.out_norm(y.to(x.dtype))
        if z is not None:
            y = y * F.silu(z)
        return self.out_proj(y)
