"""The C++ fused bidirectional scan (`bimamba_scan.cpp`) as the cpp backend of `ssmkit.core.ops.bimamba_scan`.

Inference only: the core op sends calls that need gradients to its PyTorch path. Float and double; others are
rejected by the core op before they get here.
"""
from __future__ import annotations


def make_bimamba_scan(ext):
    def bimamba_scan_cpp(u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z, dt_rank,
                         delta_softplus=True, scale=0.5):
        f = u_f.dtype
        args = [t.to(f) for t in (u_f, u_b, dt_f, dt_b, bc_f, bc_b, A_f, A_b, D_f, D_b, bias_f, bias_b, z)]
        return ext.fwd(*args, int(dt_rank), bool(delta_softplus), float(scale))

    bimamba_scan_cpp.__name__ = "bimamba_scan_cpp"
    return bimamba_scan_cpp
