"""SpaceTime companion SSM layers: open-loop `CompanionSSM` and `ClosedLoopCompanionSSM` (forecasts its own inputs).

Each of `n_kernels` companion SSMs (state size `kernel_dim`) is shared by d_model / n_kernels consecutive
channels (SpaceTime's heads). Parameters a, b, c (and k for the closed loop) are (n_kernels, kernel_dim) as in
HazyResearch/spacetime; with `norm_order` > 0, vectors are divided by their L^p norm before use.
`kernel_method` 'squaring' (SpaceTime's released path: dense powers by repeated squaring, O(d^3 log L)),
'recurrence' (the same Krylov columns by the companion structure, O(d L); also the closed loop's roll-out) or
'fft' (the O(d + L) path; it breaks down when A has an eigenvalue on the unit circle, which L1-normalised a with
non-negative entries produces).
The state is `CompanionState`; with it, `forward` adds the state's response c^T A^(t+1) x0 and returns the final
state A^L x0 + sum_s A^(L-1-s) b u_s (Krylov matrices by repeated squaring), so a sequence can be processed in pieces.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn

from ..init import to_factory
from ..ops import check_tensor
from ..ops.companion import companion_kernel, companion_kernel_squaring, companion_matrix, krylov
from ..ops.companion_recurrence import closed_loop_krylov, companion_kernel_recurrence, companion_krylov
from ..ops.fft_conv import fft_conv

_KERNELS = {"fft": companion_kernel, "squaring": companion_kernel_squaring, "recurrence": companion_kernel_recurrence}


class CompanionState(NamedTuple):
    """State of `CompanionSSM` / `ClosedLoopCompanionSSM`: x (B, d_model, kernel_dim), in the parameters' dtype."""
    x: torch.Tensor


def _normalise(x: torch.Tensor, order: int) -> torch.Tensor:
    if order <= 0:
        return x
    norm = torch.linalg.vector_norm(x, ord=order, dim=-1, keepdim=True)
    return x / norm.clamp_min(1e-4)


