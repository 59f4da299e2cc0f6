"""S4D and S4 (DPLR) layers: an SSM convolution kernel applied by FFT, D skip, GELU, then Linear + GLU.

Parameter names follow state-spaces/s4 (`models/s4/s4d.py` for S4D, `SSMKernelDPLR` for S4), and so do the
optimiser hints: the SSM parameters (dt, A, and B, P for S4) carry `_optim = {"weight_decay": 0.0, "lr": lr}`
(lr 1e-3 by default, None keeps the task's lr; see `ssmkit.core.init.set_optim`); C trains as a regular weight.
`forward` convolves (training); `step` runs the same system as a recurrence (generation). With a state,
`forward` adds the state's response C dA^(t+1) h0 and returns the final state dA^L h0 + sum_s dA^(L-1-s) dB u_s
(powers by repeated products / squaring), so a sequence can be processed in pieces. The state is `S4State`.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import nn

from ..init import set_optim, to_factory
from ..ops import check_tensor
from ..ops.companion import krylov
from ..ops.fft_conv import fft_conv
from ..ops.hippo import hippo_legs, hippo_legs_normal
from ..ops.s4_kernels import dplr_discretize, dplr_kernel, s4d_discretize, s4d_kernel
from ._validate import check_input_dtype, check_positive_ints


def _half_state(d_state: int) -> int:
    if d_state < 2 or d_state % 2:
        raise ValueError(f"d_state must be a positive even number (complex conjugate pairs), got {d_state}")
    return d_state // 2


def _log_dt(d_model: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log(dt) uniform in [log dt_min, log dt_max], one timescale per channel."""
    return torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def hippo_legs_nplr(d_state: int):
    """HiPPO-LegS in normal-plus-low-rank form: (Lambda (N/2,), P (N/2,), B (N/2,)) complex, keeping one
    eigenvalue of each conjugate pair (the one with positive imaginary part): A = V (Lambda - V^*P (V^*P)^*) V^*.
    """
    _, P, B = hippo_legs(d_state)
    Lambda, V = hippo_legs_normal(d_state)
    return Lambda, V.conj().T @ P.to(V.dtype), V.conj().T @ B.to(V.dtype)


class S4State(NamedTuple):
    """State of `S4` / `S4D`: h (B, d_model, state size), complex64 (complex128 for an fp64 module); S4D keeps
    one of each conjugate pair (N/2 modes), S4 the conjugate-completed N."""
    h: torch.Tensor


def _at_least_fp32(*params: torch.Tensor):
    """fp16/bf16 SSM parameters upcast to fp32: the kernel is complex, and PyTorch has no complex bf16 (and
    little complex fp16); precision-sensitive anyway. A layer moved to half precision thus still works."""
    return tuple(p.float() if p.dtype in (torch.float16, torch.bfloat16) else p for p in params)


class _SSMConv(nn.Module):
    """Shared tail of S4D/S4: y = GLU(Linear(GELU(K * u + D u))). Subclasses give kernel and step matrices."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        check_positive_ints(type(self).__name__, d_model=d_model)
        self.d_model = d_model
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return self.output_linear(self.dropout(self.activation(y)))

    def forward(self, x: torch.Tensor, state: Optional[S4State] = None, return_state: bool = False):
        """(B, L, d_model) -> (B, L, d_model); with `return_state`, (y, S4State) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype(type(self).__name__, "x", x, self.output_linear[0].weight)
        u = x.transpose(1, 2)  # (B, H, L)
        L = u.shape[-1]
        k = self.conv_kernel(L)  # kept in fp32 or better: fft_conv computes in it and returns u's dtype
        y = fft_conv(u, k) + u * self._skip().unsqueeze(-1)
        if state is None and not return_state:
            return self._out(y.transpose(1, 2))
        dA, dB, C = self._step_matrices()
        h0 = self.initial_state(x.shape[0]).h if state is None else state.h
        check_tensor("state.h", h0, (x.shape[0], self.d_model, dB.shape[-1]), allow_complex=True)
        seen = self._powers(dA, h0.to(dB.dtype), L + 1)                   # (B, H, N, L + 1): dA^t h0
        y = y + self._read(C, seen[..., 1:].movedim(-1, 1)).transpose(1, 2).to(y.dtype)
        drive = self._powers(dA, dB, L)                                   # (H, N, L): dA^j dB
        h = seen[..., L] + torch.einsum("hnj,bhj->bhn", drive, u.flip(-1).to(drive.dtype))
        return self._out(y.transpose(1, 2)), S4State(h)

    def step(self, x_t: torch.Tensor, state: S4State):
        """One token: x_t (B, d_model), state from `initial_state` -> (y_t (B, d_model), new state)."""
        check_tensor("x_t", x_t, ("B", self.d_model))
        dA, dB, C = self._step_matrices()
        h = state.h
        check_tensor("state.h", h, (x_t.shape[0], self.d_model, dB.shape[-1]), allow_complex=True)
        h = self._advance(dA, h) + dB * x_t.to(dB.dtype).unsqueeze(-1)
        y = self._read(C, h).to(x_t.dtype) + x_t * self._skip()
        return self._out(y), S4State(h)

    def initial_state(self, batch_size: int) -> S4State:
        """Zero state (B, d_model, state size), complex in the parameters' precision."""
        _, dB, _ = self._step_matrices()
        return S4State(torch.zeros(batch_size, self.d_model, dB.shape[-1], dtype=dB.dtype, device=dB.device))

    def _step_matrices(self):
        # Discretisation costs O(N^3) for S4: cache it while parameters stay unchanged and no grad is needed.
        if torch.is_grad_enabled():
            return self._discretize()
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in self.kernel.parameters())
        if getattr(self, "_cache_key", None) != key:
            self._cache = self._discretize()
            self._cache_key = key
        return self._cache


