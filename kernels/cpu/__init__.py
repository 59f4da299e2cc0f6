"""CPU C++ backend: kernels compiled on first use with torch.utils.cpp_extension and cached (see `_build`).

`load(op, device)` returns the op's callable or raises BackendUnavailable with the reason (wrong device, unknown
op, or the compiler's error when the extension cannot be built).
"""
from __future__ import annotations

from .. import BackendUnavailable

# op -> (extension name, C++ sources in this folder)
_SOURCES = {"selective_scan": ("selective_scan", ["selective_scan.cpp"]),
            "bimamba_scan": ("bimamba_scan", ["bimamba_scan.cpp"]),
            "bimamba_conv": ("bimamba_scan", ["bimamba_scan.cpp"]),
            "causal_conv1d": ("causal_conv", ["causal_conv.cpp"]),
            "selective_scan_2d": ("chimera2d", ["chimera2d.cpp"]),
            "companion_krylov": ("companion_krylov", ["companion_krylov.cpp"]),
            "closed_loop_krylov": ("companion_krylov", ["companion_krylov.cpp"]),
            "mamba_mixer_step": ("mixer_step", ["mixer_step.cpp"]),
            "time_ssd_step": ("mixer_step", ["mixer_step.cpp"]),
            "postnorm_ffn": ("mixer_step", ["mixer_step.cpp"])}
_CALLABLES = {}


def extension(op: str):
    """The compiled extension module behind `op` (builds it on first use); raises BackendUnavailable."""
    from ._build import build

    if op not in _SOURCES:
        raise BackendUnavailable(f"cpp backend has no {op} kernel (it has: {sorted(_SOURCES)})")
    name, sources = _SOURCES[op]
    try:
        return build(name, sources)
    except RuntimeError as e:
        raise BackendUnavailable(f"cpp backend: {e}") from None


def load(op, device):
    if device.type != "cpu":
        raise BackendUnavailable(f"cpp backend runs on CPU tensors, got device {device}")
    if op in _CALLABLES:
        return _CALLABLES[op]
    ext = extension(op)
    if op == "selective_scan":
        from .scan import make_selective_scan

        fn = make_selective_scan(ext)
    elif op == "causal_conv1d":
        from .causal_conv import make_causal_conv1d

        fn = make_causal_conv1d(ext)
    elif op in ("bimamba_scan", "bimamba_conv"):
        from . import bimamba

        fn = (bimamba.make_bimamba_scan if op == "bimamba_scan" else bimamba.make_bimamba_conv)(ext)
    elif op == "selective_scan_2d":
        from .chimera2d import make_selective_scan_2d

        fn = make_selective_scan_2d(ext)
    elif op in ("companion_krylov", "closed_loop_krylov"):
        from . import companion

        fn = (companion.make_companion_krylov if op == "companion_krylov" else companion.make_closed_loop_krylov)(ext)
    elif op in ("mamba_mixer_step", "time_ssd_step", "postnorm_ffn"):
        from . import mixer_step

        fn = getattr(mixer_step, f"make_{op}")(ext)
    else:  # pragma: no cover - every op in _SOURCES has a wrapper above
        raise BackendUnavailable(f"cpp backend has no {op} kernel")
    _CALLABLES[op] = fn
    return fn
