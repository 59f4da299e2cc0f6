"""The time recurrence of a convolutional SSM with diagonal complex transition (ConvS5).

    x_k = Lambda_bar * x_{k-1} + Bu_k        (per pixel and state channel; Lambda_bar time-invariant)

Bu (B, T, H, W, P) complex (the input convolution already applied), Lambda_bar (P,) complex,
initial_state (B, H, W, P) complex. Returns every state (B, T, H, W, P).
`convssm_scan` is a log-depth parallel scan over time (Hillis-Steele doubling: at level j each step adds
Lambda_bar^(2^j) times the partial sum 2^j steps back), `convssm_scan_ref` the sequential loop.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor


def _validate(Lambda_bar, Bu, initial_state):
    s = check_tensor("Bu", Bu, ("B", "T", "H", "W", "P"), allow_complex=True)
    check_tensor("Lambda_bar", Lambda_bar, ("P",), s, allow_complex=True)
    if initial_state is not None:
        check_tensor("initial_state", initial_state, ("B", "H", "W", "P"), s, allow_complex=True)
    check_same_device(Lambda_bar=Lambda_bar, Bu=Bu, initial_state=initial_state)


def convssm_scan_ref(Lambda_bar: torch.Tensor, Bu: torch.Tensor, initial_state: Optional[torch.Tensor] = None):
    """The definition: the recurrence one frame at a time (time unbound once)."""
    _validate(Lambda_bar, Bu, initial_state)
    x = Bu.new_zeros(Bu.shape[:1] + Bu.shape[2:]) if initial_state is None else initial_state.to(Bu.dtype)
    xs = []
    for bu in Bu.unbind(1):
        x = Lambda_bar * x + bu
        xs.append(x)
    return torch.stack(xs, 1) if xs else Bu.clone()  # T = 0: no states


def convssm_scan(Lambda_bar: torch.Tensor, Bu: torch.Tensor, initial_state: Optional[torch.Tensor] = None):
    """All states by a parallel scan over time: ceil(log2 T) vectorised levels, differentiable."""
    _validate(Lambda_bar, Bu, initial_state)
    T = Bu.shape[1]
    x = Bu
    if initial_state is not None:
        x = torch.cat([x[:, :1] + Lambda_bar * initial_state.to(Bu.dtype).unsqueeze(1), x[:, 1:]], 1)
    power, offset = Lambda_bar, 1
    while offset < T:
        x = x + F.pad(power * x[:, :-offset], (0, 0, 0, 0, 0, 0, offset, 0))
        power, offset = power * power, offset * 2
    return x
