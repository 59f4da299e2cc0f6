"""The one place where core ops reach `ssmkit.kernels`: picks an implementation per op and device."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch

from ssmkit import kernels

# Order in which backend="auto" tries accelerated backends, per device type; the PyTorch path comes last.
AUTO_ORDER: Dict[str, Sequence[str]] = {"cuda": ("mamba_ssm", "triton"), "cpu": ("cpp",)}


def select(op: str, backend: str, device: torch.device, torch_impl: Callable, skip: Sequence[str] = ()) -> Callable:
    """Return the implementation of `op` for `backend` ("auto", "torch" or a kernels backend name).

    An explicitly requested backend that cannot run raises `kernels.BackendUnavailable` with the reason;
    "auto" silently moves on to the next backend and ends at `torch_impl`; it never tries those in `skip`
    (backends that cannot take this call's arguments).
    """
    if backend == "torch":
        return torch_impl
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ()):
            if name not in skip and kernels.auto_enabled(name):
                try:
                    return kernels.load(name, op, device)
                except kernels.BackendUnavailable:
                    continue
        return torch_impl
    if backend not in kernels.BACKENDS:
        raise ValueError(f"backend must be 'auto', 'torch' or one of {list(kernels.BACKENDS)}, got {backend!r}")
    return kernels.load(backend, op, device)
