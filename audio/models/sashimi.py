"""SaShiMi (Goel, Gu, Donahue, Re, ICML 2022): a causal multi-scale U-Net of S4 blocks over 8-bit waveform codes.

Topology (state-spaces/s4 `models/sashimi/sashimi.py`, non-`unet` variant): embedding 256 -> d_model; down path of
pools only (pool p: p consecutive frames -> one, width x expand); center stage of n_layers (S4 -> FF) residual pairs;
each up stage = up-pool (one coarse frame -> p fine frames, shifted right by one coarse step so no output sees its
own or later inputs) + U-Net skip from the matching down activation + n_layers (S4 -> FF) pairs with one residual
around the stack; final LayerNorm and a Linear head to 256 logits. Residual blocks are pre-LayerNorm.

`forward` (training) convolves with the S4 kernels; `initial_state` / `step` run the same network one sample at a
time (generation): down pools buffer their inputs and fire every p-th step, up pools emit their buffered outputs
one per step, so most steps only touch the outer stage. S4 steps with the dense DPLR recurrence (exact), S4D with
its diagonal one. `stepper(batch)` runs the same recurrence in place with the per-sample overhead taken out
(`stepper.py`); `generate` uses it.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ssmkit.core.layers import S4, S4D

from .recurrence import fused_matrix, ssm_step
from .stepper import SaShiMiStepper

PRESETS = {
    # the paper's SC09 model: 8 layers per stage, Hurwitz DPLR S4 with n_ssm=1 (about 4.76M parameters)
    "sc09": dict(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, layer="s4", d_state=64, n_ssm=1),
    # a CPU preset: 2 layers per stage, narrower, same topology
    "small": dict(d_model=32, n_layers=2, pool=(4, 4), expand=2, ff=2, layer="s4", d_state=32, n_ssm=1),
}


class _Residual(nn.Module):
    """Pre-LayerNorm residual block x + dropout(layer(norm(x))) around an S4 layer or a feed-forward layer."""

    def __init__(self, d: int, layer: nn.Module, dropout: float):
        super().__init__()
        self.norm, self.layer = nn.LayerNorm(d), layer
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.is_ssm = isinstance(layer, (S4, S4D))

    def forward(self, x):
        return x + self.dropout(self.layer(self.norm(x)))

    def step(self, x, state, Mt):
        """x (B, d); `Mt` is the layer's fused recurrence (SSM blocks) or None; state the SSM's real state.
        In eval mode the norm and feed-forward are called functionally (no module-call overhead per sample)."""
        norm = self.norm
        h = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        if self.is_ssm:
            y, state = ssm_step(self.layer, Mt, h, state)
        elif self.training:
            y = self.layer(h)
        else:
            first, last = self.layer[0], self.layer[-1]
            y = F.linear(F.gelu(F.linear(h, first.weight, first.bias)), last.weight, last.bias)
        return x + (self.dropout(y) if self.training else y), state


class _Stack(nn.Module):
    """n_layers (S4 -> FF) residual pairs with one more residual around the whole stack."""

    def __init__(self, d: int, n_layers: int, make_ssm, ff: int, dropout: float):
        super().__init__()
        blocks = []
        for _ in range(n_layers):
            blocks.append(_Residual(d, make_ssm(d), dropout))
            if ff > 0:
                ffn = nn.Sequential(nn.Linear(d, ff * d), nn.GELU(),
                                    nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Linear(ff * d, d))
                blocks.append(_Residual(d, ffn, dropout))
        self.blocks = nn.ModuleList(blocks)
        self.d = d

    def forward(self, x):
        y = x
        for block in self.blocks:
            y = block(y)
        return x + y

    def initial_state(self, batch_size: int, d_state: int, like: torch.Tensor):
        return tuple(like.new_zeros(self.d, batch_size, d_state) if b.is_ssm else None for b in self.blocks)

    def fused(self):
        return tuple(fused_matrix(b.layer) if b.is_ssm else None for b in self.blocks)

    def step(self, x, state, fused):
        y, new = x, []
        for block, s, Mt in zip(self.blocks, state, fused):
            y, s = block.step(y, s, Mt)
            new.append(s)
        return x + y, tuple(new)


class DownPool(nn.Module):
    """(B, L, d) -> (B, L/p, expand d): p consecutive frames concatenated, then a Linear."""

    def __init__(self, d: int, expand: int, pool: int):
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(d * pool, d * expand)

    def forward(self, x):
        B, L, d = x.shape
        return self.linear(x.reshape(B, L // self.pool, self.pool * d))


class UpPool(nn.Module):
    """(B, L/p, d) -> (B, L, d / expand): a Linear to p fine frames per coarse frame, shifted right by one coarse
    frame (zeros first) so that fine step t only sees coarse frames built from inputs before the current block."""

    def __init__(self, d: int, expand: int, pool: int):
        super().__init__()
        self.pool, self.d_out = pool, d // expand
        self.linear = nn.Linear(d, self.d_out * pool)

    def forward(self, x):
        B, Lc, _ = x.shape
        y = F.pad(self.linear(x)[:, :-1], (0, 0, 1, 0))
        return y.reshape(B, Lc * self.pool, self.d_out)

    def expand_step(self, x):
        """One coarse frame (B, d) -> the p fine frames it produces, in order."""
        return tuple(self.linear(x).reshape(x.shape[0], self.pool, self.d_out).unbind(1))


class SaShiMiState(NamedTuple):
    """Recurrent state of the whole U-Net: down-pool input buffers, center stack, up-pool pending outputs, up stacks;
    `fused` holds each SSM layer's recurrence matrix, frozen from the parameters when the state was created."""
    down: Tuple[Tuple[torch.Tensor, ...], ...]
    center: tuple
    up_pending: Tuple[Tuple[torch.Tensor, ...], ...]
    up: tuple
    fused: tuple


