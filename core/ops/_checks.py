"""Argument checks shared by every op: errors name the argument, the expected shape and the one received."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

Dim = Union[int, str, None]


def _fmt(shape: Sequence[Dim]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_tensor(name: str, t, shape: Sequence[Dim], sizes: Optional[dict] = None,
                 floating: bool = True, allow_complex: bool = False) -> dict:
    """Check that `t` is a tensor of the given symbolic shape; bind and return symbol sizes.

    `shape` entries are ints (exact), strings (symbols: equal wherever they recur, across calls sharing
    `sizes`) or None (any size). Raises TypeError for non-tensors / wrong dtype kinds, ValueError for shapes.
    """
    sizes = {} if sizes is None else sizes
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {_fmt(shape)}, got {type(t).__name__}")
    if floating:
        ok = t.is_floating_point() or (allow_complex and t.is_complex())
        if not ok:
            kind = "floating-point or complex" if allow_complex else "floating-point"
            raise TypeError(f"{name} must be a {kind} tensor, got dtype {t.dtype}")
    if t.dim() != len(shape):
        raise ValueError(f"{name} must have shape {_fmt(shape)} ({len(shape)} dims), got {tuple(t.shape)}")
    for axis, (want, got) in enumerate(zip(shape, t.shape)):
        if want is None:
            continue
        if isinstance(want, str):
            if want in sizes and sizes[want] != got:
                expected = tuple(sizes.get(d, d) if isinstance(d, str) else d for d in shape)
                raise ValueError(f"{name} must have shape {_fmt(shape)} = {_fmt(expected)}, got {tuple(t.shape)}"
                                 f" ({want} is {sizes[want]} from another argument)")
            sizes[want] = got
        elif want != got:
            raise ValueError(f"{name} must have shape {_fmt(shape)}, got {tuple(t.shape)} (axis {axis})")
    return sizes


def check_same_device(**tensors) -> torch.device:
    """All given (non-None) tensors must live on one device; returns it."""
    devices = {n: t.device for n, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")
    return next(iter(devices.values()))
