"""The Mamba-2 mixer, with the parameter names, shapes and initialisation of `mamba_ssm.modules.mamba2.Mamba2`.

in_proj -> [z0, x0 (d_mlp each, a gated MLP when d_ssm < d_inner), z, xBC, dt]; xBC -> causal depthwise conv + SiLU
-> (x, B, C); SSD with scalar A = -exp(A_log) per head, dt = softplus(dt + dt_bias), D skip; gated RMSNorm
`norm(y, z)` (or y * silu(z) without rmsnorm) -> out_proj.
The constructor takes a mamba_ssm `ssm_cfg` as is: `use_mem_eff_path`, `layer_idx` and `sequence_parallel` are
accepted (the kernel is chosen by `backend`), `process_group` must be None (no tensor parallelism here), and
`device` / `dtype` are PyTorch's factory keywords (D stays fp32, as in mamba_ssm).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..norms import RMSNormGated
from ..dtypes import state_dtype
from ..init import init_dt_bias, mamba2_A_log, set_optim, to_factory
from ..ops import check_tensor
from ..ops.conv import causal_conv1d, causal_conv1d_update
from ..ops.ssd import ssd, ssd_state_update
from ._validate import check_input_dtype, check_positive_ints

CPU_CHUNK, CUDA_CHUNK = 64, 256  # fastest chunk sizes of the torch path on CPU / of mamba_ssm on CUDA


class Mamba2State(NamedTuple):
    """State of `Mamba2`: conv window (B, conv_dim, d_conv - 1) of past inputs (the module's dtype) and the SSM
    state ssm (B, nheads, headdim, d_state) (fp32, fp64 for fp64)."""
    conv: torch.Tensor
    ssm: torch.Tensor


class Mamba2(nn.Module):
    """Mamba-2 (SSD) mixer (B, L, d_model) -> (B, L, d_model); `step` decodes one token at a time.

    chunk_size=None picks 64 on CPU and 256 on CUDA (results do not depend on it).
    """

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, conv_init: Optional[float] = None,
                 expand: int = 2, headdim: int = 64, d_ssm: Optional[int] = None, ngroups: int = 1,
                 A_init_range: Tuple[float, float] = (1, 16), D_has_hdim: bool = False, rmsnorm: bool = True,
                 norm_before_gate: bool = False, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit: Tuple[float, float] = (0.0, float("inf")),
                 bias: bool = False, conv_bias: bool = True, chunk_size: Optional[int] = None,
                 use_mem_eff_path: bool = True, layer_idx: Optional[int] = None, process_group=None,
                 sequence_parallel: bool = True, device=None, dtype=None, backend: str = "auto"):
        super().__init__()
        check_positive_ints("Mamba2", d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                            headdim=headdim, ngroups=ngroups)
        if process_group is not None:
            raise ValueError("process_group: tensor-parallel Mamba2 is not supported here; pass process_group=None "
                             "(data parallelism comes from Lightning's strategies)")
        self.use_mem_eff_path, self.layer_idx, self.sequence_parallel = use_mem_eff_path, layer_idx, sequence_parallel
        self.d_model, self.d_state, self.d_conv, self.headdim = d_model, d_state, d_conv, headdim
        self.d_inner = int(expand * d_model)
        self.d_ssm = self.d_inner if d_ssm is None else d_ssm
        if self.d_ssm % headdim:
            raise ValueError(f"headdim={headdim} must divide d_ssm={self.d_ssm}")
        self.nheads = self.d_ssm // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide the {self.nheads} heads")
        self.ngroups, self.D_has_hdim, self.rmsnorm = ngroups, D_has_hdim, rmsnorm
        self.dt_limit, self.chunk_size, self.backend = tuple(dt_limit), chunk_size, backend
        self.d_mlp = self.d_inner - self.d_ssm
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias)
        self.conv_dim = self.d_ssm + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1,
                                bias=conv_bias)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        self.dt_bias = set_optim(nn.Parameter(init_dt_bias(self.nheads, dt_min, dt_max, dt_init_floor)), 0.0)
        self.A_log = set_optim(nn.Parameter(mamba2_A_log(self.nheads, A_init_range)), 0.0)
        self.D = set_optim(nn.Parameter(torch.ones(self.d_ssm if D_has_hdim else self.nheads)), 0.0)
        if rmsnorm:
            self.norm = RMSNormGated(self.d_ssm, eps=1e-5, norm_before_gate=norm_before_gate,
                                     group_size=self.d_ssm // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        to_factory(self, device, dtype, keep_fp32=("D",))

    def _split(self, zxbcdt):
        return zxbcdt.split([self.d_mlp, self.d_mlp, self.d_ssm, self.conv_dim, self.nheads], dim=-1)

    def _output(self, y, z, z0, x0):
        """Gate / gated norm, the optional MLP half, out_proj; y and z are (..., d_ssm)."""
        y = self.norm(y, z) if self.rmsnorm else y
        if self.d_mlp:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return self.out_proj(y)

    def _D(self, f):
        return self.D.to(f).view(self.nheads, self.headdim) if self.D_has_hdim else self.D.to(f)

    def forward(self, x: torch.Tensor, state: Optional[Mamba2State] = None, return_state: bool = False):
        """x (B, L, d_model) -> y (B, L, d_model); with `return_state`, (y, Mamba2State) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype("Mamba2", "x", x, self.in_proj.weight)
        batch, L, _ = x.shape
        z0, x0, z, xBC, dt = self._split(self.in_proj(x))
        conv_state, ssm_state = state if state is not None else (None, None)
        conv = causal_conv1d(xBC.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu",
                             initial_state=conv_state, return_final_state=return_state)
        xBC, conv_state = conv if return_state else (conv, None)
        xs, B, C = xBC.transpose(1, 2).split([self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state],
                                             dim=-1)
        f = state_dtype(x)
        chunk = self.chunk_size or (CUDA_CHUNK if x.is_cuda else CPU_CHUNK)
        heads = (batch, L, self.nheads, self.headdim)
        out = ssd(xs.reshape(heads), dt, -torch.exp(self.A_log.to(f)), B.unflatten(-1, (self.ngroups, -1)),
                  C.unflatten(-1, (self.ngroups, -1)), chunk, D=self._D(f),
                  z=None if self.rmsnorm else z.reshape(heads), dt_bias=self.dt_bias.to(f), dt_softplus=True,
                  dt_limit=self.dt_limit, initial_states=ssm_state, return_final_states=return_state,
                  backend=self.backend)
        y, ssm_state = out if return_state else (out, None)
        y = self._output(y.reshape(batch, L, self.d_ssm), z, z0, x0)
        return (y, Mamba2State(conv_state, ssm_state)) if return_state else y

    def initial_state(self, batch_size: int) -> Mamba2State:
        """Zero conv and SSM states (fp32, fp64 for an fp64 module) on the module's device."""
        w = self.conv1d.weight
        return Mamba2State(w.new_zeros(batch_size, self.conv_dim, self.d_conv - 1),
                           torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=w.device,
                                       dtype=state_dtype(w)))

    def step(self, x_t: torch.Tensor, state: Mamba2State) -> Tuple[torch.Tensor, Mamba2State]:
        """x_t (B, d_model) -> (y_t (B, d_model), new state); equals `forward` one position at a time."""
        check_tensor("x_t", x_t, (None, self.d_model))
        z0, x0, z, xBC, dt = self._split(self.in_proj(x_t))
        xBC, conv_state = causal_conv1d_update(xBC, state.conv, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                               "silu")
        xs, B, C = xBC.split([self.d_ssm, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        f = state_dtype(x_t)
        heads = lambda t: t.unflatten(-1, (self.nheads, self.headdim))
        y, ssm_state = ssd_state_update(state.ssm, heads(xs), dt, -torch.exp(self.A_log.to(f)),
                                        B.unflatten(-1, (self.ngroups, -1)), C.unflatten(-1, (self.ngroups, -1)),
                                        self._D(f), None if self.rmsnorm else heads(z), self.dt_bias.to(f), True,
                                        self.dt_limit)
        return self._output(y.flatten(-2), z, z0, x0), Mamba2State(conv_state, ssm_state)
