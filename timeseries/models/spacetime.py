"""SpaceTime (Zhang et al., ICLR 2023): companion-SSM encoder and a closed-loop companion decoder.

Embedding Linear(enc_in -> d_model); encoder block 1 first applies fixed preprocessing kernels (differencing of
orders 0..max_diff_order-1 and moving-average residuals, as causal convolutions), then every block is
companion SSM -> MLP (GELU, dropout) with a residual; the decoder is one `ClosedLoopCompanionSSM` that reads the
lag window and rolls its state forward for any horizon, with one companion kernel per channel as in the
original's decoder config; the output head is the original's pre-activation MLP, GELU -> dropout ->
Linear(d_model -> enc_in).
Training uses the paper's three-term loss (`loss`): closed-loop horizon error, open-loop next-step error on the
lag, and the closed loop's next-input error, weighted by `loss_weights`; each term is a mean squared error,
or with `loss_fn="rmse"` its square root, as the original's ETT commands train (`--loss informer_rmse`).
With `mean_transform` (the paper's ETT `--data_transform mean`) each window's mean is subtracted from the
inputs and added back to the outputs.
SpaceTime is a univariate model (its ETT runs are `features S`); `channel_independent=True` applies that
univariate model to every channel of a multivariate window with shared weights (embedding Linear(1 -> d_model)).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.layers import ClosedLoopCompanionSSM, CompanionSSM
from ssmkit.core.ops.fft_conv import fft_conv, fft_conv_bank
from ssmkit.core.ops import check_tensor

from .base import Forecaster


def preprocessing_kernels(d_model: int, max_diff_order: int = 4, n_kernels: int = 8, min_avg_window: int = 4,
                          max_avg_window: int = 64, seed: int = 0) -> torch.Tensor:
    """(d_model, max_avg_window) fixed causal kernels, cycled over channels: differencing (1 - B)^n for
    n < max_diff_order, then moving-average residuals x_t - mean(x_{t-w+1..t}) with windows drawn once."""
    if not 0 < max_diff_order <= n_kernels or d_model % n_kernels:
        raise ValueError(f"need 0 < max_diff_order <= n_kernels dividing d_model, got max_diff_order="
                         f"{max_diff_order}, n_kernels={n_kernels}, d_model={d_model}")
    width = max(max_avg_window, max_diff_order)
    repeat = d_model // n_kernels
    n_ma = (n_kernels - max_diff_order) * repeat
    windows = torch.randint(min_avg_window, max_avg_window, (n_ma,), generator=torch.Generator().manual_seed(seed))
    diff = torch.zeros(max_diff_order, width)
    for n in range(max_diff_order):
        diff[n, :n + 1] = torch.tensor([(-1) ** j * math.comb(n, j) for j in range(n + 1)], dtype=torch.float32)
    ma = torch.zeros(n_ma, width)
    ma[:, 0] = 1.0
    for i, w in enumerate(windows.tolist()):
        ma[i, :w] -= 1.0 / w
    per_repeat = [torch.cat([diff, ma[r * (n_kernels - max_diff_order):(r + 1) * (n_kernels - max_diff_order)]])
                  for r in range(repeat)]
    return torch.cat(per_repeat)


# one term of the three-term loss: mean squared error, or its root (the original's `--loss informer_rmse`)
_LOSS_TERMS = {"mse": F.mse_loss, "rmse": lambda pred, target: F.mse_loss(pred, target).sqrt()}


class MLP(nn.Module):
    """GELU -> dropout -> Linear (SpaceTime's pre-activation MLP), optionally with a residual."""

    def __init__(self, d_in: int, d_out: int, dropout: float, residual: bool):
        super().__init__()
        self.linear, self.dropout, self.residual = nn.Linear(d_in, d_out), nn.Dropout(dropout), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.dropout(F.gelu(x)))
        return x + y if self.residual else y

    def channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """The same on a channels-first x (N, d_in, T) -> (N, d_out, T): batched products, no transposes."""
        y = _channel_linear(self.linear, self.dropout(F.gelu(x)))
        return x + y if self.residual else y


