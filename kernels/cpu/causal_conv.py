"""The C++ depthwise causal conv1d (`causal_conv.cpp`) as the cpp backend of `ssmkit.core.ops.causal_conv1d`,
differentiable w.r.t. x, weight and bias (the backward recomputes the pre-activation from x).

Float and double with every tensor of one dtype, bias and activation only (no initial / final state): the
dispatch declarations send other calls to the PyTorch path.
"""
from __future__ import annotations

import torch


def make_causal_conv1d(ext):
    class _CausalConv1dCpp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, silu):
            ctx.silu = silu
            ctx.save_for_backward(x, weight, bias)
            return ext.fwd(x.detach(), weight.detach(), None if bias is None else bias.detach(), silu)

        @staticmethod
        def backward(ctx, dy):
            x, weight, bias = ctx.saved_tensors
            dx, dw, db = ext.bwd(x, weight, bias, dy, ctx.silu)
            need = ctx.needs_input_grad
            return dx if need[0] else None, dw if need[1] else None, db if bias is not None and need[2] else None, None

    def causal_conv1d_cpp(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
        return _CausalConv1dCpp.apply(x, weight, bias, activation in ("silu", "swish"))

    causal_conv1d_cpp.__name__ = "causal_conv1d_cpp"
    return causal_conv1d_cpp
