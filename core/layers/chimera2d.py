"""Chimera's 2-D SSM mixer over a multivariate series on a (time, variate) grid (B, L, V, d_model).

Our reading of Chimera (no official code; the 2-D recurrence is written out in `ssmkit.core.ops.chimera2d`):
in_proj -> (x, z); for each of two modules along the variate axis (forward, and backward on the variate-flipped
grid, since variates have no natural order) a per-cell projection gives the input-dependent steps delta1 (time),
delta2 (variates) and B1, B2, C1, C2; the 2-D selective scan runs; the two modules' outputs are summed
-> LayerNorm -> * SiLU(z) -> out_proj.

Two heads with different discretisation: the d_inner channels are split evenly over `dt_ranges`; each head's
delta1 bias is initialised log-uniformly in its own range (default: small steps for the trend head, which then
keeps a long memory along time, larger steps for the seasonal head). The series decomposition into trend and
seasonal inputs belongs to the model built on this layer.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dtypes import state_dtype
from ..init import dt_rank as resolve_dt_rank
from ..init import init_dt_bias, s4d_real_A_log, set_optim, to_factory
from ..ops import check_tensor
from ..ops.chimera2d import selective_scan_2d
from .contract import reject_state

DEFAULT_DT_RANGES = ((0.001, 0.01), (0.01, 0.1))


class Chimera2DSSM(nn.Module):
    """2-D selective SSM mixer (B, L, V, d_model) -> (B, L, V, d_model)."""

    def __init__(self, d_model: int, d_state: int = 16, expand: float = 1.0, dt_rank: Union[int, str] = "auto",
                 dt_ranges: Sequence[Tuple[float, float]] = DEFAULT_DT_RANGES,
                 variate_dt_range: Tuple[float, float] = (0.001, 0.1), coupling_init: float = 0.5,
                 dt_init_floor: float = 1e-4, bias: bool = False, device=None, dtype=None):
        super().__init__()
        d_inner = int(expand * d_model)
        if len(dt_ranges) == 0 or d_inner % len(dt_ranges):
            raise ValueError(f"dt_ranges must give a number of heads dividing d_inner={d_inner}, got {dt_ranges!r}")
        self.d_model, self.d_inner, self.d_state = d_model, d_inner, d_state
        self.dt_rank = resolve_dt_rank(d_model, dt_rank)
        R, N, K = self.dt_rank, d_state, 2                                     # K: forward, backward modules
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        bound = d_inner ** -0.5
        self.x_proj_weight = nn.Parameter(torch.empty(K, 2 * R + 4 * N, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(K, 2, d_inner, R).uniform_(-R ** -0.5, R ** -0.5))
        head = d_inner // len(dt_ranges)
        time_bias = lambda: torch.cat([init_dt_bias(head, lo, hi, dt_init_floor) for lo, hi in dt_ranges])
        self.dt_projs_bias = nn.Parameter(torch.stack([
            torch.stack([time_bias(), init_dt_bias(d_inner, *variate_dt_range, dt_init_floor)]) for _ in range(K)]))
        self.dt_projs_bias._no_reinit = True
        self.A_logs = nn.Parameter(s4d_real_A_log(K, 2, d_inner, d_state=N))    # (K, 2, d_inner, N): A1, A4
        self.couplings = nn.Parameter(torch.full((K, 2, d_inner, N), float(coupling_init)))  # rho2, rho3
        self.Ds = nn.Parameter(torch.ones(K, d_inner))
        set_optim(self.A_logs, weight_decay=0.0)
        set_optim(self.Ds, weight_decay=0.0)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        to_factory(self, device, dtype)

    def scan(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Module k's 2-D selective scan of x (B, L, V, d_inner) in its own variate order -> same shape."""
        R, N = self.dt_rank, self.d_state
        dt1, dt2, B1, B2, C1, C2 = (x @ self.x_proj_weight[k].to(x.dtype).t()).split([R, R, N, N, N, N], dim=-1)
        w = self.dt_projs_weight[k].to(x.dtype)
        f = state_dtype(x)
        return selective_scan_2d(x, dt1 @ w[0].t(), dt2 @ w[1].t(), -torch.exp(self.A_logs[k].to(f)),
                                 self.couplings[k].to(f), B1, B2, C1, C2, self.Ds[k].to(f),
                                 self.dt_projs_bias[k].to(f), True)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, L, V, d_model) -> same shape (bidirectional along the variates: no state)."""
        reject_state(self, state, return_state)
        check_tensor("x", x, ("B", "L", "V", self.d_model))
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        y = self.scan(xs, 0) + self.scan(xs.flip(2), 1).flip(2)
        return self.out_proj(self.out_norm(y) * F.silu(z))
