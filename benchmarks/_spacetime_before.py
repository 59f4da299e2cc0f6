"""SpaceTime's training step as it was before the speed work of issue 22, frozen for `timeseries_speed.py`.

A copy of the code the benchmark's "before" ran at commit 14ed66d (`SpaceTime(kernel_method="squaring")` with
every op on its PyTorch path and the closed loop reading out y and the next inputs): the companion Krylov columns
by dense repeated squaring, every convolution by `fft_conv` at n = 2L with PyTorch's autograd through the
transforms, the roll-out by einsum. Frozen so that later changes to the shared layers and ops (which the "after"
model uses) do not move the baseline. Only the loss and the forward are kept; `load` copies an "after" model's
weights (the parameter names are the same), so both paths compute the same loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _maybe_bad(*tensors):
    return any(not math.isfinite(t.sum().item()) for t in tensors)


def _reached(bad_u, bad_k):
    L, Lk = bad_u.shape[-1], bad_k.shape[-1]
    count = F.pad(bad_u.to(torch.int32).cumsum(-1, dtype=torch.int32), (1, 0))
    reached = count[..., 1:] > F.pad(count[..., :L - Lk + 1], (Lk - 1, 0))
    return reached | bad_k.any(-1)[:, None]


def fft_conv(u, k):
    """Causal convolution of u (B, D, L) with k (D, Lk) by rfft at n = 2L (the non-finite masking included)."""
    L = u.shape[-1]
    masked = _maybe_bad(u, k)
    if masked:
        bad_u, bad_k = ~torch.isfinite(u), ~torch.isfinite(k)
        u, k = torch.where(bad_u, 0.0, u), torch.where(bad_k, 0.0, k)
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]
    if masked:
        y = torch.where(_reached(bad_u, bad_k), float("nan"), y)
    return y


def companion_matrix(a):
    d = a.shape[-1]
    shift = torch.diag_embed(torch.ones(d - 1, dtype=a.dtype, device=a.device), offset=-1)
    return torch.cat([shift[:, :-1].expand(*a.shape[:-1], d, d - 1), a.unsqueeze(-1)], dim=-1)


def krylov(A, x, L):
    X = x.unsqueeze(-1)[..., :L]
    power = A
    while 0 < X.shape[-1] < L:
        X = torch.cat([X, power @ X[..., :L - X.shape[-1]]], dim=-1)
        if X.shape[-1] < L:
            power = power @ power
    return X


def companion_kernel_squaring(a, b, c, L):
    return torch.einsum("hd,hdl->hl", c, krylov(companion_matrix(a), b, L))


def _normalise(x, order=1):
    return x / torch.linalg.vector_norm(x, ord=order, dim=-1, keepdim=True).clamp_min(1e-4)


class CompanionSSM(nn.Module):
    def __init__(self, d_model, kernel_dim, n_kernels, skip_connection):
        super().__init__()
        self.heads = d_model // n_kernels
        self.a, self.b, self.c = (nn.Parameter(torch.zeros(n_kernels, kernel_dim)) for _ in range(3))
        self.skip = nn.Parameter(torch.zeros(d_model)) if skip_connection else None

    def ssm(self):
        return _normalise(self.a), self.b, self.c

    def _per_channel(self, t):
        return t.repeat_interleave(self.heads, dim=0)

    def forward(self, x):
        u = x.transpose(1, 2)
        y = fft_conv(u, self._per_channel(companion_kernel_squaring(*self.ssm(), u.shape[-1])))
        if self.skip is not None:
            y = y + u * self.skip.unsqueeze(-1)
        return y.transpose(1, 2)


class ClosedLoopCompanionSSM(CompanionSSM):
    def __init__(self, d_model, kernel_dim, n_kernels):
        super().__init__(d_model, kernel_dim, n_kernels, False)
        self.k = nn.Parameter(torch.zeros(n_kernels, kernel_dim))

    def ssm(self):
        return tuple(_normalise(t) for t in (self.a, self.b, self.c))

    def next_input(self, x):
        a, b, _ = self.ssm()
        u = x.transpose(1, 2)
        kernel = companion_kernel_squaring(a, b, _normalise(self.k), u.shape[-1])
        return fft_conv(u, self._per_channel(kernel)).transpose(1, 2)

    def forecast(self, x, horizon):
        a, b, c = self.ssm()
        k = _normalise(self.k)
        B, L, D = x.shape
        n, d = a.shape
        u = x.reshape(B, L, n, self.heads)
        A = companion_matrix(a)
        lag = krylov(A, b, L)
        readout = krylov((A + b.unsqueeze(-1) * k.unsqueeze(-2)).transpose(-1, -2), torch.stack([c, k]), horizon)
        state = torch.einsum("ndl,blnh->bnhd", lag.flip(-1), u)
        out = torch.einsum("rndj,bnhd->rbjnh", readout, state).reshape(-1, B, horizon, D)
        return out[0], out[1]


class MLP(nn.Module):
    def __init__(self, d_in, d_out, residual):
        super().__init__()
        self.linear, self.residual = nn.Linear(d_in, d_out), residual

    def forward(self, x):
        y = self.linear(F.gelu(x))
        return x + y if self.residual else y


class Block(nn.Module):
    def __init__(self, d_model, kernel_dim, n_kernels, preprocess):
        super().__init__()
        if preprocess:
            self.register_buffer("pre_kernel", torch.zeros(d_model, 64))
        else:
            self.pre_kernel = None
        self.ssm = CompanionSSM(d_model, kernel_dim, n_kernels, skip_connection=True)
        self.mlp = MLP(d_model, d_model, residual=True)

    def forward(self, u):
        z = u
        if self.pre_kernel is not None:
            z = fft_conv(u.transpose(1, 2), self.pre_kernel[:, :u.shape[1]]).transpose(1, 2)
        return self.mlp(self.ssm(z)) + z


class SpaceTime(nn.Module):
    """The frozen model: mean transform, no channel independence, MSE terms, no dropout (the benchmark's case)."""

    def __init__(self, pred_len, enc_in, d_model, n_blocks, kernel_dim, n_kernels, decoder_n_kernels=None):
        super().__init__()
        self.pred_len, self.kernel_dim = pred_len, kernel_dim
        self.embedding = nn.Linear(enc_in, d_model)
        self.encoder = nn.Sequential(*[Block(d_model, kernel_dim, n_kernels, i == 0) for i in range(n_blocks)])
        self.decoder = ClosedLoopCompanionSSM(d_model, kernel_dim, decoder_n_kernels or d_model)
        self.output = MLP(d_model, enc_in, residual=False)

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        y, _ = self.decoder.forecast(self.encoder(self.embedding(x - mean)), self.pred_len)
        return self.output(y) + mean

    def loss(self, x, y, x_mark=None, n_targets=None):
        k = y.shape[-1] if n_targets is None else n_targets
        mean = x.mean(1, keepdim=True)
        x, y = x - mean, y - mean[..., -k:]
        z = self.encoder(self.embedding(x))
        y_c, _ = self.decoder.forecast(z, y.shape[1])
        loss = F.mse_loss(self.output(y_c)[..., -k:], y)
        start = min(self.kernel_dim, x.shape[1] - 1) - 1
        target = torch.cat([x[..., -k:], y[:, :1]], dim=1)
        y_o = self.output(self.decoder(z))[..., -k:]
        loss = loss + F.mse_loss(y_o[:, start:], target[:, start + 1:])
        u_next = self.decoder.next_input(z)
        return loss + F.mse_loss(u_next[:, start:-1], z[:, start + 1:])


def load(model) -> SpaceTime:
    """The frozen model with the weights of `model` (a `ssmkit.timeseries.models.SpaceTime` of the same sizes)."""
    enc, dec = model.encoder[0].ssm, model.decoder
    frozen = SpaceTime(model.pred_len, model.enc_in, model.embedding.out_features, len(model.encoder), model.kernel_dim,
                       enc.a.shape[0], dec.a.shape[0])
    frozen.load_state_dict(model.state_dict())
    return frozen
