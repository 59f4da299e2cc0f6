"""Fast generation: an S4 / S4D layer frozen into one real matrix per channel, [s_t; y_t] = M [s_{t-1}; u_t].

The core layers' own `step` runs the complex recurrence with shape checks and a cache lookup (about a dozen small
ops, ~250 us per call on one busy CPU thread); SaShiMi steps dozens of layers per sample. Here the discrete system
from the core's discretisation ops (`dplr_discretize`: dense bilinear DPLR, the exact "dense" mode; `s4d_discretize`:
ZOH) is written on the conjugate-completed state x = [z; conj z], moved to the real basis s = [Re z; Im z]
(x = T^-1 s with T^-1 = [[I, iI], [I, -iI]]), and the state update, read-out and D skip are fused:

    M = [[A, B], [C A, C B + D]]   so one batched matmul gives the new state and the SSM output.

The layer's activation, dropout and output Linear + GLU are then applied as in `forward`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core.layers import S4, S4D
from ssmkit.core.ops import dplr_discretize, s4d_discretize


def _completed_system(layer: nn.Module):
    """(dA (H, n, n), dB (H, n), C (H, n), D (H,)) complex128 on the completed state, n = 2 x complex modes."""
    if isinstance(layer, S4):
        dt, Lambda, P, B, C = (t.to(torch.complex128) if t.is_complex() else t.double() for t in layer.kernel.params())
        dA, dB = dplr_discretize(dt, Lambda, P, B)
    elif isinstance(layer, S4D):
        dt, A, B, C = (t.to(torch.complex128) if t.is_complex() else t.double() for t in layer.kernel.params())
        dA_diag, dB = s4d_discretize(dt, A, B)
        dA = torch.diag_embed(torch.cat([dA_diag, dA_diag.conj()], dim=-1))
        dB = torch.cat([dB, dB.conj()], dim=-1)
    else:
        raise TypeError(f"expected an S4 or S4D layer, got {type(layer).__name__}")
    C = torch.cat([C, C.conj()], dim=-1)
    return dA, dB, C, layer.D.reshape(-1).double()


def fused_matrix(layer: nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The transposed fused matrix M^T (H, n+1, n+1) of an S4 or S4D layer (see the module docstring), computed in
    float64 and returned in `dtype`."""
    dA, dB, C, D = _completed_system(layer)
    n = dA.shape[-1]
    m = n // 2
    eye = torch.eye(m, dtype=dA.dtype, device=dA.device)
    T_inv = torch.cat([torch.cat([eye, 1j * eye], 1), torch.cat([eye, -1j * eye], 1)], 0)
    T = torch.linalg.inv(T_inv)
    A = (T @ dA @ T_inv).real
    B = (dB @ T.transpose(0, 1)).real
    Cr = (C @ T_inv).real
    M = torch.zeros(dA.shape[0], n + 1, n + 1, dtype=torch.float64, device=dA.device)
    M[:, :n, :n] = A
    M[:, :n, n] = B
    M[:, n, :n] = torch.einsum("hn,hnm->hm", Cr, A)
    M[:, n, n] = (Cr * B).sum(-1) + D
    return M.transpose(1, 2).to(dtype).contiguous()


def ssm_step(layer: nn.Module, Mt: torch.Tensor, u: torch.Tensor, s: torch.Tensor):
    """One step of the frozen layer: u (B, H), real state s (H, B, n) (channel-major, so the per-channel products
    are one bmm with no broadcast copies; zeros at the start; n = the layer's d_state) -> (layer output (B, H), s)."""
    out = torch.bmm(torch.cat([s, u.t().unsqueeze(-1)], dim=-1), Mt)  # (H, B, n + 1)
    z = out[..., -1].t()
    if layer.training:  # dropout active: go through the layer's modules
        return layer.output_linear(layer.dropout(layer.activation(z))), out[..., :-1]
    linear = layer.output_linear[0]  # inference: the same GELU -> Linear -> GLU without module-call overhead
    return F.glu(F.linear(F.gelu(z), linear.weight, linear.bias), dim=-1), out[..., :-1]
