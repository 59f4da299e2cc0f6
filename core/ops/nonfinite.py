"""Non-finite values through the matrix (chunked, parallel, FFT) forms of causal ops.

Those forms contract over every position of a block, future ones included, with weight exactly zero: 0 * NaN is
NaN, so a NaN would travel backwards in time (and across packed sequences). They therefore compute on inputs whose
non-finite entries are replaced by zero and afterwards put NaN exactly where the sequential definition (the `_ref`
loop) has a non-finite value: every position the bad input reaches, causally, within its packed sequence.
All of it is elementwise work and cumulative sums: no device sync. On the CPU, where asking costs no sync, the
ops first check `maybe_bad` and skip the masking when every input is finite (it cost them 40-70% of their time).
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def maybe_bad(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether any of the tensors may hold NaN or inf. For CPU tensors one sum each (a NaN or inf makes the sum
    non-finite; an overflowing sum of finite values only sends the call down the masked path, which is exact
    either way); always True on an accelerator, where the answer would synchronise the device on every call."""
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" for t in present):
        return True
    return any(not math.isfinite(t.sum().item()) for t in present)


def bad(t: torch.Tensor) -> torch.Tensor:
    """True where `t` is NaN or +-inf."""
    return ~torch.isfinite(t)


def clean(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`t` with the entries under `mask` replaced by zero (a select: the rest is untouched and keeps its grad)."""
    return torch.where(mask, torch.zeros((), dtype=t.dtype, device=t.device), t)


def poison(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`t` with NaN where `mask` is True."""
    return torch.where(mask, torch.full((), float("nan"), dtype=t.dtype, device=t.device), t)


def segment_starts(resets: Optional[torch.Tensor], L: int, device) -> Optional[torch.Tensor]:
    """(batch, L) index of the first position of each position's packed sequence, or None without resets."""
    if resets is None:
        return None
    idx = torch.arange(L, device=device).expand_as(resets)
    return torch.where(resets, idx, torch.zeros_like(idx)).cummax(dim=1).values


def reach(mask: torch.Tensor, starts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """mask (batch, L, ...) -> True at t if mask is True at some t' <= t of the same packed sequence.

    starts: (batch, L) from `segment_starts` (None: one sequence per row).
    """
    c = mask.to(torch.int32).cumsum(dim=1, dtype=torch.int32)
    if starts is None:
        return c > 0
    before = torch.cat([torch.zeros_like(c[:, :1]), c[:, :-1]], dim=1)  # count strictly before t
    index = starts.view(*starts.shape, *(1,) * (c.dim() - 2)).expand_as(c)
    return c > before.gather(1, index)


def in_first_segment(resets: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(batch, L) True before the first reset (where an initial state still reaches); None without resets."""
    if resets is None:
        return None
    return resets.to(torch.int32).cumsum(dim=1) == 0


def in_last_segment(starts: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(batch, L) True inside the last packed sequence of each row (what a final state depends on)."""
    if starts is None:
        return None
    return starts == starts[:, -1:]