class CompanionSSM(nn.Module):
    """Open-loop companion SSM: y = K * u (+ skip u) with K[l] = c^T A^l b; (B, L, d_model) -> (B, L, d_model)."""

    def __init__(self, d_model: int, kernel_dim: int = 64, n_kernels: int | None = None, norm_order: int = 1,
                 skip_connection: bool = False, kernel_method: str = "squaring", device=None, dtype=None):
        super().__init__()
        n_kernels = d_model if n_kernels is None else n_kernels
        if n_kernels < 1 or d_model % n_kernels:
            raise ValueError(f"n_kernels must divide d_model = {d_model}, got {n_kernels}")
        if kernel_method not in _KERNELS:
            raise ValueError(f"kernel_method must be one of {sorted(_KERNELS)}, got {kernel_method!r}")
        self.d_model, self.kernel_dim, self.norm_order = d_model, kernel_dim, norm_order
        self.heads = d_model // n_kernels
        self.kernel_method = kernel_method
        self.a = nn.Parameter(torch.randn(n_kernels, kernel_dim))
        self.b = nn.Parameter(torch.randn(n_kernels, kernel_dim))
        self.c = nn.Parameter(torch.randn(n_kernels, kernel_dim))
        self.skip = nn.Parameter(torch.randn(d_model)) if skip_connection else None
        to_factory(self, device, dtype)

    def ssm(self):
        """(a, b, c) as used by the kernel, each (n_kernels, kernel_dim); SpaceTime normalises only a here."""
        return _normalise(self.a, self.norm_order), self.b, self.c

    def _per_channel(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.heads, dim=0)

    def conv_kernel(self, L: int) -> torch.Tensor:
        """(d_model, L) kernel: each kernel repeated over its channels."""
        return self._per_channel(_KERNELS[self.kernel_method](*self.ssm(), L))

    def full_kernel(self, L: int) -> torch.Tensor:
        """(d_model, L) kernel of the whole stateless forward: `conv_kernel` plus the skip at lag 0."""
        kernel = self.conv_kernel(L)
        if self.skip is None or L == 0:
            return kernel
        return torch.cat([kernel[:, :1] + self.skip.unsqueeze(-1), kernel[:, 1:]], dim=-1)

    def forward(self, x: torch.Tensor, state: Optional[CompanionState] = None, return_state: bool = False):
        """x (B, L, d_model) -> y, same shape; with `return_state`, (y, CompanionState) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        u = x.transpose(1, 2)
        L = u.shape[-1]
        y = fft_conv(u, self.conv_kernel(L).to(u.dtype))
        if self.skip is not None:
            y = y + u * self.skip.unsqueeze(-1)
        if state is None and not return_state:
            return y.transpose(1, 2)
        a, b, c = (self._per_channel(t) for t in self.ssm())
        x0 = self.initial_state(x.shape[0]).x if state is None else state.x
        check_tensor("state.x", x0, (x.shape[0], self.d_model, self.kernel_dim))
        A = companion_matrix(a)                                               # (d_model, d, d)
        seen = krylov(A, x0.to(a.dtype), L + 1)                               # (B, d_model, d, L + 1): A^t x0
        y = y + (c.unsqueeze(-1) * seen[..., 1:]).sum(-2).to(y.dtype)
        last = seen[..., L] + torch.einsum("hdj,bhj->bhd", krylov(A, b, L), u.flip(-1).to(a.dtype))
        return y.transpose(1, 2), CompanionState(last)

    def initial_state(self, batch_size: int) -> CompanionState:
        """Zero state (B, d_model, kernel_dim)."""
        return CompanionState(self.a.new_zeros(batch_size, self.d_model, self.kernel_dim))

    def step(self, x_t: torch.Tensor, state: CompanionState):
        """x_{t} = A x_{t-1} + b u_t, y_t = c^T x_t (+ skip u_t); A x costs O(d) (shift + last column)."""
        check_tensor("x_t", x_t, ("B", self.d_model))
        state = state.x
        check_tensor("state.x", state, (x_t.shape[0], self.d_model, self.kernel_dim))
        a, b, c = (self._per_channel(t) for t in self.ssm())
        shifted = torch.cat([torch.zeros_like(state[..., :1]), state[..., :-1]], dim=-1)
        state = shifted + a * state[..., -1:] + b * x_t.unsqueeze(-1)
        y = (c * state).sum(-1)
        if self.skip is not None:
            y = y + self.skip * x_t
        return y.to(x_t.dtype), CompanionState(state)


class ClosedLoopCompanionSSM(CompanionSSM):
    """Closed-loop companion SSM: also learns k, a prediction u_{t+1} = k^T x_t of its own next input.

    After reading a lag window, `forecast(x, horizon)` rolls the state out with A + b k^T, so one model
    forecasts any horizon: y_j = c^T (A + b k^T)^j x_lag, next inputs k^T (A + b k^T)^j x_lag, j < horizon.
    `forward` is the open-loop output (teacher forcing); `next_input(x)` the open-loop input prediction.
    """

    def __init__(self, d_model: int, kernel_dim: int = 64, n_kernels: int | None = None, norm_order: int = 1,
                 kernel_method: str = "squaring", device=None, dtype=None):
        super().__init__(d_model, kernel_dim, n_kernels, norm_order, False, kernel_method)
        self.k = nn.Parameter(torch.randn(self.a.shape[0], kernel_dim))
        to_factory(self, device, dtype)

    def ssm(self):
        """(a, b, c) for the open-loop kernel; the closed loop normalises b, c and k as well."""
        return tuple(_normalise(t, self.norm_order) for t in (self.a, self.b, self.c))

    def next_input(self, x: torch.Tensor) -> torch.Tensor:
        """Open-loop prediction of each next input, k^T x_t: (B, L, d_model)."""
        check_tensor("x", x, (None, None, self.d_model))
        a, b, _ = self.ssm()
        u = x.transpose(1, 2)
        kernel = _KERNELS[self.kernel_method](a, b, _normalise(self.k, self.norm_order), u.shape[-1])
        return fft_conv(u, self._per_channel(kernel).to(u.dtype)).transpose(1, 2)

    def open_loop_kernels(self, L: int) -> torch.Tensor:
        """(2, d_model, L): the kernels of `forward` (output) and `next_input`, to convolve one input with both
        (`fft_conv_bank`)."""
        a, b, c = self.ssm()
        make = _KERNELS[self.kernel_method]
        return self._per_channel(torch.stack([make(a, b, c, L), make(a, b, _normalise(self.k, self.norm_order), L)],
                                             dim=1)).transpose(0, 1)

    def forecast(self, x: torch.Tensor, horizon: int, next_inputs: bool = True, channels_first: bool = False):
        """Read x (B, L, d_model), then roll out: returns (y, u_next), each (B, horizon, d_model).

        With `next_inputs=False`, u_next is None and only y's read-out is computed (half the roll-out's products:
        training losses use y alone). With `channels_first`, x is (B, d_model, L) and y, u_next (B, d_model,
        horizon): the lag state and the read-out are then batched matrix products over the kernels in a layout
        that needs no copy of the (B, horizon, d_model) outputs, forward or backward (SpaceTime's layout).
        """
        check_tensor("x", x, (None, self.d_model, None) if channels_first else (None, None, self.d_model))
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        a, b, c = self.ssm()
        k = _normalise(self.k, self.norm_order)
        B, L, D = (x.shape[0], x.shape[2], x.shape[1]) if channels_first else x.shape
        n, d = a.shape
        read = torch.stack([c, k]) if next_inputs else c.unsqueeze(0)
        # Last state x_lag = sum_i A^{L-1-i} b u_i, from the Krylov matrix [b, Ab, ...] of each kernel.
        # Outputs read the state through ((A + b k^T)^T)^j c and ((A + b k^T)^T)^j k: (n, d, horizon) per kernel,
        # so the roll-out never forms per-sample state sequences. Both by dense squaring ('squaring') or by the
        # O(d)-per-column structure of the companion matrices (the other methods).
        if self.kernel_method == "squaring":
            A = companion_matrix(a)
            lag = krylov(A, b, L)
            readout = krylov((A + b.unsqueeze(-1) * k.unsqueeze(-2)).transpose(-1, -2), read, horizon)
        else:
            lag = companion_krylov(a, b, L)
            readout = closed_loop_krylov(a, b, k, read, horizon)  # (2 or 1, n, d, horizon)
        if channels_first:
            # per kernel: state (B * heads, d) = u (B * heads, L) @ lag^T, outputs = state @ readout (d, horizon)
            u = x.reshape(B, n, self.heads, L).transpose(0, 1).reshape(n, B * self.heads, L).to(a.dtype)
            state = u @ lag.flip(-1).transpose(-1, -2)
            out = (state @ readout).unflatten(2, (B, self.heads)).permute(0, 2, 1, 3, 4).reshape(-1, B, D, horizon)
        else:
            u = x.reshape(B, L, n, self.heads).to(a.dtype)
            state = torch.einsum("ndl,blnh->bnhd", lag.flip(-1), u)
            out = torch.einsum("rndj,bnhd->rbjnh", readout, state).reshape(-1, B, horizon, D)
        if not next_inputs:  # squeeze, not out[0]: a select's backward would write a zero-filled copy of out
            return out.squeeze(0).to(x.dtype), None
        y, u_next = out.unbind(0)
        return y.to(x.dtype), u_next.to(x.dtype)
