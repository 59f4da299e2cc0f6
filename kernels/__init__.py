"""Accelerated backends for ssmkit.core ops: CPU C++ (`cpu/`), Triton (`triton/`) and adapters to the
third-party `mamba_ssm` / `causal_conv1d` CUDA kernels. Imports nothing from ssmkit.

Each backend module exposes `load(op, device) -> callable`, raising BackendUnavailable with the reason.
"""
from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType
from typing import Callable, Dict, FrozenSet

import torch

BACKENDS = ("cpp", "triton", "mamba_ssm")
_MODULES = {"cpp": ".cpu", "triton": ".triton", "mamba_ssm": ".mamba_ssm_backend"}
_BACKEND_MODULES: Dict[str, ModuleType] = {}  # imported backend modules


class BackendUnavailable(RuntimeError):
    """A requested kernel backend cannot run here; the message says why."""


@functools.lru_cache(maxsize=16)
def _disabled(value: str) -> FrozenSet[str]:
    return frozenset(b.strip() for b in value.split(",") if b.strip())


def auto_enabled(backend: str) -> bool:
    """Whether backend="auto" may pick `backend` (SSMKIT_DISABLE_BACKENDS=cpp,triton turns some off)."""
    return backend not in _disabled(os.environ.get("SSMKIT_DISABLE_BACKENDS", ""))


def load(backend: str, op: str, device: torch.device) -> Callable:
    """The `backend` implementation of `op` for tensors on `device`, or BackendUnavailable.
    (Called per op call: the one-token ops pay its cost per token, so it keeps to dictionary lookups.)"""
    module = _BACKEND_MODULES.get(backend)
    if module is None:
        if backend not in _MODULES:
            raise BackendUnavailable(f"unknown backend {backend!r}; known: {list(BACKENDS)}")
        module = _BACKEND_MODULES[backend] = importlib.import_module(_MODULES[backend], __name__)
    return module.load(op, device if isinstance(device, torch.device) else torch.device(device))


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
