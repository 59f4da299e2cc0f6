"""The C++ fused one-token steps (`mixer_step.cpp`) as the cpp backend of `ssmkit.core.ops.mamba_mixer_step`,
`time_ssd_step` and `postnorm_ffn`.

Inference only, float and double, every tensor of one dtype: the core ops send other calls (gradients needed,
mixed dtypes) to their PyTorch paths before they get here. The C++ side checks shapes again and makes its inputs
contiguous.
"""
from __future__ import annotations

_ACTIVATION_CODES = {"gelu": 0, "hardswish": 1, "relu": 2}


def make_mamba_mixer_step(ext):
    def mamba_mixer_step_cpp(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias,
                             x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias):
        return tuple(ext.mamba_step(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias,
                                    x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight,
                                    out_proj_bias))

    return mamba_mixer_step_cpp


def make_time_ssd_step(ext):
    def time_ssd_step_cpp(x, T, conv_state, time1_state, time2_state, ssm_state, in_proj_weight, conv_weight,
                          conv_bias, mlp1_weight, mlp1_bias, mlp2_weight, mlp2_bias, time_conv1_weight,
                          time_conv1_bias, time_conv2_weight, time_conv2_bias, gate_weight, gate_bias, dt_bias, A_log,
                          D, norm_weight, norm_eps, out_proj_weight, mlp_input=None):  # declared: no mlp_input
        return tuple(ext.time_ssd_step(x, T, conv_state, time1_state, time2_state, ssm_state, in_proj_weight,
                                       conv_weight, conv_bias, mlp1_weight, mlp1_bias, mlp2_weight, mlp2_bias,
                                       time_conv1_weight, time_conv1_bias, time_conv2_weight, time_conv2_bias,
                                       gate_weight, gate_bias, dt_bias, A_log, D, norm_weight, float(norm_eps),
                                       out_proj_weight))

    return time_ssd_step_cpp


def make_postnorm_ffn(ext):
    def postnorm_ffn_cpp(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, eps1, eps2,
                         activation):
        flat = y.dim() != 2
        if flat:
            shape = y.shape
            y, x = y.reshape(-1, shape[-1]), None if x is None else x.reshape(-1, shape[-1])
        out = ext.postnorm_ffn(y, x, norm1_weight, norm1_bias, w1, b1, w2, b2, norm2_weight, norm2_bias, float(eps1),
                               float(eps2), _ACTIVATION_CODES[activation])
        return out.view(shape) if flat else out

    return postnorm_ffn_cpp
