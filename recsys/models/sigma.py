"""SIGMA (Liu et al., AAAI 2025; ziwliu-cityu/SIMGA `model/gated_mamba.py`): Mamba4Rec's layer stack with the
mixer replaced by a G-Mamba block of three streams fused by learnable weights:

- PF-Mamba: one Mamba (shared weights) reads the history x and its partial flip x_f, in which the first n - r real
  items are reversed and the last r stay in place;
- DS gates: h = x + Dense(x), g = Dropout(Linear_si(SiLU(h)) + Linear_sig(Sigmoid(h))), y = Mamba(.) * (1 + g),
  with Dense separate per direction and the two gate Linears shared;
- FE-GRU: Conv1d(k=3, pad=1) over the history, then a GRU without bias;
- fusion: Linear(w2 y_f + w1 y_b + w0 gru), w learnable, initialised [0.1, 0.1, 0.8] and used raw, as the original.

Departures from the original code, each because the original is wrong for right-padded RecBole batches:
1. The flip is length-aware (`ssmkit.core.layers.partial_flip`, r = 5 by default): the original reverses the first
   45 *positions*, so for histories of <= 22 items the flipped stream at the read-out position holds only padding,
   and it ignores the history length entirely on ML-1M (L = 200).
2. The backward stream is flipped back before fusion (the original fuses it in flipped order), so every position
   fuses the same item's streams.
3. The backward gate uses its own h2 in both terms (the original's second term reads the forward h1).
4. Padding positions are zeroed before the FE-GRU's (non-causal, k = 3) convolution, so the read-out never sees
   padding; the original's unused second convolution is dropped.
5. The Mamba mixer's dt bias keeps mamba_ssm's log-uniform [1e-3, 0.1] init, as in our Mamba4Rec (the original's
   RecBole init re-draws every Linear and zeroes dt_proj.bias, so every channel starts at dt = softplus(0) = 0.69).
With these, the score of a padded history equals that of the same history alone (tested).

SIGMA cannot stream: when an item arrives, the partial flip re-orders which items are reversed, so the backward
stream's state for the old history is no longer a prefix of the new one; `step` raises and says so.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.init import set_optim
from ssmkit.core.layers import Mamba, partial_flip

from .base import Dropout, FeedForward, SequentialRecommender, gather_last, padding_mask


class GMambaBlock(nn.Module):
    """The G-Mamba block on (B, L, D) right-padded histories with their lengths."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, r: int, gate_dropout: float = 0.2):
        super().__init__()
        self.r = r
        self.combining_weights = nn.Parameter(torch.tensor([0.1, 0.1, 0.8]))
        set_optim(self.combining_weights, weight_decay=0.0)
        self.dense1, self.dense2 = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.projection = nn.Linear(d_model, d_model)
        self.mamba = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.gru = nn.GRU(d_model, d_model, num_layers=1, bias=False, batch_first=True)
        self.gate_si, self.gate_sig = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.gate_dropout = Dropout(gate_dropout)
        self.conv1d = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1)

    def _gate(self, h: torch.Tensor) -> torch.Tensor:
        return self.gate_dropout(self.gate_si(F.silu(h)) + self.gate_sig(torch.sigmoid(h)))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x_f = partial_flip(x, lengths, self.r)
        g1 = self._gate(x + self.dense1(x))
        g2 = self._gate(x_f + self.dense2(x_f))
        y_f = self.mamba(x) * (1 + g1)
        y_b = partial_flip(self.mamba(x_f) * (1 + g2), lengths, self.r)
        c = self.conv1d((x * mask.unsqueeze(-1)).transpose(1, 2)).transpose(1, 2)
        y_gru, _ = self.gru(c)
        w = self.combining_weights
        return self.projection(w[2] * y_f + w[1] * y_b + w[0] * y_gru)


class SIGMALayer(nn.Module):
    """G-Mamba -> Dropout -> (+ residual) -> LN -> FFN."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, r: int, dropout: float, residual: bool):
        super().__init__()
        self.residual = residual
        self.gmamba = GMambaBlock(d_model, d_state, d_conv, expand, r)
        self.dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor, last_only: bool = False):
        """x (B, L, D) -> (B, L, D); with `last_only`, only the read-out position (B, D) (the rest is position-wise
        after the G-Mamba block)."""
        y = self.gmamba(x, lengths, mask)
        if last_only:
            y, x = gather_last(y, lengths), gather_last(x, lengths)
        y = self.dropout(y)
        return self.ffn(self.LayerNorm(y + x if self.residual else y))


class SIGMA(SequentialRecommender):
    """SIGMA with a length-aware partial flip (see the module docstring for the departures); not streamable."""
    PRESETS = {"paper": {}}  # model/config.yaml: 1 layer, hidden 64, d_state 32, dropout 0.2

    def __init__(self, n_items: int = 0, hidden_size: int = 64, n_layers: int = 1, d_state: int = 32,
                 d_conv: int = 4, expand: int = 2, dropout: float = 0.2, r: int = 5):
        super().__init__(n_items, hidden_size)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers, self.d_state, self.d_conv, self.expand, self.dropout, self.r = (
            n_layers, d_state, d_conv, expand, dropout, r)
        self.emb_dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.layers = nn.ModuleList(SIGMALayer(hidden_size, d_state, d_conv, expand, r, dropout, n_layers > 1)
                                    for _ in range(n_layers))
        self.init_weights()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        mask = padding_mask(items)
        x = self.LayerNorm(self.emb_dropout(self.item_embedding(items)))
        for i, layer in enumerate(self.layers):
            x = layer(x, lengths, mask, last_only=i == len(self.layers) - 1)
        return x

    def initial_state(self, batch_size: int):
        raise NotImplementedError(
            "SIGMA cannot stream: its partial flip reverses the first n - r items of the history, so each new item "
            "re-orders the backward stream's input and its state must be recomputed from the whole history; "
            "re-encode with `encode` (or use Mamba4Rec / TiM4Rec / GRU4Rec for streaming)")

    def step(self, item, state, time=None):
        self.initial_state(0)
