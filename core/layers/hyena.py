"""Hyena operator of HyenaDNA (order 2, causal), parameter names as in `standalone_hyenadna.py`.

in_proj to 3 branches (x0, x1, v) -> short causal depthwise conv (k=3) -> v = v * x1 -> long conv with an
implicit filter h + per-channel bias skip -> y = out_proj(v * x0). The filter is an MLP with Sin
activations (one learnable frequency vector shared by all layers) over positional features
[t, Re/Im exp(-i f 2 pi k / L)], times an exponential decay window. As in HyenaDNA, the filter MLP's parameters
(Sin frequencies included) carry the optimiser hint `_optim = {"weight_decay": 0.0[, "lr": filter_lr]}`
(`ssmkit.core.init.set_optim`; filter_lr=None keeps the task's lr).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..init import set_optim, to_factory
from ..ops import check_tensor
from ..ops.fft_conv import fft_conv
from .contract import reject_state
from ._validate import check_input_dtype, check_positive_ints


class Sin(nn.Module):
    """sin(freq * x) with a learnable frequency per feature."""

    def __init__(self, dim: int, w: float = 10.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(1, dim))

    def forward(self, x):
        return torch.sin(self.freq * x)


class PositionalEmbedding(nn.Module):
    """Fixed features z (1, l_max, emb_dim) = [t in [0, 1], Re and Im of exp(-i f 2 pi k / l_max)] and t."""

    def __init__(self, emb_dim: int, l_max: int):
        super().__init__()
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, l_max)[None, :, None]
        w = 2 * math.pi * torch.arange(l_max, dtype=torch.float32)[None, :, None] / l_max
        f = torch.linspace(1e-4, bands - 1, bands)[None, None]
        z = torch.exp(-1j * f * w)
        self.register_buffer("z", torch.cat([t, z.real, z.imag], dim=-1))
        self.register_buffer("t", t)

    def forward(self, L: int):
        return self.z[:, :L], self.t[:, :L]


class ExponentialModulation(nn.Module):
    """h <- h * (exp(-t |delta_c|) + shift), decay rates spread from slow to fast across channels (fixed)."""

    def __init__(self, d_model: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2, shift: float = 0.05):
        super().__init__()
        self.shift = shift
        deltas = torch.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, d_model)
        self.register_buffer("deltas", deltas[None, None])

    def forward(self, t, h):
        return h * (torch.exp(-t * self.deltas.abs()) + self.shift)


class HyenaFilter(nn.Module):
    """Implicit long filter: (L,) positions -> (L, d_model) kernel; `bias` is the per-channel skip."""

    def __init__(self, d_model: int, l_max: int, emb_dim: int = 5, filter_order: int = 64, num_inner_mlps: int = 2,
                 w: float = 10.0, lr: Optional[float] = None):
        super().__init__()
        if emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine and sine features), got {emb_dim}")
        self.bias = nn.Parameter(torch.randn(d_model))
        self.pos_emb = PositionalEmbedding(emb_dim, l_max)
        act = Sin(filter_order, w)  # one module: the frequencies are shared by every Sin
        layers = [nn.Linear(emb_dim, filter_order), act]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(filter_order, filter_order), act]
        layers.append(nn.Linear(filter_order, d_model, bias=False))
        self.implicit_filter = nn.Sequential(*layers)
        for p in self.implicit_filter.parameters():
            set_optim(p, weight_decay=0.0, lr=lr)
        self.modulation = ExponentialModulation(d_model)

    def filter(self, L: int) -> torch.Tensor:
        """The (L, d_model) filter, in the parameters' precision even under autocast: Sin MLPs of positions lose
        most of their accuracy in bf16 (the filter was 19-30% off, the layer 0.11 relative error; issue 17)."""
        z, t = self.pos_emb(L)
        with torch.autocast(z.device.type, enabled=False):
            return self.modulation(t, self.implicit_filter(z))[0]


class Hyena(nn.Module):
    """HyenaDNA's order-2 Hyena operator: (B, L, d_model) -> (B, L, d_model), causal, L <= l_max."""

    def __init__(self, d_model: int, l_max: int, filter_order: int = 64, emb_dim: int = 5, w: float = 10.0,
                 short_filter_order: int = 3, dropout: float = 0.0, filter_lr: Optional[float] = None,
                 device=None, dtype=None):
        super().__init__()
        check_positive_ints("Hyena", d_model=d_model, l_max=l_max, filter_order=filter_order,
                            short_filter_order=short_filter_order)
        self.d_model, self.l_max = d_model, l_max
        inner = 3 * d_model
        self.in_proj = nn.Linear(d_model, inner)
        self.out_proj = nn.Linear(d_model, d_model)
        self.short_filter = nn.Conv1d(inner, inner, short_filter_order, padding=short_filter_order - 1, groups=inner)
        self.filter_fn = HyenaFilter(d_model, l_max, emb_dim, filter_order, w=w, lr=filter_lr)
        self.dropout = nn.Dropout(dropout)
        to_factory(self, device, dtype)

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """x (B, L, d_model) -> same shape, L <= l_max. The implicit filter is as long as the sequence: no
        finite state carries it over, so Hyena takes none."""
        reject_state(self, state, return_state)
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype("Hyena", "x", x, self.in_proj.weight)
        L = x.shape[1]
        if L > self.l_max:
            raise ValueError(f"sequence length {L} exceeds l_max = {self.l_max} (x has shape {tuple(x.shape)})")
        u = self.in_proj(x).transpose(1, 2)
        u = self.short_filter(u)[..., :L] if L else u  # padding both sides then keeping the first L outputs: causal
        x0, x1, v = u.split(self.d_model, dim=1)
        h = self.filter_fn.filter(L).transpose(0, 1)  # (d_model, L)
        v = self.dropout(v * x1)
        v = fft_conv(v, h) + v * self.filter_fn.bias.unsqueeze(-1)  # h stays fp32: fft_conv computes in it
        return self.out_proj((v * x0).transpose(1, 2))
