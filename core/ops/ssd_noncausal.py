"""Non-causal SSD (VSSD's NC-SSD): every position reads one global state, so the order of the sequence is free.

    w_t = dt_t A                      (per head; dt after dt_bias / softplus; VSSD passes A = exp(A_log) > 0)
    S   = sum_t B_t (w_t x_t)^T       (N, P) per head: the state of an SSD whose decay is dropped
    y_t = C_t S + D x_t

Layout as `ssd`: x (batch, L, H, P), dt (batch, L, H), A (H,), B, C (batch, L, G, N) with head h reading group
h // (H / G), D (H,) or (H, P). O(L N P) per head. Computed in fp32 (fp64 for fp64 x); y takes x's dtype.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._checks import check_same_device
from ._dispatch import describe, select
from ..dtypes import state_dtype
from .ssd import prepare_dt, skip_and_gate, validate_heads


def ssd_noncausal_ref(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    """The definition: accumulate the global state over time, then read it out at each step (fp64-capable)."""
    _validate(x, dt, A, B, C, D, dt_bias)
    f = state_dtype(x)
    batch, L, H, P = x.shape
    reps = H // B.shape[2]
    w = prepare_dt(dt, dt_bias, dt_softplus, dtype=f) * A.to(f)
    Bh, Ch = (M.to(f).repeat_interleave(reps, dim=2) for M in (B, C))  # (batch, L, H, N)
    S = torch.zeros(batch, H, B.shape[-1], P, dtype=f, device=x.device)
    for x_t, w_t, B_t in zip(x.to(f).unbind(1), w.unbind(1), Bh.unbind(1)):
        S = S + B_t.unsqueeze(-1) * (w_t.unsqueeze(-1) * x_t).unsqueeze(-2)
    ys = [torch.einsum("bhn,bhnp->bhp", C_t, S) for C_t in Ch.unbind(1)]
    y = torch.stack(ys, dim=1) if ys else S.new_zeros(batch, 0, H, P)  # L = 0: an empty y
    return skip_and_gate(y, x, D, None, x.dtype)


def _noncausal_torch(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    f = state_dtype(x)
    batch, L, H, P = x.shape
    G = B.shape[2]
    w = prepare_dt(dt, dt_bias, dt_softplus, dtype=f) * A.to(f)
    v = (x.to(f) * w.unsqueeze(-1)).view(batch, L, G, H // G, P)
    S = torch.einsum("blgn,blgrp->bgrnp", B.to(f), v)
    y = torch.einsum("blgn,bgrnp->blgrp", C.to(f), S).reshape(batch, L, H, P)
    return skip_and_gate(y, x, D, None, x.dtype)


def _validate(x, dt, A, B, C, D, dt_bias):
    validate_heads(x, dt, A, B, C, D, dt_bias)
    return check_same_device(x=x, dt=dt, A=A, B=B, C=C, D=D, dt_bias=dt_bias)


def ssd_noncausal(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                  dt_softplus: bool = False, backend: str = "auto") -> torch.Tensor:
    """Non-causal SSD (see module docstring): y (batch, L, H, P). backend: "auto" or "torch"."""
    device = _validate(x, dt, A, B, C, D, dt_bias)
    kwargs = dict(x=x, dt=dt, A=A, B=B, C=C, D=D, dt_bias=dt_bias, dt_softplus=dt_softplus)
    impl = select("ssd_noncausal", backend, device, _noncausal_torch,
                  describe(x.dtype, kwargs, ("D", "dt_bias", "dt_softplus")))
    return impl(**kwargs)
