"""LTSF-Linear baselines (Zeng et al., AAAI 2023): the sanity floor every SSM forecaster must beat.

Both map a window (B, L, C) to (B, H, C) with a linear map along time, shared across channels unless
`individual`, so they also serve S and MS (the task scores the last channels).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from ssmkit.core.ops import check_tensor

from .base import Forecaster


class _TimeLinear(nn.Module):
    """Linear L -> H along time, one map shared by all channels or one per channel."""

    def __init__(self, seq_len: int, pred_len: int, individual: bool, channels: int):
        super().__init__()
        self.individual = individual
        if individual:
            self.weight = nn.Parameter(torch.empty(channels, pred_len, seq_len))
            self.bias = nn.Parameter(torch.zeros(channels, pred_len))
            nn.init.uniform_(self.weight, -seq_len ** -0.5, seq_len ** -0.5)
        else:
            self.linear = nn.Linear(seq_len, pred_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, L, C) -> (B, H, C)."""
        if self.individual:
            return (torch.einsum("blc,chl->bhc", x, self.weight) + self.bias.t()).contiguous()
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, alpha: float,
              chunk: int = 1 << 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """Least squares y ~ x W + b with penalty alpha * N * |W|^2 (bias not penalised), in float64.
    x (N, L), y (N, H) -> (W (H, L), b (H,)). Rows are taken `chunk` at a time (means first, then centred
    cross-products), so only the (L, L) and (L, H) sums live in float64, not copies of x and y."""
    n = len(x)
    pieces = [(x[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)]
    x_mean = sum(xi.double().sum(0) for xi, _ in pieces) / n
    y_mean = sum(yi.double().sum(0) for _, yi in pieces) / n
    gram = alpha * n * torch.eye(x.shape[1], dtype=torch.float64)
    cross = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64)
    for xi, yi in pieces:
        xc = xi.double() - x_mean
        gram += xc.T @ xc
        cross += xc.T @ (yi.double() - y_mean)
    w = torch.linalg.solve(gram, cross)  # (L, H)
    return w.T, y_mean - x_mean @ w


class NLinear(Forecaster):
    """Subtract the window's last value, apply a linear map L -> H, add the last value back.

    `fit_closed_form(x, y)` sets the map to the ridge solution on given windows (the reference's NLinear-ridge
    floor: channel-shared, alpha = 1e-3 per row)."""

    def __init__(self, seq_len: int = 96, pred_len: int = 96, enc_in: int = 7, individual: bool = False):
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in = seq_len, pred_len, enc_in
        self.head = _TimeLinear(seq_len, pred_len, individual, enc_in)

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, C) -> forecast (B, H, C); `x_mark` is unused (accepted for a uniform interface)."""
        check_tensor("x", x, (None, self.seq_len, self.enc_in))
        last = x[:, -1:, :]
        return self.head(x - last) + last

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-3) -> None:
        """Ridge fit of the map on windows x (N, L, C) -> y (N, H, C) (shared over channels unless individual)."""
        check_tensor("x", x, ("N", self.seq_len, self.enc_in))
        check_tensor("y", y, (x.shape[0], self.pred_len, self.enc_in))
        last = x[:, -1:, :]
        xs, ys = (x - last).permute(2, 0, 1), (y - last).permute(2, 0, 1)  # (C, N, L), (C, N, H)
        if self.head.individual:
            for c in range(self.enc_in):
                w, b = ridge_fit(xs[c], ys[c], alpha)
                self.head.weight[c].copy_(w)
                self.head.bias[c].copy_(b)
        else:
            w, b = ridge_fit(xs.reshape(-1, self.seq_len), ys.reshape(-1, self.pred_len), alpha)
            self.head.linear.weight.copy_(w)
            self.head.linear.bias.copy_(b)


def moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Centred moving average along time of x (B, L, C), the ends padded by repeating the first/last value."""
    front = x[:, :1].expand(-1, (kernel_size - 1) // 2, -1)
    back = x[:, -1:].expand(-1, kernel_size // 2, -1)
    padded = torch.cat([front, x, back], dim=1)
    return nn.functional.avg_pool1d(padded.transpose(1, 2), kernel_size, stride=1).transpose(1, 2)


class DLinear(Forecaster):
    """Decompose into trend (moving average, kernel 25) and remainder; one linear map L -> H for each."""

    def __init__(self, seq_len: int = 96, pred_len: int = 96, enc_in: int = 7, individual: bool = False,
                 kernel_size: int = 25):
        super().__init__()
        self.seq_len, self.pred_len, self.enc_in, self.kernel_size = seq_len, pred_len, enc_in, kernel_size
        self.seasonal = _TimeLinear(seq_len, pred_len, individual, enc_in)
        self.trend = _TimeLinear(seq_len, pred_len, individual, enc_in)

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, C) -> forecast (B, H, C); `x_mark` is unused."""
        check_tensor("x", x, (None, self.seq_len, self.enc_in))
        trend = moving_average(x, self.kernel_size)
        return self.seasonal(x - trend) + self.trend(trend)
