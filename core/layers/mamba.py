"""The Mamba (Mamba-1) mixer, with mamba_ssm's constructor, parameter names, shapes and initialisation.

in_proj -> (x, z); x -> causal depthwise conv + SiLU -> x_proj -> (dt, B, C); dt -> dt_proj (bias added as
delta_bias, softplus inside the scan) -> selective scan with A = -exp(A_log), D skip, SiLU(z) gate -> out_proj.
The constructor takes a mamba_ssm `ssm_cfg` as is: `use_fast_path` and `layer_idx` are accepted (the kernel is
chosen by `backend`), `device` / `dtype` are PyTorch's factory keywords (A_log and D stay fp32, as in mamba_ssm).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..dtypes import state_dtype
from ..init import dt_rank as resolve_dt_rank
from ..init import init_dt_bias, init_dt_proj, s4d_real_A_log, set_optim, to_factory
from ..ops import check_tensor
from ..ops.conv import causal_conv1d
from ..ops.mixer_step import mamba_mixer_step
from ..ops.selective_scan import selective_scan
from ._validate import check_input_dtype, check_positive_ints
from .fused_weights import fused_weights, own_parameters


class MambaState(NamedTuple):
    """State of `Mamba`: conv window (B, d_inner, d_conv - 1) of past inputs (the module's dtype) and the SSM
    state ssm (B, d_inner, d_state) (fp32, fp64 for fp64)."""
    conv: torch.Tensor
    ssm: torch.Tensor


class Mamba(nn.Module):
    """Selective SSM mixer (B, L, d_model) -> (B, L, d_model); `step` decodes one token at a time."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, use_fast_path: bool = True, layer_idx: Optional[int] = None, device=None,
                 dtype=None, backend: str = "auto"):
        super().__init__()
        check_positive_ints("Mamba", d_model=d_model, d_state=d_state, d_conv=d_conv)
        if not expand > 0:
            raise ValueError(f"Mamba: expand must be > 0, got {expand!r}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = resolve_dt_rank(d_model, dt_rank)
        self.use_fast_path, self.layer_idx, self.backend = use_fast_path, layer_idx, backend
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        init_dt_proj(self.dt_proj.weight, self.dt_rank, dt_scale, dt_init)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(self.d_inner, dt_min, dt_max, dt_init_floor))
        self.dt_proj.bias._no_reinit = True  # mamba_ssm's flag: its _init_weights keeps this bias
        self.A_log = set_optim(nn.Parameter(s4d_real_A_log(self.d_inner, d_state=d_state)), weight_decay=0.0)
        self.D = set_optim(nn.Parameter(torch.ones(self.d_inner)), weight_decay=0.0)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        to_factory(self, device, dtype, keep_fp32=("A_log", "D"))

    def _ssm_params(self, x: torch.Tensor):
        """x (..., d_inner) -> dt (..., d_inner) before bias/softplus, B and C (..., d_state)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.linear(dt, self.dt_proj.weight), B, C

    def forward(self, x: torch.Tensor, state: Optional[MambaState] = None, return_state: bool = False):
        """x (B, L, d_model) -> y (B, L, d_model); with `return_state`, (y, MambaState) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype("Mamba", "x", x, self.in_proj.weight)
        xz = self.in_proj(x).transpose(1, 2)                           # (B, 2 d_inner, L)
        xs, z = xz.chunk(2, dim=1)
        conv_state, ssm_state = state if state is not None else (None, None)
        conv = causal_conv1d(xs, self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu",
                             initial_state=conv_state, return_final_state=return_state)
        xs, conv_state = conv if return_state else (conv, None)
        dt, B, C = self._ssm_params(xs.transpose(1, 2))
        f = state_dtype(x)
        A = -torch.exp(self.A_log.to(f))
        out = selective_scan(xs, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), self.D.to(f),
                             z, self.dt_proj.bias.to(f), True, return_state, ssm_state, backend=self.backend)
        y, ssm_state = out if return_state else (out, None)
        y = self.out_proj(y.transpose(1, 2))
        return (y, MambaState(conv_state, ssm_state)) if return_state else y

    def initial_state(self, batch_size: int) -> MambaState:
        """Zero conv and SSM states (fp32, fp64 for an fp64 module) on the module's device."""
        w = self.conv1d.weight
        return MambaState(w.new_zeros(batch_size, self.d_inner, self.d_conv - 1),
                          torch.zeros(batch_size, self.d_inner, self.d_state, device=w.device, dtype=state_dtype(w)))

    def step(self, x_t: torch.Tensor, state: MambaState) -> Tuple[torch.Tensor, MambaState]:
        """x_t (B, d_model) -> (y_t (B, d_model), new state); equals `forward` one position at a time. One call of
        `mamba_mixer_step` (fused on CPU for inference; the scan backends have no one-token kernel)."""
        check_tensor("x_t", x_t, (None, self.d_model))
        # dictionary reads (see fused_weights), written out: no generator frame on the per-token path
        m, p = self._modules, own_parameters(self)
        inp = fused_weights(m["in_proj"], nn.Linear, "in_proj")
        xp = fused_weights(m["x_proj"], nn.Linear, "x_proj")
        dtp = fused_weights(m["dt_proj"], nn.Linear, "dt_proj")
        out = fused_weights(m["out_proj"], nn.Linear, "out_proj")
        conv = own_parameters(m["conv1d"])  # forward reads its weights too (causal_conv1d), not its forward
        y, conv_state, ssm_state = mamba_mixer_step(
            x_t, state.conv, state.ssm, inp["weight"], inp["bias"], conv["weight"].squeeze(1), conv["bias"],
            xp["weight"], dtp["weight"], dtp["bias"], p["A_log"], p["D"], out["weight"], out["bias"],
            backend="torch" if self.backend == "torch" else "auto")
        return y, MambaState(conv_state, ssm_state)
