"""Depthwise causal 1-D convolution (Mamba's short conv) and its one-step update for decoding.

x: (batch, dim, L), weight: (dim, W), bias: (dim,). y_t = act(bias + sum_k weight[:, k] * x_{t - W + 1 + k}),
with inputs before the start taken from `initial_state` (batch, dim, W - 1) or zero.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from ._dispatch import describe, select

_ACTIVATIONS = (None, "silu", "swish")


def _activate(y, activation):
    return F.silu(y) if activation in ("silu", "swish") else y


def causal_conv1d_ref(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
    """The definition as an explicit sum over the W taps (fp64-capable)."""
    batch, dim, L = x.shape
    W = weight.shape[1]
    past = x.new_zeros(batch, dim, W - 1) if initial_state is None else initial_state.to(x.dtype)
    xp = torch.cat([past, x], dim=-1)
    y = sum(weight[:, k, None] * xp[:, :, k:k + L] for k in range(W))
    if bias is not None:
        y = y + bias[:, None]
    y = _activate(y, activation)
    return (y, xp[:, :, L:].clone()) if return_final_state else y


def _conv_torch(x, weight, bias, activation, initial_state, return_final_state):
    W = weight.shape[1]
    if initial_state is None:
        xp = F.pad(x, (W - 1, 0))
    else:
        xp = torch.cat([initial_state.to(x.dtype), x], dim=-1)
    if x.shape[-1] == 0:  # conv1d rejects inputs shorter than the kernel: no outputs to compute
        y = x.new_zeros(x.shape)
    else:
        y = _activate(F.conv1d(xp, weight.unsqueeze(1), bias, groups=x.shape[1]), activation)
    return (y, xp[:, :, xp.shape[-1] - (W - 1):]) if return_final_state else y


def _validate(x, weight, bias, activation, initial_state):
    s = check_tensor("x", x, ("batch", "dim", "L"))
    check_tensor("weight", weight, ("dim", "W"), s)
    if bias is not None:
        check_tensor("bias", bias, ("dim",), s)
    if initial_state is not None:
        check_tensor("initial_state", initial_state, ("batch", "dim", s["W"] - 1), s)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    return check_same_device(x=x, weight=weight, bias=bias, initial_state=initial_state)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  activation: Optional[str] = None, initial_state: Optional[torch.Tensor] = None,
                  return_final_state: bool = False, backend: str = "auto"):
    """Causal depthwise conv1d; with `return_final_state` also returns the last W - 1 inputs (batch, dim, W - 1)."""
    device = _validate(x, weight, bias, activation, initial_state)
    kwargs = dict(x=x, weight=weight, bias=bias, activation=activation, initial_state=initial_state,
                  return_final_state=return_final_state)
    call = describe(x.dtype, kwargs, ("bias", "activation", "initial_state", "return_final_state"),
                    "return_final_state", (x, weight, bias, initial_state))
    impl = select("causal_conv1d", backend, device, _conv_torch, call)
    if x.shape[-1] == 0:  # L = 0: an empty y and the initial state, the same from every backend
        impl = _conv_torch
    return impl(**kwargs)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor] = None, activation: Optional[str] = None):
    """One decoding step: x (batch, dim), conv_state (batch, dim, W - 1) -> (y (batch, dim), new conv_state)."""
    s = check_tensor("x", x, ("batch", "dim"))
    check_tensor("weight", weight, ("dim", "W"), s)
    check_tensor("conv_state", conv_state, ("batch", "dim", s["W"] - 1), s)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}")
    window = torch.cat([conv_state.to(x.dtype), x.unsqueeze(-1)], dim=-1)
    y = (window * weight).sum(-1)
    if bias is not None:
        y = y + bias
    return _activate(y, activation), window[:, :, 1:]
