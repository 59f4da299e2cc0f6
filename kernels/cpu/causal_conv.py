"""The C++ depthwise causal conv1d (`causal_conv.cpp`) as the cpp backend of `ssmkit.core.ops.causal_conv1d`,
differentiable w.r.t. x, weight, bias and initial_state (the backward recomputes the pre-activation from x).

Float and double with every tensor of one dtype (the dispatch declarations send other calls to the PyTorch path).
The final state is the last W - 1 inputs, sliced here exactly as the PyTorch path does (so autograd carries its
gradient), which keeps `forward(..., return_state=True)` bit-identical to the plain call.
"""
from __future__ import annotations

import torch


def make_causal_conv1d(ext):
    class _CausalConv1dCpp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, initial_state, silu):
            ctx.silu = silu
            ctx.save_for_backward(x, weight, bias, initial_state)
            detach = lambda t: None if t is None else t.detach()  # noqa: E731
            return ext.fwd(x.detach(), weight.detach(), detach(bias), detach(initial_state), silu)

        @staticmethod
        def backward(ctx, dy):
            x, weight, bias, h0 = ctx.saved_tensors
            need = ctx.needs_input_grad
            dx, dw, db, dh0 = ext.bwd(x, weight, bias, h0, dy, ctx.silu, h0 is not None and need[3])
            return (dx if need[0] else None, dw if need[1] else None, db if bias is not None and need[2] else None,
                    dh0 if h0 is not None and need[3] else None, None)

    def causal_conv1d_cpp(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
        y = _CausalConv1dCpp.apply(x, weight, bias, initial_state, activation in ("silu", "swish"))
        if not return_final_state:
            return y
        W = weight.shape[1]
        past = x.new_zeros(x.shape[0], x.shape[1], W - 1) if initial_state is None else initial_state
        xp = torch.cat([past, x], dim=-1)
        return y, xp[:, :, xp.shape[-1] - (W - 1):]

    causal_conv1d_cpp.__name__ = "causal_conv1d_cpp"
    return causal_conv1d_cpp
