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

`bimamba_conv` makes u and v from the mixer's x (batch, dim, L) in one pass: u = silu(causal depthwise conv of x
with w_f, b_f), v = the backward branch's silu(causal conv of flip(x) with w_b, b_b), flipped back to time order
(the anti-causal conv of x with reversed taps). Its "cpp" backend returns both as (batch, dim, L) views of
channel-contiguous (batch, L, dim) memory, the layout x_proj and the fused scan read without a copy.
No autograd: both serve inference (training runs the mixer's two branches, which have their backward).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from ._dispatch import select
from .conv import causal_conv1d_ref
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
    return _fused("bimamba_scan", backend, device, _bimamba_torch, "u_f", kwargs)


def _fused(op, backend, device, torch_impl, main, kwargs):
    """Call `op` by `backend`; the PyTorch path takes calls that need gradients or are not fp32 / fp64."""
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in kwargs.values() if isinstance(t, torch.Tensor))
    dtype = kwargs[main].dtype
    reason = ("inputs require grad (the fused kernel has no backward)" if grad else
              None if dtype in (torch.float32, torch.float64) else f"{main} has dtype {dtype}")
    if reason is not None and backend == "cpp":
        raise ValueError(f"backend='cpp' {op} cannot take this call: {reason}; use backend='auto'")
    impl = torch_impl if reason is not None else select(op, backend, device, torch_impl)
    return impl(**kwargs)


def bimamba_conv_ref(x, w_f, b_f=None, w_b=None, b_b=None):
    """The definition: `causal_conv1d_ref` + SiLU of x, and of flip(x) flipped back (fp64-capable)."""
    _validate_conv(x, w_f, b_f, w_b, b_b)
    return causal_conv1d_ref(x, w_f, b_f, "silu"), causal_conv1d_ref(x.flip(-1), w_b, b_b, "silu").flip(-1)


def _conv_torch(x, w_f, b_f, w_b, b_b):
    W, groups = w_f.shape[1], x.shape[1]
    u = F.silu(F.conv1d(F.pad(x, (W - 1, 0)), w_f.unsqueeze(1), b_f, groups=groups))
    v = F.silu(F.conv1d(F.pad(x, (0, W - 1)), w_b.flip(-1).unsqueeze(1), b_b, groups=groups))
    return u, v


def _validate_conv(x, w_f, b_f, w_b, b_b):
    s = check_tensor("x", x, ("batch", "dim", "L"))
    for name, w in (("w_f", w_f), ("w_b", w_b)):
        check_tensor(name, w, ("dim", "W"), s)
    for name, b in (("b_f", b_f), ("b_b", b_b)):
        if b is not None:
            check_tensor(name, b, ("dim",), s)
    return check_same_device(x=x, w_f=w_f, b_f=b_f, w_b=w_b, b_b=b_b)


def bimamba_conv(x: torch.Tensor, w_f: torch.Tensor, b_f: Optional[torch.Tensor], w_b: torch.Tensor,
                 b_b: Optional[torch.Tensor], backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Both branches' depthwise conv + SiLU (see the module docstring): x (batch, dim, L), w_f, w_b (dim, W),
    b_f, b_b (dim,) or None -> (u, v), each (batch, dim, L). backend: "auto", "torch", "cpp"."""
    device = _validate_conv(x, w_f, b_f, w_b, b_b)
    return _fused("bimamba_conv", backend, device, _conv_torch, "x", dict(x=x, w_f=w_f, b_f=b_f, w_b=w_b, b_b=b_b))