def _channel_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear` over the channels of x (N, d_in, T) -> (N, d_out, T), bias included, in one batched product
    (whose backward, unlike matmul's, copies neither x nor its gradient into another layout)."""
    N, T = x.shape[0], x.shape[-1]
    return torch.baddbmm(linear.bias.unsqueeze(-1).expand(N, -1, T), linear.weight.expand(N, -1, -1), x)


class SpaceTimeBlock(nn.Module):
    """[fixed preprocessing ->] companion SSM -> MLP, plus a residual from the (preprocessed) input; channels first
    (N, d_model, L). The SSM's output on the preprocessed z = p * u is (K * p) * u (causal convolutions compose), so
    z and the SSM's output come from one transform of u (`fft_conv_bank`), the skip inside K's lag 0."""

    def __init__(self, d_model: int, kernel_dim: int, n_kernels: int, dropout: float, preprocess: bool,
                 kernel_method: str = "recurrence"):
        super().__init__()
        if preprocess:
            self.register_buffer("pre_kernel", preprocessing_kernels(d_model), persistent=True)
        else:
            self.pre_kernel = None
        self.ssm = CompanionSSM(d_model, kernel_dim, n_kernels, skip_connection=True, kernel_method=kernel_method)
        with torch.no_grad():  # unit-variance b, c make K[l] = c^T A^l b grow with kernel_dim; keep outputs O(1)
            self.ssm.b.mul_(kernel_dim ** -0.5)
            self.ssm.c.mul_(kernel_dim ** -0.5)
        self.mlp = MLP(d_model, d_model, dropout, residual=True)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        L = u.shape[-1]
        kernel = self.ssm.full_kernel(L)
        if self.pre_kernel is None:
            z, y = u, fft_conv_bank(u, kernel.unsqueeze(0)).squeeze(0)
        else:
            pre = self.pre_kernel[:, :L].to(kernel.dtype)
            pre = F.pad(pre, (0, L - pre.shape[-1]))
            z, y = fft_conv_bank(u, torch.stack([pre, fft_conv(pre.unsqueeze(0), kernel).squeeze(0)])).unbind(0)
        return self.mlp.channels_first(y) + z


class SpaceTime(Forecaster):
    """SpaceTime forecaster x (B, L, C) -> (B, H, C); `forecast(x, horizon)` serves any horizon (closed loop).

    `n_kernels` companion kernels are shared across the encoder's channels; the decoder has `decoder_n_kernels`
    (default d_model: one per channel, as the original's closed-loop config). `kernel_method` computes the
    companion Krylov columns by the O(d) recurrence ('recurrence', default) or the released code's dense repeated
    squaring ('squaring': the same values, several times slower at kernel_dim 64).
    Inside, features are channels first (N, d_model, T), so the convolutions transform along contiguous time and
    the linears are batched products; each convolved input is transformed once (`fft_conv_bank`).
    """

    def __init__(self, seq_len: int = 336, pred_len: int = 96, enc_in: int = 1, d_model: int = 128, n_blocks: int = 2,
                 kernel_dim: int = 64, n_kernels: int = 16, dropout: float = 0.2,
                 loss_weights: Sequence[float] = (1.0, 1.0, 1.0), mean_transform: bool = True,
                 channel_independent: bool = False, loss_fn: str = "mse", decoder_n_kernels: Optional[int] = None,
                 kernel_method: str = "recurrence"):
        super().__init__()
        if loss_fn not in _LOSS_TERMS:
            raise ValueError(f"loss_fn must be one of {sorted(_LOSS_TERMS)}, got {loss_fn!r}")
        self.loss_fn = loss_fn
        self.seq_len, self.pred_len, self.enc_in, self.kernel_dim = seq_len, pred_len, enc_in, kernel_dim
        self.mean_transform, self.channel_independent = mean_transform, channel_independent
        self.loss_weights = tuple(loss_weights)
        width = 1 if channel_independent else enc_in
        self.embedding = nn.Linear(width, d_model)
        self.encoder = nn.Sequential(*[SpaceTimeBlock(d_model, kernel_dim, n_kernels, dropout, preprocess=i == 0,
                                                      kernel_method=kernel_method) for i in range(n_blocks)])
        # None: the layer's default of one kernel per channel (the original's closed-loop config has n_heads 1)
        self.decoder = ClosedLoopCompanionSSM(d_model, kernel_dim, decoder_n_kernels, kernel_method=kernel_method)
        self.output = MLP(d_model, width, dropout, residual=False)

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B * C, T, 1) when channel independent (each channel its own series), else unchanged."""
        return x.transpose(1, 2).reshape(-1, x.shape[1], 1) if self.channel_independent else x

    def _unfold(self, y: torch.Tensor, channels: int) -> torch.Tensor:
        """Inverse of `_fold`: (B * C, T, 1) -> (B, T, C)."""
        return y.reshape(-1, channels, y.shape[1]).transpose(1, 2) if self.channel_independent else y

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features, channels first (N, d_model, T), of a (folded) window (N, T, width)."""
        return self.encoder(_channel_linear(self.embedding, x.transpose(1, 2)))

    def _head(self, y: torch.Tensor) -> torch.Tensor:
        """Output head on channels-first features (N, d_model, T) -> (N, T, width)."""
        return self.output.channels_first(y).transpose(1, 2)

    def _window_mean(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, C) mean over the lag window that the model works around (zeros without `mean_transform`)."""
        return x.mean(1, keepdim=True) if self.mean_transform else torch.zeros_like(x[:, :1])

    def forecast(self, x: torch.Tensor, horizon: int) -> torch.Tensor:
        """Read a lag window x (B, L, C), roll the decoder's closed loop `horizon` steps: (B, horizon, C)."""
        check_tensor("x", x, (None, None, self.enc_in))
        mean = self._window_mean(x)
        y, _ = self.decoder.forecast(self._encode(self._fold(x - mean)), horizon, next_inputs=False,
                                     channels_first=True)
        return self._unfold(self._head(y), x.shape[-1]) + mean

    def forward(self, x: torch.Tensor, x_mark: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, seq_len, C) -> (B, pred_len, C); time features are not used by SpaceTime."""
        check_tensor("x", x, (None, self.seq_len, self.enc_in))
        return self.forecast(x, self.pred_len)

    def loss(self, x: torch.Tensor, y: torch.Tensor, x_mark=None, n_targets: Optional[int] = None) -> torch.Tensor:
        """Three-term loss: closed-loop forecast vs y (B, H, k); open-loop next-step outputs vs the next lag
        inputs; the decoder's next-input predictions vs its actual next inputs (terms after kernel_dim steps)."""
        k = y.shape[-1] if n_targets is None else n_targets
        w0, w1, w2 = self.loss_weights
        check_tensor("x", x, (None, None, self.enc_in))
        if self.channel_independent and k != self.enc_in:
            raise ValueError(f"a channel_independent SpaceTime forecasts every channel (features 'M' or 'S'); "
                             f"n_targets={k} != enc_in={self.enc_in}")
        mean = self._window_mean(x)
        x, y = self._fold(x - mean), self._fold(y - mean[..., -k:])  # every term compares centred values
        k = x.shape[-1] if self.channel_independent else k
        z = self._encode(x)                                        # (N, d_model, L)
        y_c, _ = self.decoder.forecast(z, y.shape[1], next_inputs=False, channels_first=True)
        err = _LOSS_TERMS[self.loss_fn]
        loss = w0 * err(self._head(y_c)[..., -k:], y)
        start = min(self.kernel_dim, x.shape[1] - 1) - 1
        target = torch.cat([x[..., -k:], y[:, :1]], dim=1)        # inputs shifted by one step
        # the decoder's open-loop outputs and next-input predictions: one transform of z for both
        y_o, u_next = fft_conv_bank(z, self.decoder.open_loop_kernels(z.shape[-1])).unbind(0)
        loss = loss + w1 * err(self._head(y_o[..., start:])[..., -k:], target[:, start + 1:])  # the head per step
        return loss + w2 * err(u_next[..., start:-1], z[..., start + 1:])
