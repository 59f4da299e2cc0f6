"""TiM4Rec (Fan et al., Neurocomputing 2025; AlwaysFHao/TiM4Rec): Mamba-2 (SSD) layers whose step size is scaled by
a per-head time signal, so the gap between interactions changes both the decay exp(A Delta) and the input weight.

Per TiSSD layer, with time feature T (B, L, H):  s = MLP(T);  tau = phi(Conv2(phi(Conv1(T * s))))  (depthwise causal
convs of width d_conv, phi = Hardswish, as the released configs run);  Delta = softplus(dt * tau + dt_bias)  with dt
Mamba-2's input-dependent per-head step;  SSD with Delta;  gated RMSNorm;  out_proj.  The next layer's time feature
is T' = g * T + (1 - g) * tau,  g = sigmoid(Linear(T)).  Block: Emb -> Dropout -> LN -> N x [TiSSD -> Dropout ->
(+ input if N > 1) -> LN -> FFN(4x, Hardswish)] -> last real position -> CE over tied item embeddings.

Departures from the original, so that the model is causal and streams with `step`:
1. The time input is log1p(gap in days) instead of raw seconds, and padding / the first item get gap 0 (the
   original feeds raw seconds and, with right padding, a gap of about -1e9 at the first padded position).
   Negative gaps (out-of-order input) are clamped to 0.
2. No layer spans the sequence axis: the original's LayerNorm over the L positions, its Linear(L, L) MLP and the
   Linear(L, 1) inter-layer gate fix the length and mix future positions into the past; here the MLP and the gate
   act per position on the H heads' time features, and the inter-layer LayerNorm over L is dropped.
`step` equals re-encoding the whole history (tested); the state holds each layer's conv and SSM states, the time
convs' states and the last timestamp.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.blocks import RMSNormGated
from ssmkit.core.dtypes import state_dtype
from ssmkit.core.init import init_dt_bias, mamba2_A_log, set_optim
from ssmkit.core.layers.fused_weights import fused_weights, own_parameters
from ssmkit.core.ops import causal_conv1d, ssd, time_ssd_step

from .base import (Dropout, FeedForward, SequentialRecommender, dropout, finish_layer, gather_last, layer_norm,
                   padding_mask)

DAY = 86400.0


class TiSSDState(NamedTuple):
    conv: torch.Tensor    # (B, conv_dim, d_conv - 1)
    time1: torch.Tensor   # (B, H, d_conv - 1) inputs of the first time conv
    time2: torch.Tensor   # (B, H, d_conv - 1) inputs of the second time conv
    ssm: torch.Tensor     # (B, H, P, N)


class TiM4RecState(NamedTuple):
    layers: Tuple[TiSSDState, ...]
    last_time: torch.Tensor  # (B,) float64 timestamp of the previous interaction
    seen: torch.Tensor       # (B,) bool: an interaction has been read


def time_gaps(times: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, L) timestamps in seconds -> log1p(gap in days), 0 at the first item and on padding (B, L) in dtype."""
    gaps = torch.zeros_like(times)
    gaps[:, 1:] = (times[:, 1:] - times[:, :-1]).clamp(min=0)
    return torch.log1p(gaps / DAY).to(dtype) * mask


