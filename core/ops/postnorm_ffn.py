"""The post-norm residual feed-forward of RecBole-style layers (SASRec's, Mamba4Rec's and TiM4Rec's), per position:

    h = LayerNorm1(y + x)        (y alone when x is None)
    out = LayerNorm2(h + W2 act(W1 h + b1) + b2)        act: "gelu" (exact), "hardswish" or "relu"

In eval mode (dropout off) this is the whole position-wise part of such a layer after its mixer: 7 small ops per
token in PyTorch, one call in the "cpp" backend (`kernels/cpu/mixer_step.cpp`), which is what streaming one user
costs. Inference only: calls that need gradients, or whose tensors are not all fp32 or all fp64, take the PyTorch path.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from .mixer_step import dispatch_fused

ACTIVATIONS = {"gelu": F.gelu, "hardswish": F.hardswish, "relu": F.relu}


def _validate(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, activation) -> torch.device:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(y, torch.Tensor) or y.dim() < 1:
        check_tensor("y", y, (None, "d_model"))
    s = check_tensor("y", y, (None,) * (y.dim() - 1) + ("d_model",))
    if x is not None:
        check_tensor("x", x, tuple(y.shape[:-1]) + ("d_model",), s)
    check_tensor("w1", w1, ("d_inner", "d_model"), s)
    check_tensor("b1", b1, ("d_inner",), s)
    check_tensor("w2", w2, ("d_model", "d_inner"), s)
    for name, t in (("norm1_weight", norm1_weight), ("norm1_bias", norm1_bias), ("b2", b2),
                    ("norm2_weight", norm2_weight), ("norm2_bias", norm2_bias)):
        check_tensor(name, t, ("d_model",), s)
    return check_same_device(y=y, x=x, norm1_weight=norm1_weight, norm1_bias=norm1_bias, w1=w1, b1=b1, w2=w2, b2=b2,
                             norm2_weight=norm2_weight, norm2_bias=norm2_bias)


def _ffn_torch(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, eps1, eps2, activation):
    d = (y.shape[-1],)
    h = F.layer_norm(y if x is None else y + x, d, norm1_weight, norm1_bias, eps1)
    o = F.linear(ACTIVATIONS[activation](F.linear(h, w1, b1)), w2, b2)
    return F.layer_norm(o + h, d, norm2_weight, norm2_bias, eps2)


def postnorm_ffn_ref(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, eps1=1e-5, eps2=1e-5,
                     activation="gelu"):
    """The definition in PyTorch's functional ops (fp64-capable)."""
    _validate(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, activation)
    return _ffn_torch(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, eps1, eps2, activation)


def postnorm_ffn(y: torch.Tensor, x: Optional[torch.Tensor], norm1_weight: torch.Tensor, norm1_bias: torch.Tensor,
                 w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, norm2_weight: torch.Tensor,
                 norm2_bias: torch.Tensor, eps1: float = 1e-5, eps2: float = 1e-5, activation: str = "gelu",
                 backend: str = "auto") -> torch.Tensor:
    """y, x (..., d_model) -> (..., d_model) (module docstring); w1 (d_inner, d_model), w2 (d_model, d_inner) as
    nn.Linear holds them. backend: "auto", "torch" or "cpp"."""
    kw = dict(y=y, x=x, norm1_weight=norm1_weight, norm1_bias=norm1_bias, w1=w1, b1=b1, w2=w2, b2=b2,
              norm2_weight=norm2_weight, norm2_bias=norm2_bias, eps1=eps1, eps2=eps2, activation=activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return dispatch_fused("postnorm_ffn", backend, kw, "y", ("x",), _ffn_torch, _validate_kw)


def _validate_kw(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, eps1, eps2, activation):
    return _validate(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, activation)
