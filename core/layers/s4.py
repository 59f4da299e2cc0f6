"""S4D and S4 (DPLR) layers: an SSM convolution kernel applied by FFT, D skip, GELU, then Linear + GLU.

Parameter names follow state-spaces/s4 (`models/s4/s4d.py` for S4D, `SSMKernelDPLR` for S4), and so do the
optimiser hints: the SSM parameters (dt, A, and B, P for S4) carry `_optim = {"weight_decay": 0.0, "lr": lr}`
(lr 1e-3 by default, None keeps the task's lr; see `ssmkit.core.init.set_optim`); C trains as a regular weight.
`forward` convolves (training); `step` runs the same system as a recurrence (generation).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..init import set_optim, to_factory
from ..ops._checks import check_tensor
from ..ops.fft_conv import fft_conv
from ..ops.s4_kernels import dplr_discretize, dplr_kernel, s4d_discretize, s4d_kernel


def _half_state(d_state: int) -> int:
    if d_state < 2 or d_state % 2:
        raise ValueError(f"d_state must be a positive even number (complex conjugate pairs), got {d_state}")
    return d_state // 2


def _log_dt(d_model: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """log(dt) uniform in [log dt_min, log dt_max], one timescale per channel."""
    return torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def hippo_legs_nplr(d_state: int):
    """HiPPO-LegS in normal-plus-low-rank form: (Lambda (N/2,), P (N/2,), B (N/2,)) complex, keeping one
    eigenvalue of each conjugate pair (the one with positive imaginary part).

    LegS A + P P^T = -1/2 I + S with S skew-symmetric, so A = V (Lambda - V^*P (V^*P)^*) V^*.
    """
    n = torch.arange(d_state, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = -torch.tril(r[:, None] * r[None, :], -1) - torch.diag(n + 1)
    P = torch.sqrt(n + 0.5)
    S = A + P[:, None] * P[None, :] + 0.5 * torch.eye(d_state, dtype=torch.float64)
    w, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # S = V diag(i w) V^*
    keep = w > 0
    V = V[:, keep]
    Lambda = -0.5 + 1j * w[keep]
    return Lambda, V.conj().T @ P.to(V.dtype), V.conj().T @ (r.to(V.dtype))


class _SSMConv(nn.Module):
    """Shared tail of S4D/S4: y = GLU(Linear(GELU(K * u + D u))). Subclasses give kernel and step matrices."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.GLU(dim=-1))

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return self.output_linear(self.dropout(self.activation(y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        check_tensor("x", x, (None, None, self.d_model))
        u = x.transpose(1, 2)  # (B, H, L)
        k = self.conv_kernel(u.shape[-1]).to(u.dtype)
        y = fft_conv(u, k) + u * self._skip().unsqueeze(-1)
        return self._out(y.transpose(1, 2))

    def step(self, x_t: torch.Tensor, state: torch.Tensor):
        """One token: x_t (B, d_model), state from `initial_state` -> (y_t (B, d_model), new state)."""
        check_tensor("x_t", x_t, ("B", self.d_model))
        dA, dB, C = self._step_matrices()
        check_tensor("state", state, (x_t.shape[0], self.d_model, dB.shape[-1]), allow_complex=True)
        state = self._advance(dA, state) + dB * x_t.to(dB.dtype).unsqueeze(-1)
        y = self._read(C, state).to(x_t.dtype) + x_t * self._skip()
        return self._out(y), state

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """Zero state (B, d_model, state size), complex in the parameters' precision."""
        _, dB, _ = self._step_matrices()
        return torch.zeros(batch_size, self.d_model, dB.shape[-1], dtype=dB.dtype, device=dB.device)

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
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        C = torch.view_as_complex(self.C)
        return torch.exp(self.log_dt), A, torch.ones_like(C), C


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
        Lambda = torch.complex(-torch.exp(self.A_real), -self.A_imag).repeat(self.repeat, 1)
        P = torch.view_as_complex(self.P).repeat(1, self.repeat, 1)
        B = torch.view_as_complex(self.B).repeat(self.repeat, 1)
        return torch.exp(self.inv_dt), Lambda, P, B, torch.view_as_complex(self.C)[0]


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
    def _read(C, state):
        return (C * state).sum(-1).real
