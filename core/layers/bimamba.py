"""Bidirectional Mamba mixers, in the three forms published models use, and SIGMA's partial flip (fixed).

- variant="v2" (Vim "bimamba v2"): one in_proj/out_proj; the backward branch has its own conv1d_b, x_proj_b,
  dt_proj_b, A_b_log, D_b (Vim's key names) and scans the flipped x and z;
  out = out_proj((y_f + flip(y_b)) / 2) with `divide_out`, else out_proj(y_f + flip(y_b)).
- variant="caduceus": two Mamba mixers `mamba_fwd`, `mamba_rev` whose in_proj and out_proj are tied;
  out = M_f(x) + flip(M_r(flip(x))) ("add") or their product ("ew_multiply").
- variant="smamba" (S-Mamba): the same with two independent Mamba mixers.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dtypes import state_dtype
from ..ops import check_tensor
from ..ops.conv import causal_conv1d
from ..ops.selective_scan import selective_scan
from ..init import to_factory
from .contract import reject_state
from .mamba import Mamba

VARIANTS = ("v2", "caduceus", "smamba")
STRATEGIES = ("add", "ew_multiply")


def partial_flip(x: torch.Tensor, lengths: torch.Tensor, r: int = 0) -> torch.Tensor:
    """Reverse the first max(n - r, 0) items of each right-padded sequence (n = its length); keep the rest.

    x (batch, L, ...), lengths (batch,) ints in [0, L]. Items n - r .. n - 1 and all padding stay in place,
    so, unlike SIGMA's fixed index, no padding is ever moved into the sequence. Applying it twice is identity.
    """
    check_tensor("lengths", lengths, (x.shape[0],), floating=False)
    if lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if r < 0:
        raise ValueError(f"r must be >= 0, got {r}")
    L = x.shape[1]
    if ((lengths < 0) | (lengths > L)).any():
        raise ValueError(f"lengths must lie in [0, L={L}], got {lengths.tolist()}")
    k = (lengths.to(x.device) - r).clamp(min=0).unsqueeze(1)           # (batch, 1) items to reverse
    t = torch.arange(L, device=x.device).unsqueeze(0)
    index = torch.where(t < k, k - 1 - t, t)                            # (batch, L)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def _scan_branch(xs, z, conv1d, x_proj, dt_proj, A_log, D, d_state, backend):
    """One direction of the v2 mixer on (batch, d_inner, L): conv + SiLU -> x_proj -> scan gated by silu(z)."""
    xs = causal_conv1d(xs, conv1d.weight.squeeze(1), conv1d.bias, "silu")
    dt_rank = dt_proj.weight.shape[1]
    dt, B, C = x_proj(xs.transpose(1, 2)).split([dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, dt_proj.weight)
    f = state_dtype(xs)
    return selective_scan(xs, dt.transpose(1, 2), -torch.exp(A_log.to(f)), B.transpose(1, 2), C.transpose(1, 2),
                          D.to(f), z, dt_proj.bias.to(f), True, backend=backend)


class BiMamba(nn.Module):
    """Bidirectional Mamba mixer (B, L, d_model) -> (B, L, d_model); see the module docstring for variants.

    Remaining keyword arguments (d_state, d_conv, expand, dt_rank, dt_min, dt_max, ..., backend) are Mamba's.
    Bidirectional, hence not recurrent: it carries no state.
    """

    def __init__(self, d_model: int, variant: str = "v2", divide_out: bool = True, strategy: str = "add",
                 device=None, dtype=None, **mamba_kwargs):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.d_model, self.variant, self.divide_out, self.strategy = d_model, variant, divide_out, strategy
        fwd, rev = Mamba(d_model, **mamba_kwargs), Mamba(d_model, **mamba_kwargs)
        if variant == "v2":
            self.d_state, self.backend = fwd.d_state, fwd.backend
            for name in ("in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "D", "out_proj"):
                setattr(self, name, getattr(fwd, name))
            self.conv1d_b, self.x_proj_b, self.dt_proj_b = rev.conv1d, rev.x_proj, rev.dt_proj
            self.A_b_log, self.D_b = rev.A_log, rev.D
        else:
            if variant == "caduceus":
                rev.in_proj, rev.out_proj = fwd.in_proj, fwd.out_proj
            self.mamba_fwd, self.mamba_rev = fwd, rev
        to_factory(self, device, dtype, keep_fp32=("A_log", "D", "A_b_log", "D_b", "mamba_fwd.A_log", "mamba_fwd.D",
                                                    "mamba_rev.A_log", "mamba_rev.D"))

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, L, d_model) -> same shape."""
        reject_state(self, state, return_state)
        check_tensor("x", x, (None, None, self.d_model))
        if self.variant != "v2":
            y_f = self.mamba_fwd(x)
            y_b = self.mamba_rev(x.flip(1)).flip(1)
            return y_f + y_b if self.strategy == "add" else y_f * y_b
        xs, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)        # (B, d_inner, L) each
        y_f = _scan_branch(xs, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D,
                           self.d_state, self.backend)
        y_b = _scan_branch(xs.flip(-1), z.flip(-1), self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log,
                           self.D_b, self.d_state, self.backend)
        y = y_f + y_b.flip(-1)
        if self.divide_out:
            y = y / 2
        return self.out_proj(y.transpose(1, 2))
