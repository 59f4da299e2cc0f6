"""The C++ selective scan wrapped in a torch.autograd.Function.

`make_selective_scan(ext)` returns the backend callable

    fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)

with the semantics of `ssmkit.core.ops.selective_scan` (arguments already validated by the core op):
y (batch, dim, L) in u's dtype, or (y, last_state) when return_last_state. It is differentiable w.r.t. u, delta,
A, B, C, D, z, delta_bias and initial_state, and through last_state.

Arithmetic runs in float64 when u is float64, otherwise in float32 (bf16/fp16 inputs are upcast, as mamba_ssm's
kernels do), exactly like `selective_scan_ref`. last_state is float32, or float64 when u is float64.
"""
from __future__ import annotations

from typing import Optional

import torch


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """As `selective_scan_ref`: float64 for float64 u, else float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prep(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().to(dtype).contiguous()


def _bc4(t: torch.Tensor) -> torch.Tensor:
    """(D, N) stays; (batch, N, L) -> (batch, 1, N, L); (batch, G, N, L) stays."""
    return t.unsqueeze(1) if t.dim() == 3 else t


def _grad_like(g: Optional[torch.Tensor], meta, needed: bool):
    """`g` in the shape and dtype `meta` = (shape, dtype) of the input it belongs to."""
    if not needed or meta is None or g is None:
        return None
    shape, dtype = meta
    return g.reshape(shape).to(dtype)


def make_selective_scan(ext):
    class _SelectiveScanCpp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, want_last):
            ct = _compute_dtype(u)
            args = [_prep(t, ct) for t in (u, delta, A, B, C, D, z, delta_bias)]
            args[3], args[4] = _bc4(args[3]), _bc4(args[4])
            h0 = _prep(initial_state, ct)
            save = any(ctx.needs_input_grad)
            # last_state is only computed when asked for (an empty tensor otherwise, which gets no gradient)
            out, last, states = ext.fwd(*args, bool(delta_softplus), h0, save, bool(want_last))
            ctx.delta_softplus = bool(delta_softplus)
            ctx.meta = [None if t is None else (t.shape, t.dtype)
                        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
            ctx.set_materialize_grads(False)
            if save:
                ctx.save_for_backward(*args, h0, states)
            y = out.to(u.dtype)
            last_state = last if ct == torch.float64 else last.to(torch.float32)
            return y, last_state

        @staticmethod
        def backward(ctx, dy, dlast):
            *args, h0, states = ctx.saved_tensors
            ct = args[0].dtype
            dy = torch.zeros_like(args[0]) if dy is None else dy.to(ct).contiguous()
            dlast = None if dlast is None else dlast.to(ct).contiguous()
            du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = ext.bwd(*args, ctx.delta_softplus, h0, states, dy, dlast,
                                                                 ctx.needs_input_grad[9])
            need = ctx.needs_input_grad
            u, delta, A, B, C, D, z, delta_bias, h0 = ctx.meta
            return (
                _grad_like(du, u, need[0]),
                _grad_like(ddelta, delta, need[1]),
                _grad_like(dA, A, need[2]),
                _grad_like(dB, B, need[3]),
                _grad_like(dC, C, need[4]),
                _grad_like(dD, D, need[5]),
                _grad_like(dz, z, need[6]),
                _grad_like(dbias, delta_bias, need[7]),
                None,
                _grad_like(dh0, h0, need[9]),
                None,
            )

    def selective_scan_cpp(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, initial_state=None):
        if A.is_complex():
            raise TypeError("the cpp selective scan supports real A only, got a complex A")
        y, last_state = _SelectiveScanCpp.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                                return_last_state)
        return (y, last_state) if return_last_state else y

    selective_scan_cpp.__name__ = "selective_scan_cpp"
    return selective_scan_cpp
