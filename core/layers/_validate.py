"""Argument checks shared by the mixers: constructor sizes and the input's dtype, each error naming what is wrong."""
from __future__ import annotations

import numbers

import torch


def check_positive_ints(layer: str, **sizes) -> None:
    """Each keyword must be an int >= 1 (bools rejected); the ValueError names the layer, the argument and its value."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{layer}: {name} must be a positive int, got {value!r}")


def check_input_dtype(layer: str, name: str, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise TypeError naming both dtypes when `x` and the layer's `weight` differ outside autocast.

    Under autocast a low-precision activation meeting fp32 weights is the intended use, so nothing is checked.
    """
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return
    raise TypeError(f"{layer}: {name} has dtype {x.dtype} but the layer's parameters are {weight.dtype}; convert one "
                    f"of them (layer.to({x.dtype}) or {name}.to({weight.dtype})) or run under torch.autocast")
