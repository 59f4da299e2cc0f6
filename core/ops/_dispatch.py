"""The one place where core ops reach `ssmkit.kernels`: which backend takes which call, and the choice for one call.

The backend contract: `SUPPORTS[backend][op]` declares what a backend's implementation of an op handles: the
dtypes of its main input, the optional arguments it takes (any other must be left at None / False), whether a
gradient flows through the final state it returns, and any further constraint (`check`). Each op describes its call
(`Call`) and `select` checks it against the declarations: backend="auto" skips a backend that cannot take the call,
so "auto" never changes a result or drops a gradient; an explicitly requested backend that cannot take it raises
`kernels.BackendUnavailable` naming the argument. Ops call the chosen implementation with keyword arguments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Optional, Sequence

import torch

from ssmkit import kernels

# Order in which backend="auto" tries accelerated backends, per device type; the PyTorch path comes last.
AUTO_ORDER: Dict[str, Sequence[str]] = {"cuda": ("mamba_ssm", "triton"), "cpu": ("cpp",)}

ALL_FLOATS = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})
NO_FP64 = ALL_FLOATS - {torch.float64}


@dataclass(frozen=True)
class Supports:
    """What one backend's implementation of one op takes."""
    args: FrozenSet[str]                                  # optional arguments it takes when given
    dtypes: FrozenSet[torch.dtype] = ALL_FLOATS           # dtypes of the main input
    grad_final_state: bool = True                         # backpropagates through a returned final state
    check: Optional[Callable[[dict], Optional[str]]] = None  # further constraint: the reason it fails, or None
    # "auto" picks it when a gradient is needed; False where its backward re-runs the PyTorch path, so that a
    # training call is faster on that path alone (an explicit request still gets it)
    auto_with_grad: bool = True


@dataclass(frozen=True)
class Call:
    """What one call of an op needs: the main input's dtype, the optional arguments given (not None / False),
    whether a gradient must flow through the final state it returns, and its keyword arguments (for `check`);
    `grad`: whether a gradient flows to any input."""
    dtype: torch.dtype
    args: FrozenSet[str] = frozenset()
    grad_final_state: bool = False
    kwargs: dict = field(default_factory=dict)
    grad: bool = False


def describe(dtype: torch.dtype, kwargs: dict, optional: Sequence[str], final_state: Optional[str] = None,
             grad_inputs: Sequence[Optional[torch.Tensor]] = ()) -> Call:
    """The `Call` of an op called with `kwargs`: `optional` lists its optional arguments; a gradient through the
    final state is needed when `final_state` (the flag asking for it) is set and a tensor of `grad_inputs` requires
    grad with autograd on."""
    given = frozenset(name for name in optional if kwargs.get(name) is not None and kwargs.get(name) is not False)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in grad_inputs)
    return Call(dtype, given, bool(final_state and kwargs.get(final_state) and grad), kwargs, grad)


def _power_of_two_chunks(kwargs: dict) -> Optional[str]:
    c = kwargs.get("chunk_size")
    return None if isinstance(c, int) and c > 0 and c & (c - 1) == 0 else f"chunk_size must be a power of two, got {c}"


def _same_dtypes(kwargs: dict) -> Optional[str]:
    dtypes = {t.dtype for t in kwargs.values() if isinstance(t, torch.Tensor)}
    return None if len(dtypes) <= 1 else f"its tensors must share one dtype, got {sorted(map(str, dtypes))}"


def _inference_one_dtype(kwargs: dict) -> Optional[str]:
    """The fused inference kernels: every tensor of one dtype, and no gradient asked for."""
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in kwargs.values()):
        return "inputs require grad (the fused kernel has no backward)"
    return _same_dtypes(kwargs)


_FP32_64 = frozenset({torch.float32, torch.float64})
_SCAN = frozenset({"D", "z", "delta_bias", "delta_softplus", "return_last_state", "initial_state"})
_SSD = frozenset({"D", "z", "dt_bias", "dt_softplus", "dt_limit", "initial_states", "seq_idx", "return_final_states"})
SUPPORTS: Dict[str, Dict[str, Supports]] = {
    "cpp": {"selective_scan": Supports(_SCAN),
            "causal_conv1d": Supports(frozenset({"bias", "activation", "initial_state", "return_final_state"}),
                                      _FP32_64, check=_same_dtypes),
            "selective_scan_2d": Supports(frozenset({"D", "delta_bias", "delta_softplus"})),
            "companion_krylov": Supports(frozenset(), _FP32_64, check=_same_dtypes),
            "closed_loop_krylov": Supports(frozenset(), _FP32_64, check=_same_dtypes),
            "mamba_mixer_step": Supports(frozenset({"in_proj_bias", "conv_bias", "out_proj_bias"}), _FP32_64,
                                         check=_inference_one_dtype),
            "time_ssd_step": Supports(frozenset(), _FP32_64, check=_inference_one_dtype),
            "postnorm_ffn": Supports(frozenset({"x"}), _FP32_64, check=_inference_one_dtype)},
    # The Triton SSD has a forward kernel only: its backward re-runs the chunked PyTorch forward and differentiates
    # that, so forward+backward costs more than the PyTorch path alone (0.67-0.77x its speed on an H200,
    # docs/benchmarks.md); "auto" uses it for inference.
    "triton": {"selective_scan": Supports(_SCAN), "ssd": Supports(_SSD, auto_with_grad=False)},
    "mamba_ssm": {
        # selective_scan_fn: no initial state, its last state carries no gradient, CUDA kernels for fp32/fp16/bf16
        "selective_scan": Supports(_SCAN - {"initial_state"}, NO_FP64, grad_final_state=False),
        "causal_conv1d": Supports(frozenset({"bias", "activation"}), NO_FP64),
        "ssd": Supports(_SSD, NO_FP64, check=_power_of_two_chunks),
    },
}