class TiSSD(nn.Module):
    """Time-aware SSD mixer: (x (B, L, D), T (B, L, H)) -> (y (B, L, D), T' (B, L, H)); `step` on one position."""

    def __init__(self, d_model: int, d_state: int = 32, d_conv: int = 4, expand: int = 2, headdim: int = 32,
                 chunk_size: int = 32, time_dropout: float = 0.0, dt_min: float = 1e-3, dt_max: float = 0.1):
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"headdim={headdim} must divide expand * hidden_size = {self.d_inner}")
        self.d_state, self.d_conv, self.headdim, self.chunk_size = d_state, d_conv, headdim, chunk_size
        self.nheads = self.d_inner // headdim
        self.conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1)
        H = self.nheads
        self.time_mlp = nn.Sequential(Dropout(time_dropout), nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))
        self.time_conv1 = nn.Conv1d(H, H, d_conv, groups=H, padding=d_conv - 1)
        self.time_conv2 = nn.Conv1d(H, H, d_conv, groups=H, padding=d_conv - 1)
        self.time_gate = nn.Linear(H, H)
        self.dt_bias = nn.Parameter(init_dt_bias(H, dt_min, dt_max, dt_init_floor=1e-4))
        self.A_log = nn.Parameter(mamba2_A_log(H))
        self.D = nn.Parameter(torch.ones(H))
        for p in (self.dt_bias, self.A_log, self.D):
            set_optim(p, weight_decay=0.0)
        self.norm = RMSNormGated(self.d_inner, eps=1e-5, norm_before_gate=False)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def _split(self, zxbcdt: torch.Tensor):
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _delta(self, dt: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        f = state_dtype(dt)
        return F.softplus(dt.to(f) * tau.to(f) + self.dt_bias.to(f))

    def forward(self, x: torch.Tensor, T: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch, L, _ = x.shape
        z, xBC, dt = self._split(self.in_proj(x))
        xBC = causal_conv1d(xBC.transpose(1, 2), self.conv1d.weight.squeeze(1), self.conv1d.bias, "silu")
        xs, B, C = xBC.transpose(1, 2).split([self.d_inner, self.d_state, self.d_state], dim=-1)
        u = (T * self.time_mlp(T)).transpose(1, 2)                                     # (B, H, L)
        u = F.hardswish(causal_conv1d(u, self.time_conv1.weight.squeeze(1), self.time_conv1.bias))
        tau = F.hardswish(causal_conv1d(u, self.time_conv2.weight.squeeze(1), self.time_conv2.bias)).transpose(1, 2)
        delta = self._delta(dt, tau)
        f = state_dtype(x)
        y = ssd(xs.reshape(batch, L, self.nheads, self.headdim), delta, -torch.exp(self.A_log.to(f)),
                B.unsqueeze(2), C.unsqueeze(2), self.chunk_size, D=self.D.to(f))
        y = self.out_proj(self.norm(y.reshape(batch, L, self.d_inner), z))
        g = torch.sigmoid(self.time_gate(T))
        return y, g * T + (1 - g) * tau

    def initial_state(self, batch_size: int) -> TiSSDState:
        """Zero states: the conv windows in the module's dtype, the SSM state fp32 (fp64 for an fp64 module)."""
        w = self.conv1d.weight
        return TiSSDState(w.new_zeros(batch_size, self.conv_dim, self.d_conv - 1),
                          w.new_zeros(batch_size, self.nheads, self.d_conv - 1),
                          w.new_zeros(batch_size, self.nheads, self.d_conv - 1),
                          torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=w.device,
                                      dtype=state_dtype(w)))

    def step(self, x_t: torch.Tensor, T_t: torch.Tensor, state: TiSSDState):
        """x_t (B, D), T_t (B, H) -> (y_t (B, D), T'_t (B, H), new state): `forward` on one position, as one
        `time_ssd_step` call (fused on CPU for inference)."""
        mlp_in = dropout(self.time_mlp[0], T_t)
        # weights read from the module dicts (fused_weights): an attribute lookup costs a microsecond, a step ~20
        # (written out: no generator frame on the per-token path)
        m, p = self._modules, own_parameters(self)
        inp = fused_weights(m["in_proj"], nn.Linear, "in_proj")
        gate = fused_weights(m["time_gate"], nn.Linear, "time_gate")
        out = fused_weights(m["out_proj"], nn.Linear, "out_proj")
        norm = fused_weights(m["norm"], RMSNormGated, "norm")
        # the convolutions: forward reads their weights too (causal_conv1d), not their forward
        conv, tc1, tc2 = own_parameters(m["conv1d"]), own_parameters(m["time_conv1"]), own_parameters(m["time_conv2"])
        mlp = m["time_mlp"]._modules
        mlp1, mlp2 = fused_weights(mlp["1"], nn.Linear, "time_mlp.1"), fused_weights(mlp["3"], nn.Linear, "time_mlp.3")
        y, T_t, *new = time_ssd_step(
            x_t, T_t, *state, norm_eps=m["norm"].eps, mlp_input=None if mlp_in is T_t else mlp_in,
            in_proj_weight=inp["weight"], conv_weight=conv["weight"].squeeze(1), conv_bias=conv["bias"],
            mlp1_weight=mlp1["weight"], mlp1_bias=mlp1["bias"], mlp2_weight=mlp2["weight"], mlp2_bias=mlp2["bias"],
            time_conv1_weight=tc1["weight"].squeeze(1), time_conv1_bias=tc1["bias"],
            time_conv2_weight=tc2["weight"].squeeze(1), time_conv2_bias=tc2["bias"], gate_weight=gate["weight"],
            gate_bias=gate["bias"], dt_bias=p["dt_bias"], A_log=p["A_log"], D=p["D"], norm_weight=norm["weight"],
            out_proj_weight=out["weight"])
        return y, T_t, TiSSDState(*new)


class TiM4RecLayer(nn.Module):
    """TiSSD -> Dropout -> (+ residual) -> LN -> FFN(Hardswish)."""

    def __init__(self, d_model: int, dropout: float, residual: bool, **tissd):
        super().__init__()
        self.residual = residual
        self.tissd = TiSSD(d_model, **tissd)
        self.dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout, activation="hardswish")

    _finish = finish_layer

    def forward(self, x, T):
        y, T = self.tissd(x, T)
        return self._finish(y, x), T

    def step(self, x_t, T_t, state):
        y, T_t, state = self.tissd.step(x_t, T_t, state)
        return self._finish(y, x_t), T_t, state


