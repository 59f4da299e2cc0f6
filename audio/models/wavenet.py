"""WaveNet (van den Oord et al. 2016): the dilated causal convolution baseline of the SaShiMi paper, on 8-bit codes.

Embedding 256 -> C channels; `n_layers` residual layers, dilations 1, 2, ..., 2^(cycle-1) repeated; each layer:
dilated causal conv (kernel 2, C -> 2C), gated tanh x sigmoid, 1x1 conv to the residual (C) and to the skip sum (S);
head: ReLU -> 1x1 (S -> S) -> ReLU -> 1x1 (S -> 256). `WaveNet.sized(n_params)` picks C = S to match a parameter
budget (the paper compares models of equal size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _GatedLayer(nn.Module):
    def __init__(self, channels: int, skip: int, dilation: int, kernel_size: int):
        super().__init__()
        self.pad = dilation * (kernel_size - 1)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.res = nn.Conv1d(channels, channels, 1)
        self.skip = nn.Conv1d(channels, skip, 1)

    def forward(self, x):
        h = self.conv(F.pad(x, (self.pad, 0)))  # left padding only: causal
        a, b = h.chunk(2, dim=1)
        h = torch.tanh(a) * torch.sigmoid(b)
        return x + self.res(h), self.skip(h)


class WaveNet(nn.Module):
    """8-bit codes (B, L) -> logits (B, L, 256); output t depends on codes[:, :t+1] only."""

    def __init__(self, channels: int = 64, skip_channels: int = 64, n_layers: int = 20, cycle: int = 10,
                 kernel_size: int = 2, n_classes: int = 256):
        super().__init__()
        if min(channels, skip_channels, n_layers, cycle, kernel_size) < 1:
            raise ValueError("channels, skip_channels, n_layers, cycle and kernel_size must all be >= 1")
        self.embedding = nn.Embedding(n_classes, channels)
        self.layers = nn.ModuleList(_GatedLayer(channels, skip_channels, 2 ** (i % cycle), kernel_size)
                                    for i in range(n_layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(),
                                  nn.Conv1d(skip_channels, n_classes, 1))
        self.receptive_field = 1 + sum(layer.pad for layer in self.layers)

    @staticmethod
    def count_parameters(channels: int, skip_channels: int, n_layers: int, kernel_size: int = 2,
                         n_classes: int = 256) -> int:
        """Parameter count for a configuration (closed form, used by `sized`)."""
        C, S = channels, skip_channels
        layer = kernel_size * C * 2 * C + 2 * C + C * C + C + C * S + S
        return n_classes * C + n_layers * layer + S * S + S + S * n_classes + n_classes

    @classmethod
    def sized(cls, n_params: int, n_layers: int = 20, cycle: int = 10, kernel_size: int = 2) -> "WaveNet":
        """The WaveNet with channels = skip channels whose parameter count is closest to `n_params`."""
        best = min(range(1, 1025), key=lambda c: abs(cls.count_parameters(c, c, n_layers, kernel_size) - n_params))
        return cls(best, best, n_layers, cycle, kernel_size)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.dtype not in (torch.int64, torch.int32, torch.uint8) or codes.ndim != 2:
            raise ValueError(f"codes must be integer codes (B, L), got dtype {codes.dtype} shape {tuple(codes.shape)}")
        x = self.embedding(codes.long()).transpose(1, 2)
        skips = 0
        for layer in self.layers:
            x, s = layer(x)
            skips = skips + s
        return self.head(skips).transpose(1, 2)
