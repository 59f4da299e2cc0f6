"""Both selective scans of Vim's bimamba-v2 mixer in one op, in the layouts its linear layers produce (inference).

    y_t = ((C_t . h_t + D_f u_t) + (C'_t . g_t + D_b v_t)) * silu(z_t) * scale
    h_t = exp(dt_t A_f) h_{t-1} + dt_t u_t B_t      (t = 0 .. L-1)
    g_t = exp(et_t A_b) g_{t+1} + et_t v_t B'_t     (t = L-1 .. 0: the backward direction, read in time order)

dt = softplus(dt_raw + bias_f) and et = softplus(et_raw + bias_b) with `delta_softplus`. Layouts:
u, v (batch, dim, L) (each direction's conv output in time order); dt_raw, et_raw (batch, L, dim) (dt_proj outputs);
bc_f, bc_b (batch, L, dt_rank + 2N) (x_proj outputs: dt rank, then B, then C); A_f, A_b (dim, N);
D_f, D_b, bias_f, bias_b (dim,); z (batch, L, dim). y is (batch, L, dim), ready for out_proj.

The PyTorch path is two `selective_scan` calls (any backend) with the backward one's inputs and output flipped;
the "cpp" backend (`kernels/cpu/bimamba_scan.cpp`) walks both directions over the same memory, with no flip,
transpose or copy.
No autograd: it serves inference (training runs the mixer's two scans, which have their backward).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from ._dispatch import select
from .selective_scan import selective_scan, selective_scan_ref


def _two_scans(scan, u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank,
               delta_softplus, scale):
    N = A_f.shape[1]

    def direction(u, dt, bc, A, D, bias, backward):
        B, C = bc[..., dt_rank:dt_rank + N], bc[..., dt_rank + N:]
        args = [u, dt.transpose(1, 2), B.transpose(1, 2), C.transpose(1, 2)]
        if backward:
            args = [a.flip(-1) for a in args]
        y = scan(args[0], args[1], A, args[2], args[3], D, None, bias, delta_softplus)
        return y.flip(-1) if backward else y

    y = direction(u_f, dt_f, bc_f, A_f, D_f, bias_f, False) + direction(u_b, dt_b, bc_b, A_b, D_b, bias_b, True)
    return (y * F.silu(z.transpose(1, 2).to(y.dtype)) * scale).transpose(1, 2).to(u_f.dtype)


def bimamba_scan_ref(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank,
                     delta_softplus=True, scale=0.5):
    """The definition: the sequential `selective_scan_ref` forward, and again on the flipped sequence (fp64-capable)."""
    _validate(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank)
    return _two_scans(selective_scan_ref, u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z,
                      dt_rank, delta_softplus, scale)


def _bimamba_torch(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank,
                   delta_softplus=True, scale=0.5):
    return _two_scans(selective_scan, u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z,
                      dt_rank, delta_softplus, scale)


def _validate(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank):
    s = check_tensor("u_f", u_f, ("batch", "dim", "L"))
    check_tensor("u_b", u_b, ("batch", "dim", "L"), s)
    check_tensor("A_f", A_f, ("dim", "N"), s)
    check_tensor("A_b", A_b, ("dim", "N"), s)
    for name, t in (("dt_f", dt_f), ("dt_b", dt_b), ("z", z)):
        check_tensor(name, t, ("batch", "L", "dim"), s)
    for name, t in (("bc_f", bc_f), ("bc_b", bc_b)):
        check_tensor(name, t, ("batch", "L", dt_rank + 2 * s["N"]), s)
    for name, t in (("D_f", D_f), ("D_b", D_b), ("bias_f", bias_f), ("bias_b", bias_b)):
        check_tensor(name, t, ("dim",), s)
    return check_same_device(u_f=u_f, u_b=u_b, dt_f=dt_f, dt_b=dt_b, bc_f=bc_f, bc_b=bc_b, A_f=A_f, A_b=A_b, D_f=D_f,
                             D_b=D_b, bias_f=bias_f, bias_b=bias_b, z=z)


def bimamba_scan(u_f: torch.Tensor, u_b: torch.Tensor, dt_f: torch.Tensor, dt_b: torch.Tensor, bc_f: torch.Tensor,
                 bc_b: torch.Tensor, A_f: torch.Tensor, A_b: torch.Tensor, D_f: torch.Tensor, D_b: torch.Tensor,
                 bias_f: torch.Tensor, bias_b: torch.Tensor, z: torch.Tensor, dt_rank: int,
                 delta_softplus: bool = True, scale: float = 0.5, backend: str = "auto") -> torch.Tensor:
    """Fused bidirectional scan (see the module docstring): y (batch, L, dim). backend: "auto", "torch", "cpp";
    "auto" takes the PyTorch path for calls that need gradients or are not fp32 / fp64."""
    device = _validate(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank)
    kwargs = dict(u_f=u_f, u_b=u_b, dt_f=dt_f, dt_b=dt_b, bc_f=bc_f, bc_b=bc_b, A_f=A_f, A_b=A_b, D_f=D_f, D_b=D_b,
                  bias_f=bias_f, bias_b=bias_b, z=z, dt_rank=dt_rank, delta_softplus=delta_softplus, scale=scale)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in kwargs.values() if isinstance(t, torch.Tensor))
    reason = ("inputs require grad (the fused kernel has no backward)" if grad else
              None if u_f.dtype in (torch.float32, torch.float64) else f"u_f has dtype {u_f.dtype}")
    if reason is not None and backend == "cpp":
        raise ValueError(f"backend='cpp' bimamba_scan cannot take this call: {reason}; use backend='auto'")
    impl = _bimamba_torch if reason is not None else select("bimamba_scan", backend, device, _bimamba_torch)
    return impl(**kwargs)
