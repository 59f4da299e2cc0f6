"""The C++ 2-D selective scan (`chimera2d.cpp`) as the cpp backend of `ssmkit.core.ops.selective_scan_2d`.

Differentiable w.r.t. every tensor input. Arithmetic in float64 for float64 u, else float32 (fp16 / bf16 inputs
are upcast), exactly like `selective_scan_2d_ref`; y takes u's dtype. When gradients are needed the forward keeps
its states (2 x batch x L x V x D x N values) for the backward if they fit in `SAVE_BUDGET_BYTES`;
above it the backward recomputes them one batch row at a time (bounded memory, about a third more time).
"""
from __future__ import annotations

import torch

SAVE_BUDGET_BYTES = 256 * 2 ** 20


def _prep(t, dtype):
    return None if t is None else t.detach().to(dtype).contiguous()


def make_selective_scan_2d(ext):
    class _Scan2dCpp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias, delta_softplus):
            ct = torch.float64 if u.dtype == torch.float64 else torch.float32
            args = [_prep(t, ct) for t in (u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias)]
            need = any(ctx.needs_input_grad)
            save = need and 2 * u.numel() * A.shape[-1] * args[0].element_size() <= SAVE_BUDGET_BYTES
            y, states = ext.fwd(*args, bool(delta_softplus), save)
            ctx.delta_softplus = bool(delta_softplus)
            ctx.meta = [None if t is None else t.dtype
                        for t in (u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias)]
            if need:
                ctx.save_for_backward(*args, states)
            return y.to(u.dtype)

        @staticmethod
        def backward(ctx, dy):
            *args, states = ctx.saved_tensors
            grads = ext.bwd(*args, ctx.delta_softplus, states, dy.to(args[0].dtype).contiguous())
            return (*(g.to(dtype) if need and dtype is not None else None
                      for g, dtype, need in zip(grads, ctx.meta, ctx.needs_input_grad)), None)

    def selective_scan_2d_cpp(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D=None, delta_bias=None,
                              delta_softplus=False):
        return _Scan2dCpp.apply(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias, delta_softplus)

    selective_scan_2d_cpp.__name__ = "selective_scan_2d_cpp"
    return selective_scan_2d_cpp
