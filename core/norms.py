"""Normalisation layers shared by mixers and blocks: RMSNorm and Mamba-2's gated RMSNorm.

They live apart from `blocks` so that mixers (core/layers) can use them while `blocks` builds on the mixers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32, returned in x's dtype."""

    def __init__(self, d: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.to(y.dtype)).to(x.dtype)


class RMSNormGated(nn.Module):
    """Mamba-2's gated RMSNorm: norm(x * silu(z)) (or norm(x) * silu(z)), per group of `group_size` channels."""

    def __init__(self, d: int, eps: float = 1e-5, norm_before_gate: bool = False, group_size: Optional[int] = None,
                 device=None, dtype=None):
        super().__init__()
        self.eps, self.norm_before_gate = eps, norm_before_gate
        self.group_size = group_size or d
        if d % self.group_size:
            raise ValueError(f"group_size={group_size} must divide d={d}")
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if z is not None and not self.norm_before_gate:
            xf = xf * F.silu(z.to(xf.dtype))
        g = xf.unflatten(-1, (-1, self.group_size))
        y = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2) * self.weight.to(xf.dtype)
        if z is not None and self.norm_before_gate:
            y = y * F.silu(z.to(y.dtype))
        return y.to(x.dtype)
