"""The Triton SSD chunk scan (`ssd_kernels`) as a backend callable with the argument order of the core's `ssd`:

    ssd_triton(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
               dt_softplus=False, dt_limit=(0.0, inf), return_final_states=False, backward_impl=None)

The forward runs the Triton kernels: inputs fp32 / bf16 / fp16 with an fp32 state (fp64 throughout for fp64 x);
y comes back in x's dtype, the final states in fp32 (fp64). The backward is not a Triton kernel: it re-runs
`backward_impl` (a differentiable PyTorch implementation with the same signature, the core's chunked form) under
autograd and differentiates that, so gradients are those of the PyTorch path, each in its input's dtype.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ssd_kernels import (ssd_chunk_cumsum_kernel, ssd_chunk_scan_kernel, ssd_chunk_state_kernel,
                          ssd_state_passing_kernel)

NO_LIMIT = (0.0, math.inf)
MIN_BLOCK = 16   # tl.dot needs every dimension >= 16
MAX_BLOCK = 64


def _block(n):
    return max(MIN_BLOCK, min(MAX_BLOCK, triton.next_power_of_2(n)))


def _forward(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, seq_idx, dt_softplus, dt_limit):
    """Run the four kernels; returns y (x's dtype) and the final states (batch, H, P, N) in the state dtype."""
    acc_t, acc_tl = (torch.float64, tl.float64) if x.dtype == torch.float64 else (torch.float32, tl.float32)
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Q = min(chunk_size, L)
    NC = triton.cdiv(L, Q)
    dev = x.device
    A_ = A.to(acc_t).contiguous()
    bias = dt_bias.to(acc_t).contiguous() if dt_bias is not None else A_
    limit = torch.tensor(dt_limit, dtype=acc_t, device=dev)
    dt_out = torch.empty(batch, H, NC, Q, dtype=acc_t, device=dev)
    cs = torch.empty_like(dt_out)
    BLOCK_Q = triton.next_power_of_2(Q)
    BLOCK_H = max(1, min(triton.next_power_of_2(H), 4096 // BLOCK_Q))
    ssd_chunk_cumsum_kernel[(batch, NC, triton.cdiv(H, BLOCK_H))](
        dt, A_, bias, limit, dt_out, cs, L, H, Q, NC, *dt.stride(),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus), HAS_LIMIT=tuple(dt_limit) != NO_LIMIT,
        BLOCK_Q=BLOCK_Q, BLOCK_H=BLOCK_H, ACC=acc_tl)

    seq = seq_idx if seq_idx is not None else cs
    s_seq = seq_idx.stride() if seq_idx is not None else (0, 0)
    states = torch.empty(batch, NC, H, P, N, dtype=acc_t, device=dev)
    BLOCK_P, BLOCK_N, BLOCK_K = _block(P), _block(N), _block(Q)
    ssd_chunk_state_kernel[(triton.cdiv(P, BLOCK_P) * triton.cdiv(N, BLOCK_N), batch * NC, H)](
        x, B, dt_out, cs, seq, states, L, H, P, N, Q, NC, H // G, *x.stride(), *B.stride(), *s_seq,
        HAS_SEQ=seq_idx is not None, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, ACC=acc_tl)

    final = torch.empty(batch, H, P, N, dtype=acc_t, device=dev)
    h0 = initial_states.to(acc_t).contiguous() if initial_states is not None else final
    BLOCK = min(1024, triton.next_power_of_2(P * N))
    ssd_state_passing_kernel[(triton.cdiv(P * N, BLOCK), batch, H)](
        states, cs, h0, seq, final, L, H, P * N, Q, NC, *s_seq,
        HAS_H0=initial_states is not None, HAS_SEQ=seq_idx is not None, BLOCK=BLOCK, ACC=acc_tl)

    y = torch.empty_like(x)
    D_ = D.to(acc_t).contiguous() if D is not None else A_
    z_ = z if z is not None else x
    BLOCK_M = _block(Q)
    ssd_chunk_scan_kernel[(triton.cdiv(Q, BLOCK_M) * triton.cdiv(P, BLOCK_P), batch * NC, H)](
        x, z_, B, C, dt_out, cs, seq, states, D_, y, L, H, P, N, Q, NC, H // G,
        *x.stride(), *z_.stride(), *B.stride(), *C.stride(), *y.stride(), *s_seq,
        HAS_SEQ=seq_idx is not None, HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2,
        HAS_Z=z is not None, BLOCK_M=BLOCK_M, BLOCK_K=BLOCK_M, BLOCK_P=BLOCK_P, BLOCK_N=BLOCK_N, ACC=acc_tl)
    return y, final


class _SSDTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, dt_softplus, dt_limit,
                backward_impl):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx)
        ctx.cfg = (chunk_size, dt_softplus, dt_limit, backward_impl)
        return _forward(x.detach(), dt.detach(), A.detach(), B.detach(), C.detach(), chunk_size,
                        *(t.detach() if t is not None else None for t in (D, z, dt_bias, initial_states)),
                        seq_idx, dt_softplus, dt_limit)

    @staticmethod
    def backward(ctx, dy, dfinal):
        chunk_size, dt_softplus, dt_limit, backward_impl = ctx.cfg
        x, dt, A, B, C, D, z, dt_bias, h0, seq_idx = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(need) if t is not None else None
                  for t, need in zip((x, dt, A, B, C, D, z, dt_bias, h0), ctx.needs_input_grad)]
        with torch.enable_grad():
            xi, dti, Ai, Bi, Ci, Di, zi, biasi, h0i = inputs
            y, final = backward_impl(xi, dti, Ai, Bi, Ci, chunk_size, D=Di, z=zi, dt_bias=biasi, initial_states=h0i,
                                     seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=dt_limit,
                                     return_final_states=True)
        pairs = [(o, g) for o, g in ((y, dy), (final, dfinal)) if g is not None]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        out = [None] * 14
        if pairs and wanted:
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
            out[:9] = [next(grads) if t is not None and t.requires_grad else None for t in inputs]
        return tuple(out)


def ssd_triton(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
               dt_softplus=False, dt_limit=NO_LIMIT, return_final_states=False, backward_impl=None):
    """SSD by the Triton kernels (see module docstring); arguments checked by the caller (core `ssd`)."""
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_states)
    if backward_impl is None and torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        raise ValueError("the triton ssd differentiates by re-running a PyTorch implementation: pass backward_impl "
                         "(ssmkit.core.ops.ssd does) or call it under torch.no_grad()")
    y, final = _SSDTriton.apply(x, dt, A, B, C, D, z, dt_bias, initial_states, seq_idx, chunk_size, dt_softplus,
                                tuple(dt_limit), backward_impl)
    return (y, final) if return_final_states else y


ssd_triton.takes_backward_impl = True
