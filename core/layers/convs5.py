"""ConvS5: a convolutional state-space layer for video, (B, T, H, W, d_model) -> same.

    x_k = Lambda_bar * x_{k-1} + B_bar (conv) u_k,     y_k = 2 Re(C (conv) x_k) + D * u_k

States are complex tensors (B, H, W, P) per frame. Lambda is diagonal complex (P,) initialised from the HiPPO-N
matrix (eigenvalues of the normal part of HiPPO-LegS of size 2P, one of each conjugate pair, hence 2 Re in the
output), with Re(Lambda) clipped to <= -1e-4. Zero-order hold with a learned step per state:
Lambda_bar = exp(Lambda * step), B_bar = (Lambda_bar - 1) / Lambda * B. B (P, U, kB, kB) and C (U, P, kC, kC)
are complex 'same'-padded convolutions, stored with a trailing real/imag axis of 2 as in NVlabs/ConvSSM;
D is a per-channel skip. `forward` uses the parallel scan over time; `step` advances one frame.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dtypes import state_dtype
from ..ops import check_tensor
from ..init import to_factory
from ..ops.convssm import convssm_scan
from ..ops.hippo import hippo_legs_normal

CLIP_RE = -1e-4


def hippo_n_eigenvalues(P: int) -> torch.Tensor:
    """The P eigenvalues with positive imaginary part of the normal part of HiPPO-LegS of size 2P (complex128),
    in descending order of the imaginary part."""
    return hippo_legs_normal(2 * P)[0].flip(0)


class ConvS5State(NamedTuple):
    """State of `ConvS5`: x (B, H, W, d_state), complex64 (complex128 for an fp64 module)."""
    x: torch.Tensor


class ConvS5(nn.Module):
    """Convolutional S5 layer with d_model input/output channels and d_state complex state channels."""

    def __init__(self, d_model: int, d_state: int = 32, kernel_size: int = 3, kernel_size_C: Optional[int] = None,
                 dt_min: float = 0.001, dt_max: float = 0.1, device=None, dtype=None):
        super().__init__()
        kC = kernel_size if kernel_size_C is None else kernel_size_C
        for name, k in (("kernel_size", kernel_size), ("kernel_size_C", kC)):
            if k < 1 or k % 2 == 0:
                raise ValueError(f"{name} must be a positive odd int ('same' padding), got {k}")
        self.d_model, self.d_state, self.kB, self.kC = d_model, d_state, kernel_size, kC
        lam = hippo_n_eigenvalues(d_state)
        self.Lambda_re = nn.Parameter(lam.real.float())
        self.Lambda_im = nn.Parameter(lam.imag.float())
        self.B = nn.Parameter(torch.randn(d_state, d_model, kernel_size, kernel_size, 2)
                              / math.sqrt(2 * d_model * kernel_size ** 2))
        self.C = nn.Parameter(torch.randn(d_model, d_state, kC, kC, 2) / math.sqrt(2 * d_state * kC ** 2))
        self.D = nn.Parameter(torch.ones(d_model))
        self.log_step = nn.Parameter(torch.empty(d_state).uniform_(math.log(dt_min), math.log(dt_max)))
        to_factory(self, device, dtype)

    def discretize(self, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
        """(Lambda_bar (P,), B_bar (P, U, kB, kB)) as complex tensors, ZOH with the clipped eigenvalues."""
        lam = torch.complex(self.Lambda_re.to(dtype).clamp(max=CLIP_RE), self.Lambda_im.to(dtype))
        lam_dt = lam * torch.exp(self.log_step.to(dtype))
        lam_bar = torch.exp(lam_dt)
        B = torch.view_as_complex(self.B.to(dtype).contiguous())
        return lam_bar, (lam_bar - 1).div(lam)[:, None, None, None] * B

    def _input_conv(self, u: torch.Tensor, B_bar: torch.Tensor) -> torch.Tensor:
        """u (N, H, W, U) real -> B_bar (conv) u, (N, H, W, P) complex."""
        w = torch.cat([B_bar.real, B_bar.imag]).to(u.dtype)
        out = F.conv2d(u.permute(0, 3, 1, 2), w, padding=self.kB // 2).permute(0, 2, 3, 1)
        re, im = out.to(B_bar.real.dtype).chunk(2, dim=-1)
        return torch.complex(re.contiguous(), im.contiguous())

    def _output_conv(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """x (N, H, W, P) complex, u (N, H, W, U) -> 2 Re(C (conv) x) + D u, in u's dtype."""
        f = x.real.dtype
        C = self.C.to(f)
        w = torch.cat([C[..., 0], -C[..., 1]], dim=1)                             # Re(C x) = C_re x_re - C_im x_im
        xin = torch.cat([x.real, x.imag], dim=-1).permute(0, 3, 1, 2)
        y = 2 * F.conv2d(xin, w, padding=self.kC // 2).permute(0, 2, 3, 1) + self.D.to(f) * u.to(f)
        return y.to(u.dtype)

    def forward(self, x: torch.Tensor, state: Optional[ConvS5State] = None, return_state: bool = False):
        """x (B, T, H, W, d_model) -> y, same shape; with `return_state`, (y, ConvS5State) to continue."""
        s = check_tensor("x", x, ("B", "T", "H", "W", self.d_model))
        if state is not None:
            check_tensor("state.x", state.x, (s["B"], s["H"], s["W"], self.d_state), allow_complex=True)
        Bsz, T, H, W = s["B"], s["T"], s["H"], s["W"]
        if T == 0 or H == 0 or W == 0:  # nothing to convolve or scan (conv2d rejects it): empty y, state unchanged
            y = torch.zeros_like(x)
            return (y, state if state is not None else self.initial_state(Bsz, H, W)) if return_state else y
        f = state_dtype(x)
        lam_bar, B_bar = self.discretize(f)
        frames = x.reshape(Bsz * T, H, W, self.d_model)
        Bu = self._input_conv(frames, B_bar).reshape(Bsz, T, H, W, self.d_state)
        states = convssm_scan(lam_bar, Bu, None if state is None else state.x)
        y = self._output_conv(states.reshape(Bsz * T, H, W, self.d_state), frames).reshape_as(x)
        return (y, ConvS5State(states[:, -1])) if return_state else y

    def initial_state(self, batch_size: int, H: int, W: int) -> ConvS5State:
        """Zero state (batch_size, H, W, d_state), complex64 (complex128 for an fp64 module)."""
        f = state_dtype(self.B)
        return ConvS5State(torch.zeros(batch_size, H, W, self.d_state, dtype=torch.complex128 if f == torch.float64
                                       else torch.complex64, device=self.B.device))

    def step(self, x_t: torch.Tensor, state: ConvS5State) -> Tuple[torch.Tensor, ConvS5State]:
        """One frame x_t (B, H, W, d_model) -> (y_t, new state); stepping through T frames equals `forward`."""
        s = check_tensor("x_t", x_t, ("B", "H", "W", self.d_model))
        check_tensor("state.x", state.x, (s["B"], s["H"], s["W"], self.d_state), allow_complex=True)
        lam_bar, B_bar = self.discretize(state_dtype(x_t))
        h = lam_bar * state.x.to(lam_bar.dtype) + self._input_conv(x_t, B_bar)
        return self._output_conv(h, x_t), ConvS5State(h)
