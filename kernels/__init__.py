"""Accelerated backends for ssmkit.core ops: CPU C++ (`cpu/`), Triton (`triton/`) and adapters to the
third-party `mamba_ssm` / `causal_conv1d` CUDA kernels. Imports nothing from ssmkit.

Each backend module exposes `load(op, device) -> callable`, raising BackendUnavailable with the reason.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, Dict

import torch

BACKENDS = ("cpp", "triton", "mamba_ssm")
_MODULES = {"cpp": ".cpu", "triton": ".triton", "mamba_ssm": ".mamba_ssm_backend"}


class BackendUnavailable(RuntimeError):
    """A requested kernel backend cannot run here; the message says why."""


def auto_enabled(backend: str) -> bool:
    """Whether backend="auto" may pick `backend` (SSMKIT_DISABLE_BACKENDS=cpp,triton turns some off)."""
    off = {b.strip() for b in os.environ.get("SSMKIT_DISABLE_BACKENDS", "").split(",") if b.strip()}
    return backend not in off


def load(backend: str, op: str, device: torch.device) -> Callable:
    """The `backend` implementation of `op` for tensors on `device`, or BackendUnavailable."""
    if backend not in _MODULES:
        raise BackendUnavailable(f"unknown backend {backend!r}; known: {list(BACKENDS)}")
    module = importlib.import_module(_MODULES[backend], __name__)
    return module.load(op, torch.device(device))


def available(device: str = "cpu", ops=("selective_scan",)) -> Dict[str, str]:
    """Map backend -> "ok" or the reason it does not load for `ops` on `device`."""
    report = {}
    for backend in BACKENDS:
        try:
            for op in ops:
                load(backend, op, torch.device(device))
            report[backend] = "ok"
        except BackendUnavailable as e:
            report[backend] = str(e)
    return report
