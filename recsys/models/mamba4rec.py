"""Mamba4Rec (Liu et al., RelKD@KDD 2024; chengkai-liu/Mamba4Rec): item embedding -> Dropout -> LN ->
n_layers x [Mamba -> Dropout -> (+ input if n_layers > 1) -> LN -> FFN(4x, GELU)] -> last real position -> CE over
tied item embeddings. No positional embedding. Original config: hidden 64, d_state 32, d_conv 4, expand 2,
1 layer, dropout 0.2 (0.4 on Amazon); its issue #8 reports Beauty is only "roughly reproduced" with 2 layers.

Departure: the original's init re-draws every Linear of the Mamba mixer, zeroing dt_proj.bias (so every channel
starts at dt = softplus(0) = 0.69); here the mixer's dt bias keeps mamba_ssm's log-uniform [1e-3, 0.1] init.
Streams with `step`: every part but the Mamba mixer is position-wise, and the mixer carries its conv/SSM state.
In eval mode a layer's step is two calls, fused on CPU: the core mixer's `step` (`mamba_mixer_step`) and
`postnorm_ffn` for the rest of the layer.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.layers import Mamba

from .base import Dropout, FeedForward, SequentialRecommender, dropout, finish_layer, gather_last, layer_norm


class MambaLayer(nn.Module):
    """Mamba -> Dropout -> (+ residual) -> LN -> FFN; `step` is the same on one position."""

    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int, dropout: float, residual: bool):
        super().__init__()
        self.residual = residual
        self.mamba = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        self.dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout)

    _finish = finish_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(self.mamba(x), x)

    def step(self, x_t: torch.Tensor, state):
        y, state = self.mamba.step(x_t, state)
        return self._finish(y, x_t), state


class Mamba4Rec(SequentialRecommender):
    """Mamba sequential recommender; `step` equals re-encoding the whole history."""

    streamable = True
    # the original config.yaml (1 layer, ML-1M), Amazon as its issue #8 (dropout 0.4, 2 layers)
    PRESETS = {"paper": {}, "amazon": {"n_layers": 2, "dropout": 0.4}}

    def __init__(self, n_items: int = 0, hidden_size: int = 64, n_layers: int = 1, d_state: int = 32,
                 d_conv: int = 4, expand: int = 2, dropout: float = 0.2):
        super().__init__(n_items, hidden_size)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers, self.d_state, self.d_conv, self.expand, self.dropout = n_layers, d_state, d_conv, expand, dropout
        self.emb_dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.layers = nn.ModuleList(MambaLayer(hidden_size, d_state, d_conv, expand, dropout, n_layers > 1)
                                    for _ in range(n_layers))
        self.init_weights()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        x = self.LayerNorm(self.emb_dropout(self.item_embedding(items)))
        for layer in self.layers[:-1]:
            x = layer(x)
        last = self.layers[-1]  # after its mixer everything is position-wise: finish the read-out position only
        return last._finish(gather_last(last.mamba(x), lengths), gather_last(x, lengths))

    def initial_state(self, batch_size: int) -> Tuple:
        return tuple(layer.mamba.initial_state(batch_size) for layer in self.layers)

    def step(self, item: torch.Tensor, state: Tuple, time: Optional[torch.Tensor] = None):
        x = layer_norm(self.LayerNorm, dropout(self.emb_dropout, F.embedding(item, self.item_embedding.weight, 0)))
        new = []
        for layer, s in zip(self.layers, state):
            x, s = layer.step(x, s)
            new.append(s)
        return x, tuple(new)