class S4DKernel(nn.Module):
    """Diagonal SSM parameters (s4d.py names): log_dt (H,), C (H, N/2, 2) real view, log_A_real, A_imag."""

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3, dt_max: float = 1e-1,
                 lr: Optional[float] = 1e-3):
        super().__init__()
        n_half = _half_state(d_state)
        n = torch.arange(n_half, dtype=torch.float32)
        if init == "lin":  # S4D-Lin: A_n = -1/2 + i pi n
            imag = math.pi * n
        elif init == "inv":  # S4D-Inv: A_n = -1/2 + i N/pi (N/(2n+1) - 1)
            imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
        else:
            raise ValueError(f"init must be 'lin' or 'inv', got {init!r}")
        self.log_dt = nn.Parameter(_log_dt(d_model, dt_min, dt_max))
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d_model, n_half, dtype=torch.cfloat)))
        self.log_A_real = nn.Parameter(torch.full((d_model, n_half), math.log(0.5)))
        self.A_imag = nn.Parameter(imag.repeat(d_model, 1))
        for p in (self.log_dt, self.log_A_real, self.A_imag):
            set_optim(p, weight_decay=0.0, lr=lr)

    def params(self):
        """(dt (H,), A (H, N/2), B = 1, C (H, N/2)) as used by the S4D kernel ops."""
        log_A_real, A_imag, C, log_dt = _at_least_fp32(self.log_A_real, self.A_imag, self.C, self.log_dt)
        A = torch.complex(-torch.exp(log_A_real), A_imag)
        C = torch.view_as_complex(C)
        return torch.exp(log_dt), A, torch.ones_like(C), C


class S4D(_SSMConv):
    """S4D layer (Gu et al. 2022): diagonal SSM per channel, ZOH, kernel by Vandermonde product.

    d_state is the real state size N (N/2 complex modes); init 'lin' (S4D-Lin) or 'inv' (S4D-Inv).
    """

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, dropout: float = 0.0, lr: Optional[float] = 1e-3, device=None, dtype=None):
        super().__init__(d_model, dropout)
        self.D = nn.Parameter(torch.randn(d_model))
        self.kernel = S4DKernel(d_model, d_state, init, dt_min, dt_max, lr)
        to_factory(self, device, dtype)

    def conv_kernel(self, L: int) -> torch.Tensor:
        return s4d_kernel(*self.kernel.params(), L)

    def _skip(self):
        return self.D

    def _discretize(self):
        dt, A, B, C = self.kernel.params()
        dA, dB = s4d_discretize(dt, A, B)
        return dA, dB, C

    @staticmethod
    def _advance(dA, state):
        return dA * state

    @staticmethod
    def _powers(dA, v, n):
        """[v, dA v, ..., dA^(n-1) v] along a new last axis; v (..., H, N)."""
        ones = torch.ones(*dA.shape, 1, dtype=dA.dtype, device=dA.device)
        return v.unsqueeze(-1) * torch.cat([ones, torch.cumprod(dA.unsqueeze(-1).expand(*dA.shape, n - 1), -1)], -1)

    @staticmethod
    def _read(C, state):
        return 2 * (C * state).sum(-1).real


