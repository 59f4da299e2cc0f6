"""A selective scan that returns every hidden state, not C . h: what Spatial-Mamba fuses over the grid.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        ->  h (batch, dim, L, N)

Layouts as `selective_scan`: u, delta (batch, dim, L); A (dim, N); B (dim, N), (batch, N, L) or (batch, G, N, L).
The fast path reuses `selective_scan` (and its backends and hand-written backward): the N states of channel d
become N channels with one state each and C = 1, so the scan's output is the state itself.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._checks import check_tensor
from ..dtypes import state_dtype
from .selective_scan import per_channel, prepare_delta, selective_scan


def _validate(u, delta, A, B, delta_bias, initial_state):
    s = check_tensor("u", u, ("batch", "dim", "L"))
    check_tensor("delta", delta, ("batch", "dim", "L"), s)
    check_tensor("A", A, ("dim", "N"), s)
    layouts = {2: ("dim", "N"), 3: ("batch", "N", "L"), 4: ("batch", "G", "N", "L")}
    if not isinstance(B, torch.Tensor) or B.dim() not in layouts:
        got = tuple(B.shape) if isinstance(B, torch.Tensor) else type(B).__name__
        raise ValueError(f"B must have shape (dim, N), (batch, N, L) or (batch, G, N, L), got {got}")
    check_tensor("B", B, layouts[B.dim()], s)
    if B.dim() == 4 and s["dim"] % B.shape[1]:
        raise ValueError(f"B has {B.shape[1]} groups, which must divide dim={s['dim']}")
    if delta_bias is not None:
        check_tensor("delta_bias", delta_bias, ("dim",), s)
    if initial_state is not None:
        check_tensor("initial_state", initial_state, ("batch", "dim", "N"), s)
    return s


def selective_scan_states_ref(u, delta, A, B, delta_bias=None, delta_softplus=False, initial_state=None):
    """The definition: a sequential loop over time (unbound once), fp64-capable; returns (batch, dim, L, N)."""
    _validate(u, delta, A, B, delta_bias, initial_state)
    dtype = state_dtype(u)
    batch, dim, L = u.shape
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    Bc = per_channel(B, dim).to(dtype)
    dA = torch.exp(delta.unsqueeze(-1) * A.to(dtype).unsqueeze(1))             # (batch, dim, L, N)
    dBu = (delta * u.to(dtype)).unsqueeze(-1) * (Bc.unsqueeze(1) if Bc.dim() == 2 else Bc.transpose(-1, -2))
    h = (torch.zeros(batch, dim, A.shape[1], dtype=dtype, device=u.device) if initial_state is None
         else initial_state.to(dtype))
    hs = []
    for dA_t, dBu_t in zip(dA.unbind(2), dBu.unbind(2)):
        h = dA_t * h + dBu_t
        hs.append(h)
    return torch.stack(hs, dim=2) if hs else h.new_zeros(batch, dim, 0, A.shape[1])  # L = 0: no states


def selective_scan_states(u, delta, A, B, delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                          initial_state: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    """All hidden states h (batch, dim, L, N) of the selective scan (fp32, fp64 for fp64 inputs)."""
    s = _validate(u, delta, A, B, delta_bias, initial_state)
    batch, dim, L, N = s["batch"], s["dim"], s["L"], s["N"]
    dtype = state_dtype(u)
    # Channel n * dim + d carries state n of channel d.
    if B.dim() == 2:
        Bn = B.t().reshape(N * dim, 1)
    elif B.dim() == 3:
        Bn = B.unsqueeze(2)                                                    # groups = N
    else:
        Bn = B.transpose(1, 2).reshape(batch, N * B.shape[1], 1, L)             # group n * G + g
    An = A.t().reshape(N * dim, 1)
    Cn = torch.ones(N * dim, 1, dtype=dtype, device=u.device)
    h0 = None if initial_state is None else initial_state.transpose(1, 2).reshape(batch, N * dim, 1)
    h = selective_scan(u.repeat(1, N, 1), delta.repeat(1, N, 1), An, Bn, Cn, None, None,
                       None if delta_bias is None else delta_bias.repeat(N), delta_softplus,
                       initial_state=h0, backend=backend)
    return h.to(dtype).reshape(batch, N, dim, L).permute(0, 2, 3, 1)
