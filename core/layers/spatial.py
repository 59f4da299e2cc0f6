"""Spatial-Mamba's structure-aware state fusion (SASF) SSM.

in_proj -> (x, z); x -> depthwise kxk conv + SiLU -> one raster-order selective scan that returns the hidden
states h -> state fusion h' = sum_i alpha_i DWConv3x3_{dilation d_i}(h) (dilations 1, 3, 5) -> observation
y = C . h' + D x -> LayerNorm -> * SiLU(z) -> out_proj.  Parameter names follow Spatial-Mamba
(`x_proj_weight (R+2N, d)`, `dt_projs_weight (d, R)`, `dt_projs_bias`, `A_logs (d, N)`, `Ds`,
`state_fusion.{kernel_3, kernel_3_1, kernel_3_2, alpha}`).

Border handling: replicate padding, as the original in both of its modes: training pads with `replicate`, and
evaluation folds the three kernels into one 11x11 depthwise kernel whose CUDA kernel clamps indices at the
borders, which is the same thing.
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
from ..ops.scan_states import selective_scan_states
from .contract import reject_state


class StateFusion(nn.Module):
    """h' = sum_i alpha_i * depthwise 3x3 conv of h with dilation d_i, replicate-padded to keep H x W."""

    def __init__(self, dim: int, dilations: Sequence[int] = (1, 3, 5)):
        super().__init__()
        if len(dilations) != 3 or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be three positive ints, got {dilations!r}")
        self.dim, self.dilations = dim, tuple(int(d) for d in dilations)
        self.kernel_3 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_1 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.kernel_3_2 = nn.Parameter(torch.ones(dim, 1, 3, 3))
        self.alpha = nn.Parameter(torch.ones(3))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h (B, dim, H, W) channels-first (as F.conv2d takes it) -> same shape."""
        if not torch.jit.is_scripting():  # check_tensor is Python-only; TorchScript skips it
            check_tensor("h", h, (None, self.dim, None, None))
        out = torch.zeros_like(h)
        kernels = [self.kernel_3, self.kernel_3_1, self.kernel_3_2]
        for i, d in enumerate(self.dilations):
            out = out + self.alpha[i] * F.conv2d(F.pad(h, [d, d, d, d], mode="replicate"), kernels[i].to(h.dtype),
                                                 dilation=d, groups=self.dim)
        return out


class StructureAwareSSM(nn.Module):
    """Spatial-Mamba mixer (B, H, W, d_model) -> (B, H, W, d_model)."""

    def __init__(self, d_model: int, d_state: int = 1, ssm_ratio: float = 2.0, dt_rank: Union[int, str] = "auto",
                 d_conv: int = 3, conv_bias: bool = True, bias: bool = False, dilations: Sequence[int] = (1, 3, 5),
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0,
                 backend: str = "auto", device=None, dtype=None):
        super().__init__()
        if d_conv < 1 or d_conv % 2 == 0:
            raise ValueError(f"d_conv must be a positive odd kernel size, got {d_conv}")
        d_inner = int(ssm_ratio * d_model)
        self.d_model, self.d_inner, self.d_state, self.backend = d_model, d_inner, d_state, backend
        self.dt_rank = resolve_dt_rank(d_model, dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias)
        bound = d_inner ** -0.5
        self.x_proj_weight = nn.Parameter(torch.empty(self.dt_rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(d_inner, self.dt_rank))
        init_dt_proj(self.dt_projs_weight, self.dt_rank, dt_scale)
        self.dt_projs_bias = nn.Parameter(init_dt_bias(d_inner, dt_min, dt_max, dt_init_floor))
        self.dt_projs_bias._no_reinit = True
        self.A_logs = nn.Parameter(s4d_real_A_log(d_inner, d_state=d_state))
        self.Ds = nn.Parameter(torch.ones(d_inner))
        set_optim(self.A_logs, weight_decay=0.0)
        set_optim(self.Ds, weight_decay=0.0)
        self.state_fusion = StateFusion(d_inner, dilations)
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        to_factory(self, device, dtype)

    def scan_states(self, x: torch.Tensor):
        """x (B, H, W, d_inner) -> (hidden states (B, d_inner, H*W, N) in raster order, C (B, N, H*W))."""
        s = check_tensor("x", x, ("B", "H", "W", self.d_inner))
        xs = x.reshape(s["B"], s["H"] * s["W"], self.d_inner)
        dt, Bm, Cm = (xs @ self.x_proj_weight.to(x.dtype).t()).split([self.dt_rank, self.d_state, self.d_state], -1)
        dt = dt @ self.dt_projs_weight.to(x.dtype).t()
        f = state_dtype(x)
        h = selective_scan_states(xs.transpose(1, 2), dt.transpose(1, 2), -torch.exp(self.A_logs.to(f)),
                                  Bm.transpose(1, 2).contiguous(), self.dt_projs_bias.to(f), True,
                                  backend=self.backend)
        return h, Cm.transpose(1, 2).to(f)

    def fuse_states(self, h: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Hidden states (B, d_inner, H*W, N) -> fused states, same shape (each of the N maps fused alike)."""
        Bsz, d, L, N = h.shape
        maps = h.permute(0, 3, 1, 2).reshape(Bsz * N, d, H, W)
        return self.state_fusion(maps).reshape(Bsz, N, d, L).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, H, W, d_model) channels-last -> same shape (a 2-D scan: no state)."""
        reject_state(self, state, return_state)
        s = check_tensor("x", x, ("B", "H", "W", self.d_model))
        if x.shape[1] == 0 or x.shape[2] == 0:  # an empty image (H or W = 0): an empty output; conv2d rejects it
            return torch.zeros_like(x)
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv2d(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        h, C = self.scan_states(xs)
        h = self.fuse_states(h, s["H"], s["W"])
        f = h.dtype
        y = (h * C.unsqueeze(1).transpose(-1, -2)).sum(-1)                      # (B, d_inner, L)
        y = y.transpose(1, 2).reshape_as(xs) + self.Ds.to(f) * xs.to(f)
        y = self.out_norm(y.to(x.dtype)) * F.silu(z)
        return self.out_proj(y)