class TiM4Rec(SequentialRecommender):
    """Time-aware SSD recommender (see the module docstring); `step` equals re-encoding the whole history.

    Without timestamps (times=None) every gap is 0, i.e. a time-unaware SSD recommender.
    """

    streamable = True
    # config4beauty_64d, config4movie_64d, config4movie_256d (d_state 64, head_dim 128)
    PRESETS = {"beauty_64d": {"dropout": 0.4, "time_dropout": 0.0},
               "movie_64d": {"dropout": 0.2, "time_dropout": 0.2},
               "movie_256d": {"hidden_size": 256, "d_state": 64, "headdim": 128, "dropout": 0.2, "time_dropout": 0.2}}

    def __init__(self, n_items: int = 0, hidden_size: int = 64, n_layers: int = 2, d_state: int = 32,
                 d_conv: int = 4, expand: int = 2, headdim: int = 32, chunk_size: int = 32, dropout: float = 0.2,
                 time_dropout: float = 0.0):
        super().__init__(n_items, hidden_size)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers, self.d_state, self.d_conv, self.expand, self.headdim = n_layers, d_state, d_conv, expand, headdim
        self.chunk_size, self.dropout, self.time_dropout = chunk_size, dropout, time_dropout
        self.emb_dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.layers = nn.ModuleList(
            TiM4RecLayer(hidden_size, dropout, n_layers > 1, d_state=d_state, d_conv=d_conv, expand=expand,
                         headdim=headdim, chunk_size=chunk_size, time_dropout=time_dropout)
            for _ in range(n_layers))
        self.nheads = self.layers[0].tissd.nheads
        self.init_weights()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        mask = padding_mask(items)
        if times is None:
            times = torch.zeros(items.shape, dtype=torch.float64, device=items.device)
        x = self.LayerNorm(self.emb_dropout(self.item_embedding(items)))
        T = time_gaps(times.to(items.device), mask, x.dtype).unsqueeze(-1).expand(-1, -1, self.nheads)
        for layer in self.layers[:-1]:
            x, T = layer(x, T)
        last = self.layers[-1]  # after its mixer everything is position-wise: finish the read-out position only
        y, _ = last.tissd(x, T)
        return last._finish(gather_last(y, lengths), gather_last(x, lengths))

    def initial_state(self, batch_size: int) -> TiM4RecState:
        device = self.item_embedding.weight.device
        return TiM4RecState(tuple(layer.tissd.initial_state(batch_size) for layer in self.layers),
                            torch.zeros(batch_size, dtype=torch.float64, device=device),
                            torch.zeros(batch_size, dtype=torch.bool, device=device))

    def step(self, item: torch.Tensor, state: TiM4RecState, time: Optional[torch.Tensor] = None):
        if time is None:
            time = torch.zeros(item.shape, dtype=torch.float64, device=item.device)
        elif time.dtype != torch.float64:
            time = time.to(torch.float64)
        gap = torch.where(state.seen, time - state.last_time, 0.0).clamp_(min=0)
        T = torch.log1p(gap.div_(DAY)).to(self.item_embedding.weight.dtype).unsqueeze(-1).expand(-1, self.nheads)
        x = layer_norm(self.LayerNorm, dropout(self.emb_dropout, F.embedding(item, self.item_embedding.weight, 0)))
        new = []
        for layer, s in zip(self.layers, state.layers):
            x, T, s = layer.step(x, T, s)
            new.append(s)
        return x, TiM4RecState(tuple(new), time, torch.ones_like(state.seen))
