"""A private float64 sequential oracle for the selective scan (mamba_ssm selective_scan_fn semantics).

Readable on purpose: the time axis is unbound once (never indexed per step, which makes autograd quadratic).
Used by the kernels tests until/alongside `ssmkit.core.ops.selective_scan_ref`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bc_per_channel(X: torch.Tensor, batch: int, dim: int) -> torch.Tensor:
    """B or C as (batch, dim, N, L) (time-invariant (dim, N) broadcast over batch and time)."""
    if X.dim() == 2:
        return X[None, :, :, None]
    if X.dim() == 3:
        X = X.unsqueeze(1)
    groups = X.shape[1]
    return X.repeat_interleave(dim // groups, dim=1)


def scan_oracle(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False, initial_state=None):
    dtype_in = u.dtype
    u, delta, A = u.double(), delta.double(), A.double()
    batch, dim, L = u.shape
    N = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bx = _bc_per_channel(B.double(), batch, dim).expand(batch, dim, N, L)
    Cx = _bc_per_channel(C.double(), batch, dim).expand(batch, dim, N, L)
    h = (torch.zeros(batch, dim, N, dtype=torch.float64) if initial_state is None else initial_state.double())
    ys = []
    for u_t, d_t, B_t, C_t in zip(u.unbind(-1), delta.unbind(-1), Bx.unbind(-1), Cx.unbind(-1)):
        h = torch.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * B_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * F.silu(z.double())
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
