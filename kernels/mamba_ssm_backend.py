"""Adapter to the optional third-party CUDA kernels of `mamba_ssm` and `causal_conv1d` (pip install "ssmkit[cuda]")."""
from __future__ import annotations

import importlib

from . import BackendUnavailable

# op -> (module, attribute) of the third-party implementation.
_OPS = {
    "selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "causal_conv1d": ("causal_conv1d", "causal_conv1d_fn"),
    "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
}


def _selective_scan(fn):
    def run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state):
        if initial_state is not None:
            raise ValueError("mamba_ssm's selective_scan_fn takes no initial_state")
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return run


def _causal_conv1d(fn):
    def run(x, weight, bias, activation, initial_state, return_final_state):
        if initial_state is not None or return_final_state:
            raise ValueError("the causal_conv1d adapter takes no initial_state / return_final_state")
        return fn(x, weight, bias, activation=activation)
    return run


_ADAPT = {"selective_scan": _selective_scan, "causal_conv1d": _causal_conv1d}


def load(op, device):
    if op not in _OPS:
        raise BackendUnavailable(f"mamba_ssm backend has no {op} op")
    if device.type != "cuda":
        raise BackendUnavailable(f"mamba_ssm backend runs on CUDA tensors, got device {device}")
    module, attr = _OPS[op]
    try:
        fn = getattr(importlib.import_module(module), attr)
    except Exception as e:  # ImportError, or an ABI-broken extension raising at import
        raise BackendUnavailable(f"mamba_ssm backend: cannot import {module}.{attr}: {e}"
                                 f" (pip install \"ssmkit[cuda]\")") from e
    return _ADAPT.get(op, lambda f: f)(fn)
