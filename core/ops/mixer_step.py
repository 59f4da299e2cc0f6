"""One-token steps of whole mixers in one call, for decoding and streaming: the layer's weights and its state in,
the output and the new state out.

`mamba_mixer_step`: the Mamba mixer (`core.layers.Mamba.step`)
    xs, z = in_proj(x);  u = silu(conv step(xs));  dt, B, C = x_proj(u);  delta = softplus(dt_proj(dt) + dt_bias)
    h = exp(-delta exp(A_log)) h + delta u B;  y = out_proj((C . h + D u) * silu(z))
`time_ssd_step`: TiM4Rec's time-aware SSD mixer (`recsys.models.tim4rec.TiSSD`), whose step size is scaled by a
per-head time signal T (B, H) (log1p of the gap between interactions in the first layer)
    z, xBC, dt = in_proj(x);  x, B, C = silu(conv step(xBC));  s = T * mlp2(silu(mlp1(T)))
    tau = hardswish(time conv2 step(hardswish(time conv1 step(s))));  delta = softplus(dt tau + dt_bias)
    h = exp(-delta exp(A_log)) h + delta x B (per head);  y = out_proj(rmsnorm((C . h + D x) * silu(z)) * norm_weight)
    T' = lerp(tau, T, sigmoid(gate(T)))  (the next layer's time feature)

Eager PyTorch spends 20-40 small ops on one token, each paying its dispatch cost, which is what streaming one user
costs; the "cpp" backend (`kernels/cpu/mixer_step.cpp`) does the whole step in one call. It serves inference: calls
that need gradients, or whose tensors are not all fp32 or all fp64, take the PyTorch path (`backend="auto"`).
States follow the dtype policy (fp32, fp64 for fp64 inputs); the new states are new tensors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..dtypes import state_dtype
from ._checks import check_same_device, check_tensor
from ._dispatch import Call, inference_kernel, select
from .conv import causal_conv1d_update
from .selective_scan import selective_state_update, selective_state_update_ref

_MAMBA_OPTIONAL = ("in_proj_bias", "conv_bias", "out_proj_bias")


def dispatch_fused(op: str, backend: str, kwargs: dict, main: str, optional, torch_impl, validate):
    """Call `op` with `kwargs` (main input `kwargs[main]`): its fused kernel tried as is when `inference_kernel` offers
    one (the kernel checks its inputs: at one token the Python checks would cost more than the step), else
    `validate(**kwargs)` (named errors) and `select`'s choice."""
    x = kwargs[main]
    given = frozenset([name for name in optional if kwargs[name] is not None]) if optional else frozenset()
    kernel = inference_kernel(op, backend, x, given, tuple(kwargs.values()) if torch.is_grad_enabled() else ())
    if kernel is not None:
        try:
            return kernel(**kwargs)
        except RuntimeError:
            pass  # a call the kernel does not take: the general path names what is wrong, or takes another path
    device = validate(**kwargs)
    return select(op, backend, device, torch_impl, Call(x.dtype, given, False, kwargs))(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Mamba


def _validate_mamba(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight,
                    dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias) -> torch.device:
    s = check_tensor("x", x, ("batch", "d_model"))
    check_tensor("conv_weight", conv_weight, ("d_inner", "W"), s)
    check_tensor("A_log", A_log, ("d_inner", "N"), s)
    check_tensor("dt_proj_weight", dt_proj_weight, ("d_inner", "dt_rank"), s)
    check_tensor("conv_state", conv_state, ("batch", "d_inner", s["W"] - 1), s)
    check_tensor("ssm_state", ssm_state, ("batch", "d_inner", "N"), s)
    check_tensor("in_proj_weight", in_proj_weight, (2 * s["d_inner"], "d_model"), s)
    check_tensor("x_proj_weight", x_proj_weight, (s["dt_rank"] + 2 * s["N"], "d_inner"), s)
    check_tensor("out_proj_weight", out_proj_weight, ("d_model", "d_inner"), s)
    for name, t, shape in (("in_proj_bias", in_proj_bias, (2 * s["d_inner"],)), ("conv_bias", conv_bias, ("d_inner",)),
                           ("dt_proj_bias", dt_proj_bias, ("d_inner",)), ("D", D, ("d_inner",)),
                           ("out_proj_bias", out_proj_bias, ("d_model",))):
        if t is not None or name in ("dt_proj_bias", "D"):
            check_tensor(name, t, shape, s)
    return check_same_device(x=x, conv_state=conv_state, ssm_state=ssm_state, in_proj_weight=in_proj_weight,
                             in_proj_bias=in_proj_bias, conv_weight=conv_weight, conv_bias=conv_bias,
                             x_proj_weight=x_proj_weight, dt_proj_weight=dt_proj_weight, dt_proj_bias=dt_proj_bias,
                             A_log=A_log, D=D, out_proj_weight=out_proj_weight, out_proj_bias=out_proj_bias)


def _mamba(update, x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight,
           dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias):
    N = A_log.shape[1]
    xs, z = F.linear(x, in_proj_weight, in_proj_bias).chunk(2, dim=-1)
    xs, conv_state = causal_conv1d_update(xs, conv_state, conv_weight, conv_bias, "silu")
    dt, B, C = F.linear(xs, x_proj_weight).split([dt_proj_weight.shape[1], N, N], dim=-1)
    f = state_dtype(x)
    y, ssm_state = update(ssm_state, xs, F.linear(dt, dt_proj_weight), -torch.exp(A_log.to(f)), B, C, D.to(f), z,
                          dt_proj_bias.to(f), dt_softplus=True)
    return F.linear(y, out_proj_weight, out_proj_bias), conv_state, ssm_state


def mamba_mixer_step_ref(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias,
                         x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias):
    """The definition: the mixer's ops one after the other, the state update by `selective_state_update_ref`."""
    _validate_mamba(x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight, conv_bias, x_proj_weight,
                    dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias)
    return _mamba(selective_state_update_ref, x, conv_state, ssm_state, in_proj_weight, in_proj_bias, conv_weight,
                  conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D, out_proj_weight, out_proj_bias)


def _mamba_torch(**kw):
    return _mamba(selective_state_update, **kw)


def mamba_mixer_step(x: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                     in_proj_weight: torch.Tensor, in_proj_bias: Optional[torch.Tensor], conv_weight: torch.Tensor,
                     conv_bias: Optional[torch.Tensor], x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor,
                     dt_proj_bias: torch.Tensor, A_log: torch.Tensor, D: torch.Tensor,
                     out_proj_weight: torch.Tensor, out_proj_bias: Optional[torch.Tensor],
                     backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token through a Mamba mixer: x (batch, d_model) -> (y (batch, d_model), conv_state, ssm_state).

    conv_state (batch, d_inner, W - 1) in x's dtype, ssm_state (batch, d_inner, N) fp32 (fp64 for fp64 x);
    weights as mamba_ssm's `Mamba` holds them (conv_weight (d_inner, W), the Conv1d's weight without its middle
    axis), biases may be None. backend: "auto", "torch" or "cpp".
    """
    # the SSM parameters in the state's dtype, as the definition takes them (mamba_ssm keeps A_log and D fp32 in a
    # low-precision mixer); anything else is left to the checks
    f = state_dtype(x) if isinstance(x, torch.Tensor) else None
    if isinstance(A_log, torch.Tensor) and A_log.dtype != f and f is not None and A_log.is_floating_point():
        A_log = A_log.to(f)
    if isinstance(D, torch.Tensor) and D.dtype != f and f is not None and D.is_floating_point():
        D = D.to(f)
    kw = dict(x=x, conv_state=conv_state, ssm_state=ssm_state, in_proj_weight=in_proj_weight,
              in_proj_bias=in_proj_bias, conv_weight=conv_weight, conv_bias=conv_bias, x_proj_weight=x_proj_weight,
              dt_proj_weight=dt_proj_weight, dt_proj_bias=dt_proj_bias, A_log=A_log, D=D,
              out_proj_weight=out_proj_weight, out_proj_bias=out_proj_bias)
    return dispatch_fused("mamba_mixer_step", backend, kw, "x", _MAMBA_OPTIONAL, _mamba_torch, _validate_mamba)


# ---------------------------------------------------------------------------------------------------------------
# TiSSD


def _validate_time_ssd(x, T, conv_state, time1_state, time2_state, ssm_state, w, mlp_input) -> torch.device:
    s = check_tensor("x", x, ("batch", "d_model"))
    check_tensor("ssm_state", ssm_state, ("batch", "H", "P", "N"), s)
    check_tensor("T", T, ("batch", "H"), s)
    if mlp_input is not None:
        check_tensor("mlp_input", mlp_input, ("batch", "H"), s)
    check_tensor("conv_weight", w["conv_weight"], (s["H"] * s["P"] + 2 * s["N"], "W"), s)
    conv_dim = s["H"] * s["P"] + 2 * s["N"]
    check_tensor("conv_state", conv_state, ("batch", conv_dim, s["W"] - 1), s)
    for name, t in (("time1_state", time1_state), ("time2_state", time2_state)):
        check_tensor(name, t, ("batch", "H", s["W"] - 1), s)
    check_tensor("in_proj_weight", w["in_proj_weight"], (s["H"] * s["P"] + conv_dim + s["H"], "d_model"), s)
    check_tensor("conv_bias", w["conv_bias"], (conv_dim,), s)
    for name in ("mlp1_weight", "mlp2_weight", "gate_weight"):
        check_tensor(name, w[name], ("H", "H"), s)
    for name in ("time_conv1_weight", "time_conv2_weight"):
        check_tensor(name, w[name], ("H", "W"), s)
    for name in ("mlp1_bias", "mlp2_bias", "time_conv1_bias", "time_conv2_bias", "gate_bias", "dt_bias", "A_log",
                 "D"):
        check_tensor(name, w[name], ("H",), s)
    check_tensor("norm_weight", w["norm_weight"], (s["H"] * s["P"],), s)
    check_tensor("out_proj_weight", w["out_proj_weight"], ("d_model", s["H"] * s["P"]), s)
    return check_same_device(x=x, T=T, conv_state=conv_state, time1_state=time1_state, time2_state=time2_state,
                             ssm_state=ssm_state, mlp_input=mlp_input, **w)


def _validate_time_ssd_kw(x, T, conv_state, time1_state, time2_state, ssm_state, norm_eps, mlp_input, **weights):
    return _validate_time_ssd(x, T, conv_state, time1_state, time2_state, ssm_state, weights, mlp_input)


def _time_conv(x: torch.Tensor, window: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """One position of a depthwise causal conv: x (B, C), window (B, C, W - 1) of past inputs -> (y, new window)."""
    full = torch.cat([window.to(x.dtype), x.unsqueeze(-1)], dim=-1)
    return (full * weight).sum(-1) + bias, full[:, :, 1:]


def _time_ssd(x, T, conv_state, time1_state, time2_state, ssm_state, in_proj_weight, conv_weight, conv_bias,
              mlp1_weight, mlp1_bias, mlp2_weight, mlp2_bias, time_conv1_weight, time_conv1_bias, time_conv2_weight,
              time_conv2_bias, gate_weight, gate_bias, dt_bias, A_log, D, norm_weight, norm_eps, out_proj_weight,
              mlp_input=None):
    """The step in tensor ops (the definition and the PyTorch path: one token, nothing to unroll)."""
    H, P, N = ssm_state.shape[1:]
    d_inner, f = H * P, state_dtype(x)
    z, xBC, dt = F.linear(x, in_proj_weight).split([d_inner, d_inner + 2 * N, H], dim=-1)
    xBC, conv_state = _time_conv(xBC, conv_state, conv_weight, conv_bias)
    xs, B, C = F.silu(xBC).split([d_inner, N, N], dim=-1)
    s = F.silu(F.linear(T if mlp_input is None else mlp_input, mlp1_weight, mlp1_bias))
    u, time1_state = _time_conv(T * F.linear(s, mlp2_weight, mlp2_bias), time1_state, time_conv1_weight,
                                time_conv1_bias)
    tau, time2_state = _time_conv(F.hardswish(u), time2_state, time_conv2_weight, time_conv2_bias)
    tau = F.hardswish(tau)
    delta = F.softplus(dt.to(f) * tau.to(f) + dt_bias.to(f))                              # (B, H)
    xh = xs.to(f).unflatten(-1, (H, P))                                                   # (B, H, P)
    decay = torch.exp(delta * -torch.exp(A_log.to(f)))
    ssm_state = torch.addcmul(decay[..., None, None] * ssm_state.to(f), (delta[..., None] * xh).unsqueeze(-1),
                              B.to(f)[:, None, None, :])
    y = torch.addcmul(torch.matmul(ssm_state, C.to(f)[:, None, :, None]).squeeze(-1), xh, D.to(f)[:, None])
    y = y.flatten(-2).to(x.dtype) * F.silu(z)
    y = F.linear(F.rms_norm(y, (d_inner,), norm_weight, norm_eps), out_proj_weight)
    g = torch.sigmoid(F.linear(T, gate_weight, gate_bias))
    return y, torch.lerp(tau, T, g), conv_state, time1_state, time2_state, ssm_state


_TIME_SSD_WEIGHTS = ("in_proj_weight", "conv_weight", "conv_bias", "mlp1_weight", "mlp1_bias", "mlp2_weight",
                     "mlp2_bias", "time_conv1_weight", "time_conv1_bias", "time_conv2_weight", "time_conv2_bias",
                     "gate_weight", "gate_bias", "dt_bias", "A_log", "D", "norm_weight", "out_proj_weight")


def time_ssd_step_ref(x, T, conv_state, time1_state, time2_state, ssm_state, *, norm_eps, mlp_input=None, **weights):
    """The definition (module docstring) in tensor ops, fp64-capable."""
    _validate_time_ssd(x, T, conv_state, time1_state, time2_state, ssm_state, _weights(weights), mlp_input)
    return _time_ssd(x, T, conv_state, time1_state, time2_state, ssm_state, norm_eps=norm_eps, mlp_input=mlp_input,
                     **weights)


def _weights(weights: dict) -> dict:
    missing = [n for n in _TIME_SSD_WEIGHTS if n not in weights]
    extra = sorted(set(weights) - set(_TIME_SSD_WEIGHTS))
    if missing or extra:
        raise TypeError(f"time_ssd_step takes the weights {list(_TIME_SSD_WEIGHTS)}; "
                        + (f"missing {missing}" if missing else f"unknown {extra}"))
    return weights


def time_ssd_step(x: torch.Tensor, T: torch.Tensor, conv_state: torch.Tensor, time1_state: torch.Tensor,
                  time2_state: torch.Tensor, ssm_state: torch.Tensor, *, norm_eps: float,
                  mlp_input: Optional[torch.Tensor] = None, backend: str = "auto", **weights):
    """One token through TiM4Rec's time-aware SSD mixer (module docstring):
    x (batch, d_model), T (batch, H) -> (y (batch, d_model), T' (batch, H), conv_state, time1_state, time2_state,
    ssm_state).

    States: conv_state (batch, d_inner + 2N, W - 1), time1_state / time2_state (batch, H, W - 1) (the time convs'
    past inputs), ssm_state (batch, H, P, N) (fp32, fp64 for fp64 x). `weights`: the keyword tensors named in
    `_TIME_SSD_WEIGHTS` (Linear weights (out, in), conv weights (channels, W), per-head vectors (H,)).
    `mlp_input` replaces T as the time MLP's input (a dropped-out T in training). backend: "auto", "torch", "cpp".
    """
    kw = dict(x=x, T=T, conv_state=conv_state, time1_state=time1_state, time2_state=time2_state, ssm_state=ssm_state,
              norm_eps=norm_eps, mlp_input=mlp_input, **_weights(weights))
    return dispatch_fused("time_ssd_step", backend, kw, "x", ("mlp_input",), _time_ssd, _validate_time_ssd_kw)