class SaShiMi(nn.Module):
    """8-bit codes (B, L) -> logits (B, L, 256); output t depends on codes[:, :t+1] only (feed the codes shifted
    right by one, starting with 128, to predict each sample from its past).

    layer: 's4' (Hurwitz DPLR, HiPPO-LegS init, `n_ssm` shared copies) or 's4d' (diagonal, S4D-Lin).
    ssm_lr: the learning rate the SSM parameters (dt, A, B, P) ask the optimiser for through their `_optim` hint
    (no weight decay; None: the task's lr), as in state-spaces/s4.
    """

    def __init__(self, d_model: int = 64, n_layers: int = 8, pool: Sequence[int] = (4, 4), expand: int = 2,
                 ff: int = 2, layer: str = "s4", d_state: int = 64, n_ssm: Optional[int] = 1, dropout: float = 0.0,
                 dt_min: float = 1e-3, dt_max: float = 1e-1, ssm_lr: Optional[float] = 1e-3, n_classes: int = 256):
        super().__init__()
        if layer not in ("s4", "s4d"):
            raise ValueError(f"layer must be 's4' or 's4d', got {layer!r}")
        self.pool, self.n_classes, self.layer, self.d_state = tuple(pool), n_classes, layer, d_state

        def make_ssm(d):
            if layer == "s4":
                return S4(d, d_state=d_state, n_ssm=n_ssm, dt_min=dt_min, dt_max=dt_max, dropout=dropout, lr=ssm_lr)
            return S4D(d, d_state=d_state, dt_min=dt_min, dt_max=dt_max, dropout=dropout, lr=ssm_lr)

        self.embedding = nn.Embedding(n_classes, d_model)
        d, down = d_model, []
        for p in self.pool:
            down.append(DownPool(d, expand, p))
            d *= expand
        self.down = nn.ModuleList(down)
        self.center = _Stack(d, n_layers, make_ssm, ff, dropout)
        up_pools, up_stacks = [], []
        for p in reversed(self.pool):
            up_pools.append(UpPool(d, expand, p))
            d //= expand
            up_stacks.append(_Stack(d, n_layers, make_ssm, ff, dropout))
        self.up_pools, self.up = nn.ModuleList(up_pools), nn.ModuleList(up_stacks)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SaShiMi":
        """'sc09' (the paper's 4.76M-parameter model) or 'small' (CPU); keyword overrides replace preset values."""
        if name not in PRESETS:
            raise ValueError(f"unknown SaShiMi preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def _check_codes(self, name, codes, ndim):
        if codes.dtype not in (torch.int64, torch.int32, torch.uint8) or codes.ndim != ndim:
            raise ValueError(f"{name} must be integer codes of {ndim} dims, got dtype {codes.dtype} shape "
                             f"{tuple(codes.shape)}")

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_codes("codes", codes, 2)
        L = codes.shape[1]
        block = math.prod(self.pool)
        pad = (-L) % block  # causal: padding on the right changes no earlier output
        x = self.embedding(F.pad(codes.long(), (0, pad), value=self.n_classes // 2))
        skips = []
        for pool in self.down:
            skips.append(x)
            x = pool(x)
        x = self.center(x)
        for up_pool, stack in zip(self.up_pools, self.up):
            x = stack(up_pool(x) + skips.pop())
        return self.head(self.norm(x))[:, :L]

    def initial_state(self, batch_size: int) -> SaShiMiState:
        """State before the first sample: empty pool buffers, zero up-pool outputs (the causal shift), zero SSM states,
        and the SSM recurrences frozen from the current parameters (create a new state after changing them)."""
        ref = self.head.weight
        pending = tuple(tuple(ref.new_zeros(batch_size, u.d_out) for _ in range(u.pool)) for u in self.up_pools)
        return SaShiMiState(down=tuple(() for _ in self.down),
                            center=self.center.initial_state(batch_size, self.d_state, ref),
                            up_pending=pending,
                            up=tuple(s.initial_state(batch_size, self.d_state, ref) for s in self.up),
                            fused=(self.center.fused(), tuple(s.fused() for s in self.up)))

    def step(self, code_t: torch.Tensor, state: SaShiMiState) -> Tuple[torch.Tensor, SaShiMiState]:
        """One sample: code_t (B,) and the state -> (logits (B, 256) for the next sample, new state)."""
        self._check_codes("code_t", code_t, 1)
        x = self.embedding(code_t.long())
        skips, down = [], list(state.down)
        for i, pool in enumerate(self.down):
            skips.append(x)
            buffered = state.down[i] + (x,)
            if len(buffered) < pool.pool:
                down[i], x = buffered, None
                break
            down[i], x = (), pool.linear(torch.cat(buffered, dim=-1))
        center, (center_fused, up_fused) = state.center, state.fused
        if x is not None:  # every pool fired: the center stage runs this step
            x, center = self.center.step(x, center, center_fused)
        pending, up = list(state.up_pending), list(state.up)
        for k in range(len(self.down) - len(skips), len(self.up)):  # only the stages whose rate ticks now
            y, rest = pending[k][0], pending[k][1:]
            if not rest:
                rest = self.up_pools[k].expand_step(x)
            pending[k] = rest
            x, up[k] = self.up[k].step(y + skips.pop(), up[k], up_fused[k])
        return self.head(self.norm(x)), SaShiMiState(tuple(down), center, tuple(pending), tuple(up), state.fused)

    def stepper(self, batch_size: int) -> SaShiMiStepper:
        """The same recurrence as `initial_state` + `step`, stepped in place with preallocated buffers and no per-step
        checks (what `generate` uses): `stepper(code_t, out=None) -> logits_t`. A snapshot of the current weights."""
        return SaShiMiStepper(self, batch_size)
