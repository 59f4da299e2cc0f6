"""Initialisation helpers shared by the mixers, and the per-parameter optimiser hint.

- `set_optim(p, weight_decay=0.0, lr=None)` attaches `p._optim = {"weight_decay": 0.0[, "lr": lr]}`, the
  convention of state-spaces/s4: `ssmkit.train.param_groups` puts every parameter into the optimiser group its
  hint asks for (the hint's keys override the task's defaults). A layer marks what its reference marks
  (A_log and D of Mamba-style mixers, the SSM parameters of S4, Hyena's filter MLP).
- `dt_rank`, `init_dt_bias`, `init_dt_proj`, `s4d_real_A_log`, `mamba2_A_log`: the dt and A initialisations of
  mamba_ssm, written once for every selective-scan mixer.
- `to_factory(module, device, dtype)`: PyTorch's `device` / `dtype` factory keywords for a built layer.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional, Tuple, Union

import torch
import torch.nn as nn

DT_INITS = ("random", "constant")


def set_optim(param: torch.Tensor, weight_decay: float = 0.0, lr: Optional[float] = None) -> torch.Tensor:
    """Mark `param` for its own optimiser settings (`param._optim`); returns it. lr=None keeps the task's lr."""
    hint = {"weight_decay": float(weight_decay)}
    if lr is not None:
        hint["lr"] = float(lr)
    param._optim = hint
    return param


def optim_hint(param: torch.Tensor) -> dict:
    """The hint `set_optim` attached to `param` ({} when it has none)."""
    return dict(getattr(param, "_optim", {}))


def dt_rank(d_model: int, rank: Union[int, str] = "auto") -> int:
    """Rank of the dt projection: ceil(d_model / 16) for "auto" (mamba_ssm), else the given int."""
    if rank == "auto":
        return math.ceil(d_model / 16)
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"dt_rank must be 'auto' or a positive int, got {rank!r}")
    return int(rank)


def init_dt_bias(d_inner: int, dt_min: float, dt_max: float, dt_init_floor: float) -> torch.Tensor:
    """Inverse softplus of dt drawn log-uniformly in [dt_min, dt_max] (floored), as mamba_ssm initialises it."""
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


def init_dt_proj(weight: torch.Tensor, rank: int, dt_scale: float = 1.0, dt_init: str = "random") -> None:
    """mamba_ssm's dt_proj weight init, std = rank^-1/2 * dt_scale: U(-std, std) ("random") or std ("constant")."""
    std = rank ** -0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "random":
            weight.uniform_(-std, std)
        elif dt_init == "constant":
            weight.fill_(std)
        else:
            raise ValueError(f"dt_init must be one of {DT_INITS}, got {dt_init!r}")


def s4d_real_A_log(*shape: int, d_state: int) -> torch.Tensor:
    """log A with A = [1, ..., d_state] along the last axis (S4D-Real), shape (*shape, d_state), fp32."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(*shape, 1))


def mamba2_A_log(nheads: int, A_init_range: Tuple[float, float] = (1, 16)) -> torch.Tensor:
    """log A with A ~ U(A_init_range) per head (Mamba-2), fp32."""
    if not 0 < A_init_range[0] <= A_init_range[1]:
        raise ValueError(f"A_init_range must satisfy 0 < low <= high, got {A_init_range}")
    return torch.log(torch.empty(nheads).uniform_(*A_init_range))


def to_factory(module: nn.Module, device=None, dtype: Optional[torch.dtype] = None,
               keep_fp32: Iterable[str] = ()) -> nn.Module:
    """Move a freshly built layer to `device` and its floating parameters and buffers to `dtype`.

    Layers draw their initial values on the CPU in fp32 (so a seed gives the same layer on every device) and
    call this last. Parameters named in `keep_fp32` (as mamba_ssm keeps A_log and D) stay fp32. Parameters keep
    their attributes (optimiser hints) and tied parameters stay tied.
    """
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    if device is None and dtype is None:
        return module
    keep, moved = set(keep_fp32), {}
    for prefix, mod in module.named_modules():
        for name, t in list(mod._parameters.items()) + list(mod._buffers.items()):
            if t is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            if id(t) not in moved:
                to_dtype = dtype if dtype is not None and t.is_floating_point() and full not in keep else t.dtype
                new = t.detach().to(device=device, dtype=to_dtype)
                if isinstance(t, nn.Parameter):
                    new = nn.Parameter(new, requires_grad=t.requires_grad)
                    new.__dict__.update(t.__dict__)
                moved[id(t)] = new
            (mod._parameters if name in mod._parameters else mod._buffers)[name] = moved[id(t)]
    return module
