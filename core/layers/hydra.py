"""Hydra: the quasiseparable bidirectional mixer, with the parameter names of goombalab/hydra.

in_proj -> [z, xBC, dt (2 H: forward heads, then backward heads)]; xBC -> non-causal depthwise conv (odd kernel,
"same" padding) + SiLU -> x, (B_f, C_f), (B_b, C_b). With SS the SSD matrix of one direction and `shift` the
one-step delay that makes it strictly triangular, the mixing matrix is

    QS(x) = shift(SS_f) x + flip(shift(SS_b(flip x))) + diag(fc_D(x) + D) x

so neither scan term has a diagonal (y_t reads x_s, s < t, forward and s > t, backward) and the diagonal is
data-dependent. Output: out_proj(RMSNorm(y) * silu(z)). Both directions share A, dt_bias and x and run as one
SSD call over a doubled batch. With `learnable_init_states`, both directions start from the learned state
`init_states` (nheads, headdim, d_state) instead of zero, as in hydra. The constructor takes hydra's keywords:
`activation` is "swish" / "silu" (hydra accepts no other), `use_mem_eff_path` and `layer_idx` are accepted (the
kernel is chosen by `backend`), `device` / `dtype` are PyTorch's factory keywords (D stays fp32, as in hydra).
Hydra is bidirectional, hence not recurrent: it carries no state.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..norms import RMSNormGated
from ..dtypes import state_dtype
from ..init import init_dt_bias, set_optim, to_factory
from ..ops import check_tensor
from ..ops.ssd import ssd
from .contract import reject_state
from ._validate import check_input_dtype, check_positive_ints
from .mamba2 import CPU_CHUNK, CUDA_CHUNK


def shifted_scans(x, dt_f, dt_b, A, B_f, C_f, B_b, C_b, dt_bias=None, dt_limit=(0.0, float("inf")),
                  chunk_size=CPU_CHUNK, backend="auto", initial_states=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two scan terms of Hydra, in the original order: (y_fw, y_bw), each (batch, L, H, P).

    y_fw[t] = SS_f(x)[t - 1] and y_bw[t] = SS_b-over-the-reversed-sequence[t + 1] (zero at the ends), so y_fw
    depends on x[:t] only and y_bw on x[t + 1:] only. dt_* are raw (softplus(dt + dt_bias) is applied).
    `initial_states` (H, P, N), if given, starts both directions (hydra's learnable initial state).
    """
    batch = x.shape[0]
    y = ssd(torch.cat([x, x.flip(1)]), torch.cat([dt_f, dt_b.flip(1)]), A, torch.cat([B_f, B_b.flip(1)]),
            torch.cat([C_f, C_b.flip(1)]), chunk_size, dt_bias=dt_bias, dt_softplus=True, dt_limit=dt_limit,
            initial_states=None if initial_states is None else initial_states.expand(2 * batch, -1, -1, -1),
            backend=backend)
    y = F.pad(y[:, :-1], (0, 0, 0, 0, 1, 0))                           # one-step shift, zero first row
    return y[:batch], y[batch:].flip(1)


class Hydra(nn.Module):
    """Quasiseparable bidirectional mixer (B, L, d_model) -> (B, L, d_model) (see the module docstring).

    chunk_size=None picks 64 on CPU and 256 on CUDA (results do not depend on it).
    """

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 7, conv_init: Optional[float] = None,
                 expand: int = 2, headdim: int = 64, ngroups: int = 1, dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit: Tuple[float, float] = (0.0, float("inf")),
                 learnable_init_states: bool = False, activation: str = "swish", bias: bool = False,
                 conv_bias: bool = True, chunk_size: Optional[int] = None, use_mem_eff_path: bool = False,
                 layer_idx: Optional[int] = None, device=None, dtype=None, backend: str = "auto"):
        super().__init__()
        check_positive_ints("Hydra", d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                            headdim=headdim, ngroups=ngroups)
        if activation not in ("swish", "silu"):
            raise ValueError(f"activation must be 'swish' or 'silu' (as in hydra), got {activation!r}")
        self.activation, self.use_mem_eff_path, self.layer_idx = activation, use_mem_eff_path, layer_idx
        self.learnable_init_states = learnable_init_states
        self.d_model, self.d_state, self.d_conv, self.headdim = d_model, d_state, d_conv, headdim
        self.d_inner = int(expand * d_model)
        if self.d_inner % headdim:
            raise ValueError(f"headdim={headdim} must divide d_inner={self.d_inner}")
        if d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (a centred, length-preserving conv), got {d_conv}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups={ngroups} must divide the {self.nheads} heads")
        self.ngroups, self.dt_limit, self.chunk_size, self.backend = ngroups, tuple(dt_limit), chunk_size, backend
        d_in_proj = 2 * self.d_inner + 2 * (2 * ngroups * d_state) + 2 * self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias)
        self.conv_dim = self.d_inner + 2 * (2 * ngroups * d_state)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv // 2,
                                bias=conv_bias)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        if learnable_init_states:
            self.init_states = set_optim(nn.Parameter(torch.zeros(self.nheads, headdim, d_state)), weight_decay=0.0)
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.zeros(self.nheads))               # A = -1 for every head
        self.D = nn.Parameter(torch.ones(self.nheads))
        for p in (self.dt_bias, self.A_log, self.D):
            set_optim(p, weight_decay=0.0)
        self.fc_D = nn.Linear(self.d_inner, self.nheads, bias=False)
        self.norm = RMSNormGated(self.d_inner, eps=1e-5, norm_before_gate=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        to_factory(self, device, dtype, keep_fp32=("D",))

    def forward(self, u: torch.Tensor, state=None, return_state: bool = False) -> torch.Tensor:
        """u (B, L, d_model) -> (B, L, d_model)."""
        reject_state(self, state, return_state)
        check_tensor("u", u, (None, None, self.d_model))
        check_input_dtype("Hydra", "u", u, self.in_proj.weight)
        batch, L, _ = u.shape
        z, xBC, dt = self.in_proj(u).split([self.d_inner, self.conv_dim, 2 * self.nheads], dim=-1)
        xc = xBC.transpose(1, 2)
        xBC = F.silu(self.conv1d(xc) if L else xc).transpose(1, 2)  # conv1d rejects L = 0: nothing to convolve
        GN = self.ngroups * self.d_state
        x, B_f, C_f, B_b, C_b = xBC.split([self.d_inner, GN, GN, GN, GN], dim=-1)
        groups = lambda M: M.unflatten(-1, (self.ngroups, self.d_state))
        xh = x.unflatten(-1, (self.nheads, self.headdim))
        f = state_dtype(u)
        chunk = self.chunk_size or (CUDA_CHUNK if u.is_cuda else CPU_CHUNK)
        y_fw, y_bw = shifted_scans(xh, dt[..., :self.nheads], dt[..., self.nheads:], -torch.exp(self.A_log.to(f)),
                                   groups(B_f), groups(C_f), groups(B_b), groups(C_b), self.dt_bias.to(f),
                                   self.dt_limit, chunk, self.backend,
                                   self.init_states.to(f) if self.learnable_init_states else None)
        diag = self.fc_D(x) + self.D.to(x.dtype)                          # (batch, L, H), data-dependent
        y = (y_fw + y_bw + xh * diag.unsqueeze(-1)).flatten(-2)
        return self.out_proj(self.norm(y, z))
