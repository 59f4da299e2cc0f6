"""The C++ fused bidirectional scan and conv (`bimamba_scan.cpp`) as the cpp backends of
`ssmkit.core.ops.bimamba_scan.bimamba_scan` and `bimamba_conv`.

Inference only: the core ops send calls that need gradients to their PyTorch paths. Float and double; others are
rejected by the core ops before they get here.
"""
from __future__ import annotations


def _as(t, dtype):
    return t if t.dtype == dtype else t.to(dtype)  # skips a call per tensor on the per-layer inference path


def make_bimamba_scan(ext):
    def bimamba_scan_cpp(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank,
                         delta_softplus=True, scale=0.5):
        f = u_f.dtype
        args = [_as(t, f) for t in (u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z)]
        return ext.fwd(*args, int(dt_rank), bool(delta_softplus), float(scale))

    bimamba_scan_cpp.__name__ = "bimamba_scan_cpp"
    return bimamba_scan_cpp


def make_bimamba_conv(ext):
    def bimamba_conv_cpp(x, w_f, b_f, w_b, b_b):
        f = x.dtype
        if b_f is None or b_b is None:
            zeros = x.new_zeros(x.shape[1])
            b_f, b_b = zeros if b_f is None else b_f, zeros if b_b is None else b_b
        u, v = ext.conv(x, _as(w_f, f), _as(b_f, f), _as(w_b, f), _as(b_b, f))
        return u, v

    bimamba_conv_cpp.__name__ = "bimamba_conv_cpp"
    return bimamba_conv_cpp
