"""The scan ops as registered `torch.library` custom ops, so that graph capture sees each scan as one node.

TorchScript, `torch.export` and `torch.compile(fullgraph=True)` cannot follow the Python dispatch of the public
ops (`select` loads kernels, the C++ kernels are opaque to tracing). Models call these ops instead when they
are scripted or compiled (see `ssmkit.vision.models`):

    torch.ops.ssmkit.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)           -> y
    torch.ops.ssmkit.selective_scan_states(u, delta, A, B, delta_bias, delta_softplus)             -> h
    torch.ops.ssmkit.ssd_noncausal(x, dt, A, B, C, D, dt_bias, dt_softplus)                        -> y

Each runs the public op with `backend="auto"` (the fastest present backend) and has a fake (meta)
implementation that gives the output's shape and dtype, so export and compile keep it as one node. They are
inference ops (no autograd formula is registered): train with the eager modules.

Exporters without these ops (ONNX) replace them by `DECOMPOSITIONS`, plain tensor programs equal to the
public ops (`ExportedProgram.run_decompositions(DECOMPOSITIONS)`); the selective scans become the chunked
closed form of `scan_states_chunked`, one piece per 64 steps of the sequence length fixed at export time.
A scripted model saved with `torch.jit.save` needs this module imported (any `import ssmkit.vision` does)
before `torch.jit.load`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .scan_states import selective_scan_states
from .selective_scan import selective_scan
from .ssd_noncausal import ssd_noncausal

__all__ = ["DECOMPOSITIONS", "scan_states_chunked", "selective_scan_op", "selective_scan_states_op", "ssd_noncausal_op"]


def _state_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


@torch.library.custom_op("ssmkit::selective_scan", mutates_args=())
def selective_scan_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                      z: Optional[Tensor], delta_bias: Optional[Tensor], delta_softplus: bool) -> Tensor:
    """`selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)`: y (batch, dim, L) in u's dtype."""
    return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return torch.empty_like(u, memory_format=torch.contiguous_format)


@torch.library.custom_op("ssmkit::selective_scan_states", mutates_args=())
def selective_scan_states_op(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor],
                             delta_softplus: bool) -> Tensor:
    """`selective_scan_states(...)`: every hidden state h (batch, dim, L, N), fp32 (fp64 for fp64 u)."""
    return selective_scan_states(u, delta, A, B, delta_bias, delta_softplus)


@selective_scan_states_op.register_fake
def _(u, delta, A, B, delta_bias, delta_softplus):
    return u.new_empty((u.shape[0], u.shape[1], u.shape[2], A.shape[1]), dtype=_state_dtype(u))


@torch.library.custom_op("ssmkit::ssd_noncausal", mutates_args=())
def ssd_noncausal_op(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                     dt_bias: Optional[Tensor], dt_softplus: bool) -> Tensor:
    """`ssd_noncausal(x, dt, A, B, C, D, dt_bias, dt_softplus)`: y (batch, L, H, P) in x's dtype."""
    return ssd_noncausal(x, dt, A, B, C, D, dt_bias, dt_softplus)


@ssd_noncausal_op.register_fake
def _(x, dt, A, B, C, D, dt_bias, dt_softplus):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _per_step(M: Tensor, dim: int, f: torch.dtype) -> Tensor:
    """B or C as (dim, N) -> (1, dim, 1, N), (batch, N, L) / (batch, G, N, L) -> (batch, dim, L, N)."""
    if M.dim() == 2:
        return M.to(f)[None, :, None, :]
    M = M.unsqueeze(1) if M.dim() == 3 else M
    return M.to(f).repeat_interleave(dim // M.shape[1], dim=1).transpose(-1, -2)


def scan_states_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, delta_bias: Optional[Tensor] = None,
                        delta_softplus: bool = False, chunk_size: int = 64) -> Tensor:
    """All states h (batch, dim, L, N) of the selective scan without a step loop: inside a chunk of T steps,
    h_t = sum_{s<=t} exp(S_t - S_s) delta_s u_s B_s + exp(S_t) h_start with S the running sum of delta A
    (exponents <= 0, so it is stable); the chunks follow each other. Only tensor ops, so exporters that
    cannot keep the custom ops get a graph of L / chunk_size pieces instead of L steps."""
    f = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, L = u.shape
    delta = delta.to(f) if delta_bias is None else delta.to(f) + delta_bias.to(f)[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dA = delta.unsqueeze(-1) * A.to(f)[None, :, None, :]                        # (batch, dim, L, N)
    dBu = (delta * u.to(f)).unsqueeze(-1) * _per_step(B, dim, f)
    h = u.new_zeros((batch, dim, A.shape[1]), dtype=f)
    states = []
    for t0 in range(0, L, chunk_size):
        S = dA[:, :, t0:t0 + chunk_size].cumsum(2)                                # (batch, dim, T, N)
        T = S.shape[2]
        later = torch.ones(T, T, dtype=torch.bool, device=u.device).triu(1)       # s > t: no contribution
        seg = (S.unsqueeze(3) - S.unsqueeze(2)).masked_fill(later[:, :, None], float("-inf"))
        H = torch.einsum("bdtsn,bdsn->bdtn", seg.exp(), dBu[:, :, t0:t0 + chunk_size]) + S.exp() * h.unsqueeze(2)
        states.append(H)
        h = H[:, :, -1]
    return torch.cat(states, dim=2)


def _selective_scan_decomposition(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    h = scan_states_chunked(u, delta, A, B, delta_bias, delta_softplus)
    y = (h * _per_step(C, u.shape[1], h.dtype)).sum(-1)
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(y.dtype))
    return y.to(u.dtype)


def _states_decomposition(u, delta, A, B, delta_bias=None, delta_softplus=False):
    return scan_states_chunked(u, delta, A, B, delta_bias, delta_softplus)


def _ssd_noncausal_decomposition(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False):
    return ssd_noncausal(x, dt, A, B, C, D, dt_bias, dt_softplus, backend="torch")


# custom op -> a tensor program with the same result, for exporters that cannot keep the op (ONNX)
DECOMPOSITIONS = {
    torch.ops.ssmkit.selective_scan.default: _selective_scan_decomposition,
    torch.ops.ssmkit.selective_scan_states.default: _states_decomposition,
    torch.ops.ssmkit.ssd_noncausal.default: _ssd_noncausal_decomposition,
}
