"""The Triton selective scan wrapped in a torch.autograd.Function (backend callable, same contract as the C++ one).

    fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state)

Inputs fp32 / bf16 / fp16 are computed with an fp32 state (fp64 u: fp64 throughout, as `selective_scan_ref`); y comes
back in u's dtype, last_state in fp32 (fp64 for fp64 inputs), gradients in each input's dtype.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .scan_kernels import selective_scan_bwd_kernel, selective_scan_fwd_kernel

CHUNK = 16      # time steps per chunk (power of two); the associative scan runs inside a chunk
MAX_BLOCK_D = 16


def _acc(u):
    """As `selective_scan_ref`: float64 for float64 u, else float32."""
    return (torch.float64, tl.float64) if u.dtype == torch.float64 else (torch.float32, tl.float32)


def _bc_strides(X):
    if X.dim() == 2:
        return (0, 0, 0, 0), False, 1
    if X.dim() == 3:
        X = X.unsqueeze(1)
    return tuple(X.stride()), True, X.shape[1]


def _block_d(dim, dpgs):
    """Largest power of two <= MAX_BLOCK_D that divides every channels-per-group of an input-dependent B/C."""
    b = MAX_BLOCK_D
    while b > 1 and any(d % b for d in dpgs):
        b //= 2
    return b if dpgs else min(MAX_BLOCK_D, triton.next_power_of_2(dim))


def _prep(t, dtype=None):
    if t is None:
        return None
    t = t.detach()
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t.contiguous()


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state):
        acc_t, acc_tl = _acc(u)
        batch, dim, L = u.shape
        N = A.shape[1]
        u_, delta_, z_ = _prep(u), _prep(delta), _prep(z)
        A_, D_, bias_ = _prep(A, acc_t), _prep(D, acc_t), _prep(delta_bias, acc_t)
        h0 = _prep(initial_state, acc_t)
        B_, C_ = _prep(B), _prep(C)
        sB, B_var, GB = _bc_strides(B_)
        sC, C_var, GC = _bc_strides(C_)
        dpgs = [dim // g for g, var in ((GB, B_var), (GC, C_var)) if var]
        BLOCK_D = _block_d(dim, dpgs)
        BLOCK_N = max(triton.next_power_of_2(N), 2)
        nchunk = math.ceil(L / CHUNK)
        save = any(ctx.needs_input_grad)
        out = torch.empty_like(u_)
        last = torch.empty(batch, dim, N, device=u.device, dtype=acc_t)
        states = torch.empty(batch, dim, max(nchunk, 1), N, device=u.device, dtype=acc_t) if save else last
        dummy = last
        grid = (batch, triton.cdiv(dim, BLOCK_D))
        selective_scan_fwd_kernel[grid](
            u_, delta_, A_, B_, C_, D_ if D_ is not None else dummy, z_ if z_ is not None else dummy,
            bias_ if bias_ is not None else dummy, h0 if h0 is not None else dummy,
            out, last, states,
            dim, L, N, nchunk, dim // GB, dim // GC, *sB, *sC,
            B_VAR=B_var, C_VAR=C_var, HAS_D=D_ is not None, HAS_Z=z_ is not None, HAS_BIAS=bias_ is not None,
            HAS_H0=h0 is not None, SOFTPLUS=bool(delta_softplus), SAVE_STATES=save,
            BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, T=CHUNK, ACC=acc_tl,
        )
        if save:
            ctx.save_for_backward(u_, delta_, A_, B_, C_, D_, z_, bias_, states)
            ctx.cfg = (delta_softplus, BLOCK_D, BLOCK_N, nchunk, B_var, C_var, GB, GC, acc_t, acc_tl)
            ctx.meta = [None if t is None else (t.shape, t.dtype)
                        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
        return out, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, bias, states = ctx.saved_tensors
        softplus, BLOCK_D, BLOCK_N, nchunk, B_var, C_var, GB, GC, acc_t, acc_tl = ctx.cfg
        batch, dim, L = u.shape
        N = A.shape[1]
        dev = u.device
        dy = torch.zeros_like(u) if dy is None else dy.contiguous()
        dlast = None if dlast is None else dlast.to(acc_t).contiguous()
        nblk = triton.cdiv(dim, BLOCK_D)
        sB, _, _ = _bc_strides(B)
        sC, _, _ = _bc_strides(C)
        du = torch.empty(batch, dim, L, device=dev, dtype=acc_t)
        ddelta = torch.empty_like(du)
        dz = torch.empty_like(du) if z is not None else du
        dA = torch.empty(batch, dim, N, device=dev, dtype=acc_t)
        dh0 = torch.empty_like(dA)
        dD = torch.empty(batch, dim, device=dev, dtype=acc_t)
        dbias = torch.empty_like(dD)
        dB = torch.zeros(batch, nblk, N, L, device=dev, dtype=acc_t) if B_var else torch.empty_like(dA)
        dC = torch.zeros(batch, nblk, N, L, device=dev, dtype=acc_t) if C_var else torch.empty_like(dA)
        dummy = dA
        selective_scan_bwd_kernel[(batch, nblk)](
            u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
            bias if bias is not None else dummy, states, dy, dlast if dlast is not None else dummy,
            du, ddelta, dz, dA, dD, dbias, dh0, dB, dC,
            dim, L, N, nchunk, nblk, dim // GB, dim // GC, *sB, *sC,
            B_VAR=B_var, C_VAR=C_var, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
            HAS_DLAST=dlast is not None, SOFTPLUS=bool(softplus),
            BLOCK_D=BLOCK_D, BLOCK_N=BLOCK_N, T=CHUNK, ACC=acc_tl,
        )

        def bc_grad(buf, var, G):
            if not var:
                return buf.sum(0)
            return buf.view(batch, G, nblk // G, N, L).sum(2)

        grads = [du, ddelta, dA.sum(0), bc_grad(dB, B_var, GB), bc_grad(dC, C_var, GC), dD.sum(0),
                 dz if z is not None else None, dbias.sum(0), None, dh0]
        out = []
        for i, (g, meta) in enumerate(zip(grads, ctx.meta[:8] + [None] + ctx.meta[8:])):
            if g is None or meta is None or not ctx.needs_input_grad[i]:
                out.append(None)
            else:
                shape, dtype = meta
                out.append(g.reshape(shape).to(dtype))
        return tuple(out)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, initial_state=None):
    if A.is_complex():
        raise TypeError("the triton selective scan supports real A only, got a complex A")
    y, last_state = _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    return (y, last_state) if return_last_state else y
