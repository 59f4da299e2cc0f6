"""S-Mamba (Wang et al., "Is Mamba Effective for Time Series Forecasting?", 2024).

Each variate's window is one token (Linear L -> d_model), time features become extra tokens, and
bidirectional Mamba layers mix the tokens across variates; a Linear d_model -> H reads out the forecast.
Module names follow the official code (enc_embedding.value_embedding, encoder.attn_layers.{i}.attention /
attention_r / conv1 / conv2 / norm1 / norm2, encoder.norm, projector) so its checkpoints load directly; the
official layers' unused modules are left out.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.layers import Mamba
from ssmkit.core.ops import check_tensor

from .base import Forecaster
from .linear import NLinear


class InvertedEmbedding(nn.Module):
    """(B, L, N) values + (B, L, K) marks -> (B, N + K, d_model) tokens, one per variate / time feature."""

    def __init__(self, seq_len: int, d_model: int, dropout: float):
        super().__init__()
        self.value_embedding = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor]) -> torch.Tensor:
        tokens = x.transpose(1, 2) if x_mark is None else torch.cat([x, x_mark], dim=2).transpose(1, 2)
        return self.dropout(self.value_embedding(tokens))


class BiMambaEncoderLayer(nn.Module):
    """x + Mamba(x) + flip(Mamba_r(flip(x))) -> LayerNorm -> + FFN (k=1 convs, GELU) -> LayerNorm."""

    def __init__(self, d_model: int, d_ff: int, d_state: int, d_conv: int, expand: int, dropout: float,
                 activation: str = "gelu"):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        self.attention = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.attention_r = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, d_model, kernel_size=1)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = F.gelu if activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model), T tokens scanned both ways."""
        x = self.norm1(x + self.attention(x) + self.attention_r(x.flip(1)).flip(1))
        y = self.dropout(self.activation(self.conv1(x.transpose(1, 2))))
        y = self.dropout(self.conv2(y).transpose(1, 2))
        return self.norm2(x + y)


class BiMambaEncoder(nn.Module):
    """A stack of `BiMambaEncoderLayer` and a final LayerNorm."""

    def __init__(self, layers, d_model: int):
        super().__init__()
        self.attn_layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.attn_layers:
            x = layer(x)
        return self.norm(x)


class SMamba(Forecaster):
    """S-Mamba forecaster: x (B, L, N) [+ x_mark (B, L, K)] -> (B, H, N).

    Defaults are the paper's ETT scripts (d_model = d_ff = 256, e_layers 2, d_state 2, d_conv 2, expand 1,
    dropout 0.1, GELU) with per-window normalisation (`use_norm`).

    `linear_skip=True` adds an NLinear path (our extension, not in the paper): the forecast is NLinear(x) plus
    the S-Mamba output scaled by each window's std (no mean), so the SSM learns what a linear map of the window
    misses (e.g. calendar effects through the time-feature tokens). `fit_closed_form(x, y)` sets that path to
    its ridge solution and zeroes the S-Mamba read-out, so training starts from the NLinear-ridge forecast.
    """

    def __init__(self, seq_len: int = 96, pred_len: int = 96, enc_in: int = 7, d_model: int = 256, d_ff: int = 256,
                 e_layers: int = 2, d_state: int = 2, d_conv: int = 2, expand: int = 1, dropout: float = 0.1,
                 activation: str = "gelu", use_norm: bool = True, linear_skip: bool = False):
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in, self.use_norm = seq_len, pred_len, enc_in, use_norm
        self.enc_embedding = InvertedEmbedding(seq_len, d_model, dropout)
        self.encoder = BiMambaEncoder([BiMambaEncoderLayer(d_model, d_ff, d_state, d_conv, expand, dropout, activation)
                                       for _ in range(e_layers)], d_model)
        self.projector = nn.Linear(d_model, pred_len)
        self.linear = NLinear(seq_len, pred_len, enc_in) if linear_skip else None

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        sizes = check_tensor("x", x, ("batch", self.seq_len, self.enc_in))
        if x_mark is not None:
            check_tensor("x_mark", x_mark, ("batch", self.seq_len, None), sizes)
        skip = self.linear(x) if self.linear is not None else None
        if self.use_norm:
            mean = x.mean(1, keepdim=True).detach()
            x = x - mean
            std = torch.sqrt(x.var(1, keepdim=True, unbiased=False) + 1e-5)
            x = x / std
        tokens = self.encoder(self.enc_embedding(x, x_mark))
        y = self.projector(tokens).transpose(1, 2)[:, :, :self.enc_in]
        if skip is not None:
            return skip + (y * std if self.use_norm else y)
        return y * std + mean if self.use_norm else y

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3) -> None:
        """Ridge-fit the NLinear path on windows x (N, L, C) -> y (N, H, C) and zero the S-Mamba read-out."""
        if self.linear is None:
            raise ValueError("fit_closed_form needs SMamba(linear_skip=True)")
        self.linear.fit_closed_form(x, y, alpha)
        self.projector.weight.zero_()
        self.projector.bias.zero_()
