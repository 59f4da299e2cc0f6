"""Adapter to the optional third-party CUDA kernels of `mamba_ssm` and `causal_conv1d` (pip install "ssmkit[cuda]")."""
from __future__ import annotations

import importlib

from . import BackendUnavailable

# op -> (module, attribute) of the third-party implementation with ssmkit's signature.
_OPS = {
    "selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "causal_conv1d": ("causal_conv1d", "causal_conv1d_fn"),
    "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),
}


def load(op, device):
    if op not in _OPS:
        raise BackendUnavailable(f"mamba_ssm backend has no {op} op")
    if device.type != "cuda":
        raise BackendUnavailable(f"mamba_ssm backend runs on CUDA tensors, got device {device}")
    module, attr = _OPS[op]
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as e:  # ImportError, or an ABI-broken extension raising at import
        raise BackendUnavailable(f"mamba_ssm backend: cannot import {module}.{attr}: {e}"
                                 f" (pip install \"ssmkit[cuda]\")") from e