def unsupported(backend: str, op: str, call: Call) -> Optional[str]:
    """Why `backend` cannot take `call` of `op` (naming the argument), or None when it can."""
    s = SUPPORTS.get(backend, {}).get(op)
    if s is None:
        return f"backend {backend!r} declares no {op}"
    if call.dtype not in s.dtypes:
        names = ", ".join(sorted(str(d).replace("torch.", "") for d in s.dtypes))
        return f"backend {backend!r} {op} does not take dtype {call.dtype} (it takes {names})"
    missing = sorted(call.args - s.args)
    if missing:
        return f"backend {backend!r} {op} does not take {missing[0]}"
    if call.grad_final_state and not s.grad_final_state:
        return (f"backend {backend!r} {op} passes no gradient through the final state it returns "
                f"(asked for with inputs that require grad)")
    if s.check is not None:
        reason = s.check(call.kwargs)
        if reason is not None:
            return f"backend {backend!r} {op}: {reason}"
    return None


def inference_kernel(op: str, backend: str, x: torch.Tensor, args: FrozenSet[str],
                     tensors: Sequence[Optional[torch.Tensor]]):
    """For the fused one-token inference ops, whose cost is their Python overhead: the accelerated implementation of
    `op` to try as is on a call whose main input `x` is an fp32 / fp64 CPU tensor, whose optional arguments given
    (`args`) the backend declares, and that asks for no gradient through `tensors`; or None. Such a kernel checks
    shapes, dtypes and devices itself and raises RuntimeError on a call it does not take; the op then takes its
    general path (named checks, then `select` with the call's `Call`, which also names why an explicitly requested
    backend cannot take it)."""
    if backend == "torch" or not isinstance(x, torch.Tensor) or x.dtype not in _FP32_64 or not x.is_cpu:
        return None
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        return None
    names = AUTO_ORDER["cpu"] if backend == "auto" else (backend,)
    for name in names:
        s = SUPPORTS.get(name, {}).get(op)
        if s is not None and args <= s.args and (backend != "auto" or kernels.auto_enabled(name)):
            try:
                return kernels.load(name, op, x.device)
            except kernels.BackendUnavailable:
                continue
    return None


def _slower_for_grad(backend: str, op: str, call: Call) -> bool:
    """Whether "auto" passes `backend` over for this call because it needs a gradient (`Supports.auto_with_grad`)."""
    return call.grad and not SUPPORTS[backend][op].auto_with_grad


def select(op: str, backend: str, device: torch.device, torch_impl: Callable, call: Optional[Call] = None) -> Callable:
    """Return the implementation of `op` for `backend` ("auto", "torch" or a kernels backend name).

    With `call`, backends are checked against their declarations (`SUPPORTS`): "auto" moves on past a backend that
    cannot take it, that is slower than the PyTorch path for a call needing a gradient, or that cannot run here,
    and ends at `torch_impl`; an explicitly requested backend that cannot
    run here, or cannot take the call, raises `kernels.BackendUnavailable` with the reason.
    """
    if backend == "torch":
        return torch_impl
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ()):
            if kernels.auto_enabled(name) and (call is None or (unsupported(name, op, call) is None
                                                                 and not _slower_for_grad(name, op, call))):
                try:
                    return kernels.load(name, op, device)
                except kernels.BackendUnavailable:
                    continue
        return torch_impl
    if backend not in kernels.BACKENDS:
        raise ValueError(f"backend must be 'auto', 'torch' or one of {list(kernels.BACKENDS)}, got {backend!r}")
    impl = kernels.load(backend, op, device)  # first: a backend that cannot run here says so
    reason = None if call is None else unsupported(backend, op, call)
    if reason is not None:
        raise kernels.BackendUnavailable(reason)
    return impl