class S4Kernel(nn.Module):
    """Hurwitz DPLR parameters (SSMKernelDPLR names and shapes, channels = 1).

    Lambda = -exp(A_real) - i A_imag (so Re Lambda < 0 for any A_real), A = Lambda - P P^*;
    inv_dt (H,) with dt = exp(inv_dt); B (S, N/2, 2), P (R, S, N/2, 2), C (1, H, N/2, 2) real views,
    S = n_ssm copies of (Lambda, P, B) shared across H / S channels each.
    """

    def __init__(self, d_model: int, d_state: int = 64, n_ssm: Optional[int] = None, rank: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, lr: Optional[float] = 1e-3):
        super().__init__()
        n_half = _half_state(d_state)
        n_ssm = d_model if n_ssm is None else n_ssm
        if n_ssm < 1 or d_model % n_ssm:
            raise ValueError(f"n_ssm must divide d_model = {d_model}, got {n_ssm}")
        Lambda, P, B = hippo_legs_nplr(d_state)
        if rank > 1:  # extra low-rank directions start at zero
            P = torch.cat([P[None], torch.zeros(rank - 1, n_half, dtype=P.dtype)])
        else:
            P = P[None]
        self.repeat = d_model // n_ssm
        self.inv_dt = nn.Parameter(_log_dt(d_model, dt_min, dt_max))
        self.A_real = nn.Parameter(torch.log(-Lambda.real).float().repeat(n_ssm, 1))
        self.A_imag = nn.Parameter((-Lambda.imag).float().repeat(n_ssm, 1))
        self.B = nn.Parameter(torch.view_as_real(B.to(torch.cfloat).repeat(n_ssm, 1)).contiguous())
        self.P = nn.Parameter(torch.view_as_real(P.to(torch.cfloat)[:, None].repeat(1, n_ssm, 1)).contiguous())
        self.C = nn.Parameter(torch.view_as_real(torch.randn(1, d_model, n_half, dtype=torch.cfloat)))
        for p in (self.inv_dt, self.A_real, self.A_imag, self.B, self.P):
            set_optim(p, weight_decay=0.0, lr=lr)

    def params(self):
        """(dt (H,), Lambda (H, N/2), P (R, H, N/2), B (H, N/2), C (H, N/2)) for the DPLR kernel ops."""
        A_real, A_imag, P, B, C, inv_dt = _at_least_fp32(self.A_real, self.A_imag, self.P, self.B, self.C, self.inv_dt)
        Lambda = torch.complex(-torch.exp(A_real), -A_imag).repeat(self.repeat, 1)
        P = torch.view_as_complex(P).repeat(1, self.repeat, 1)
        B = torch.view_as_complex(B).repeat(self.repeat, 1)
        return torch.exp(inv_dt), Lambda, P, B, torch.view_as_complex(C)[0]


class S4(_SSMConv):
    """S4 layer with the Hurwitz-stable DPLR state matrix used by SaShiMi; HiPPO-LegS initialisation.

    `step` uses the dense bilinear recurrence of the 2N-dimensional (conjugate-completed) state.
    """

    def __init__(self, d_model: int, d_state: int = 64, n_ssm: Optional[int] = None, rank: int = 1,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, dropout: float = 0.0, lr: Optional[float] = 1e-3,
                 device=None, dtype=None):
        super().__init__(d_model, dropout)
        self.D = nn.Parameter(torch.randn(1, d_model))
        self.kernel = S4Kernel(d_model, d_state, n_ssm, rank, dt_min, dt_max, lr)
        to_factory(self, device, dtype)

    def conv_kernel(self, L: int) -> torch.Tensor:
        return dplr_kernel(*self.kernel.params(), L)

    def _skip(self):
        return self.D[0]

    def _discretize(self):
        dt, Lambda, P, B, C = self.kernel.params()
        dA, dB = dplr_discretize(dt, Lambda, P, B)
        return dA, dB, torch.cat([C, C.conj()], dim=-1)

    @staticmethod
    def _advance(dA, state):
        return torch.einsum("hnm,bhm->bhn", dA, state)

    @staticmethod
    def _powers(dA, v, n):
        """[v, dA v, ..., dA^(n-1) v] along a new last axis; v (..., H, N)."""
        return krylov(dA, v, n)

    @staticmethod
    def _read(C, state):
        return (C * state).sum(-1).real
