"""Chimera (Behrouz, Santacatterina, Zabih, NeurIPS 2024): 2-D selective SSMs over the (time, variate) grid.

No official code exists; this is our reading of the paper on top of `ssmkit.core.layers.Chimera2DSSM`, whose
mixer already scans the variates in both directions (forward and backward modules, since variates have no
order) and gates its output with SiLU(z):

1. per-window normalisation of each variate (as S-Mamba / RevIN without affine parameters);
2. series decomposition: trend = centred moving average (kernel `kernel_size`), seasonal = x - trend;
3. two heads, each a stack of pre-norm residual 2-D SSM blocks on its own part, embedded per cell
   (Linear 1 -> d_model): the trend head discretises time with small steps (`trend_dt`: long memory), the
   seasonal head with larger ones (`seasonal_dt`); their outputs are summed and normalised;
4. a closed-loop companion decoder (SpaceTime's) reads each variate's (L, d_model) features and rolls its
   state forward, predicting its own next inputs, so `forecast(x, horizon)` serves any horizon; decoder
   parameters are shared by the variates, which exchange information in the 2-D encoder;
5. Linear d_model -> 1 per cell, de-normalise.
Time features are not used (the 2-D grid already carries the time axis).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ssmkit.core.layers import Chimera2DSSM, ClosedLoopCompanionSSM
from ssmkit.core.ops import check_tensor

from .base import Forecaster
from .linear import moving_average


class Chimera2DBlock(nn.Module):
    """x + dropout(Chimera2DSSM(LayerNorm(x))) on a grid (B, L, V, d_model)."""

    def __init__(self, d_model: int, d_state: int, expand: float, dt_range: Tuple[float, float], dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.mixer = Chimera2DSSM(d_model, d_state=d_state, expand=expand, dt_ranges=(tuple(dt_range),))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.mixer(self.norm(x)))


class ChimeraHead(nn.Module):
    """One part of the decomposed series (B, L, V) -> features (B, L, V, d_model): cell embedding, then blocks."""

    def __init__(self, d_model: int, e_layers: int, d_state: int, expand: float, dt_range: Tuple[float, float],
                 dropout: float):
        super().__init__()
        self.embedding = nn.Linear(1, d_model)
        self.blocks = nn.Sequential(*[Chimera2DBlock(d_model, d_state, expand, dt_range, dropout)
                                      for _ in range(e_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embedding(x.unsqueeze(-1)))


class Chimera(Forecaster):
    """Chimera forecaster: x (B, L, V) -> (B, H, V); `forecast(x, horizon)` rolls the closed loop any horizon."""

    def __init__(self, seq_len: int = 96, pred_len: int = 96, enc_in: int = 7, d_model: int = 32, e_layers: int = 1,
                 d_state: int = 8, expand: float = 1.0, kernel_size: int = 25,
                 trend_dt: Tuple[float, float] = (0.001, 0.01), seasonal_dt: Tuple[float, float] = (0.01, 0.1),
                 kernel_dim: int = 32, n_kernels: int = 8, dropout: float = 0.1, use_norm: bool = True,
                 kernel_method: str = "squaring"):
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.kernel_size, self.use_norm = kernel_size, use_norm
        self.trend = ChimeraHead(d_model, e_layers, d_state, expand, trend_dt, dropout)
        self.seasonal = ChimeraHead(d_model, e_layers, d_state, expand, seasonal_dt, dropout)
        self.norm = nn.LayerNorm(d_model)
        # kernel_method: the decoder's companion Krylov columns by dense squaring (default: at 8 kernels x d = 32
        # it costs about what the C++ recurrence does; the PyTorch recurrence was 3.6x slower at H = 720)
        self.decoder = ClosedLoopCompanionSSM(d_model, kernel_dim, n_kernels, kernel_method=kernel_method)
        self.output = nn.Linear(d_model, 1)

    def decompose(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(trend, seasonal) of x (B, L, V): centred moving average and the remainder; they sum to x."""
        trend = moving_average(x, self.kernel_size)
        return trend, x - trend

    def forecast(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """Read a window x (B, seq_len, V) and roll the decoder `horizon` steps: (B, horizon, V)."""
        check_tensor("x", x, ("batch", self.seq_len, self.enc_in))
        if self.use_norm:
            mean = x.mean(1, keepdim=True).detach()
            x = x - mean
            std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
            x = x / std
        trend, seasonal = self.decompose(x)
        h = self.norm(self.trend(trend) + self.seasonal(seasonal))             # (B, L, V, d_model)
        B, L, V, d = h.shape
        per_variate = h.permute(0, 2, 1, 3).reshape(B * V, L, d)
        y, _ = self.decoder.forecast(per_variate, horizon, next_inputs=False)   # (B*V, horizon, d_model)
        y = self.output(y).reshape(B, V, horizon).transpose(1, 2)
        return y * std + mean if self.use_norm else y

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, seq_len, V) -> (B, pred_len, V); `x_mark` is unused."""
        return self.forecast(x, self.pred_len)
