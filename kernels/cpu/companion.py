"""The C++ companion Krylov recurrences (`companion_krylov.cpp`) as the cpp backend of
`ssmkit.core.ops.companion_krylov` and `closed_loop_krylov`, differentiable w.r.t. a, b, k and v.

Float and double, computed in the inputs' dtype (the core op sends other dtypes, or mixed ones, to PyTorch). The
columns are returned as a (..., H, d, L) view of a (..., H, L, d) buffer, which the backward reuses.
"""
from __future__ import annotations

import torch


def _krylov_function(ext, closed: bool):
    class _Krylov(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b, k, v, L):
            H, d = a.shape
            lead = v.shape[:-2]
            a_ = a.detach().contiguous()
            b_ = b.detach().contiguous() if closed else a_
            k_ = k.detach().contiguous() if closed else a_
            X = ext.fwd(a_, b_, k_, v.detach().reshape(-1, H, d).contiguous(), L, closed)
            ctx.save_for_backward(a_, b_, k_, X)
            ctx.v_shape = v.shape
            return X.view(*lead, H, L, d).transpose(-1, -2)

        @staticmethod
        def backward(ctx, G):
            a_, b_, k_, X = ctx.saved_tensors
            G = G.transpose(-1, -2).reshape(X.shape).contiguous()
            dv, da, db, dk = ext.bwd(a_, b_, k_, X, G, closed)
            return da, db if closed else None, dk if closed else None, dv.view(ctx.v_shape), None

    return _Krylov


def make_companion_krylov(ext):
    fn = _krylov_function(ext, closed=False)

    def companion_krylov_cpp(a, v, L):
        return fn.apply(a, None, None, v, L)

    companion_krylov_cpp.__name__ = "companion_krylov_cpp"
    return companion_krylov_cpp


def make_closed_loop_krylov(ext):
    fn = _krylov_function(ext, closed=True)

    def closed_loop_krylov_cpp(a, b, k, v, L):
        return fn.apply(a, b, k, v, L)

    closed_loop_krylov_cpp.__name__ = "closed_loop_krylov_cpp"
    return closed_loop_krylov_cpp
