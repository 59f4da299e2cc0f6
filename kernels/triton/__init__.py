"""Triton backend (GPU). Runs on CUDA tensors, and on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1,
which must be set before this backend is first loaded), which is how the tests check it without a GPU."""
from __future__ import annotations

import os

from .. import BackendUnavailable

_OPS = ("selective_scan", "ssd")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def load(op, device):
    if op not in _OPS:
        raise BackendUnavailable(f"triton backend has no {op} kernel (it has: {list(_OPS)})")
    if device.type != "cuda" and not (device.type == "cpu" and _interpreting()):
        raise BackendUnavailable(f"triton backend runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
                                 f"got device {device}")
    try:
        import triton  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising at import
        raise BackendUnavailable(f"triton backend: cannot import triton: {e}") from e
    if device.type == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailable("triton backend: torch.cuda is not available")
    try:
        if op == "ssd":
            from .ssd import ssd_triton as fn
        else:
            from .scan import selective_scan_triton as fn
    except Exception as e:
        raise BackendUnavailable(f"triton backend: cannot load its kernels: {type(e).__name__}: {e}") from e
    return fn
