"""mLSTM and sLSTM mixers in the xLSTM layout (NX-AI/xlstm `mLSTMLayer` / `sLSTMLayer`), with `step` for decoding.

mLSTM mixer: proj_down(((mLSTM(q, k, v) -> head norm) + skip * conv) * silu(z)), where the input is up-projected
to (x_m, z), x_m goes through a causal depthwise conv + SiLU to give q, k (v from x_m), and the gates read
[q, k, v]. sLSTM mixer: causal conv + SiLU feeds the i, f gates, z and o read the input; sLSTM cell; head norm.
The residual blocks around them (pre-norm, residual, the sLSTM feed-forward) are `ssmkit.core.blocks.mLSTMBlock`
and `sLSTMBlock`; with them, parameter names and shapes follow xLSTM, so its checkpoints load by name.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..init import to_factory
from ..ops import check_tensor
from ._validate import check_input_dtype, check_positive_ints
from ..ops.conv import causal_conv1d, causal_conv1d_update
from ..ops.xlstm import (mlstm_chunkwise, mlstm_parallel, mlstm_step, mlstm_zero_state, slstm, slstm_step,
                         slstm_zero_state)


class mLSTMState(NamedTuple):
    """State of `mLSTM`: conv window (B, inner, K-1) of past inputs (their dtype) and the matrix memory
    C (B, NH, DH, DH), n (B, NH, DH), m (B, NH) (fp32, fp64 for fp64)."""
    conv: torch.Tensor
    C: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


class sLSTMState(NamedTuple):
    """State of `sLSTM`: conv window (B, d_model, K-1) of past inputs (their dtype) and the cell state
    y, c, n, m, each (B, NH, DH) (fp32, fp64 for fp64)."""
    conv: torch.Tensor
    y: torch.Tensor
    c: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


def _round_up(x: float, multiple: int = 64) -> int:
    return int(math.ceil(x / multiple) * multiple)


def _small_init(w: torch.Tensor, dim: int):
    nn.init.normal_(w, std=math.sqrt(2 / (5 * dim)))


class LayerNorm(nn.Module):
    """LayerNorm without bias and with a residual weight (scale = 1 + weight), as in xLSTM."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), 1 + self.weight, None, self.eps)


class MultiHeadLayerNorm(LayerNorm):
    """Normalise each head separately: (..., NH, DH) -> (..., NH * DH)."""

    def forward(self, x):
        *lead, nh, dh = x.shape
        y = F.group_norm(x.reshape(-1, nh * dh), nh, 1 + self.weight, None, self.eps)
        return y.view(*lead, nh * dh)


class HeadwiseLinear(nn.Module):
    """Block-diagonal linear map: features split into `num_heads` blocks, each mapped separately."""

    def __init__(self, features: int, num_heads: int):
        super().__init__()
        if features % num_heads:
            raise ValueError(f"features ({features}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        block = features // num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, block, block))
        _small_init(self.weight, block)

    def forward(self, x):
        x = x.unflatten(-1, (self.num_heads, x.shape[-1] // self.num_heads))  # explicit sizes: L = 0 works
        return torch.einsum("...hd,hod->...ho", x, self.weight).flatten(-2)


class CausalConv1d(nn.Module):
    """Depthwise causal conv on (B, L, D) by the `causal_conv1d` op, with xLSTM's names (`conv.weight` (D, 1, K),
    `conv.bias` (D,)); the window of past inputs is (B, D, K-1) as the op takes it."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim)

    def forward(self, x, window=None, return_window=False):
        out = causal_conv1d(x.transpose(1, 2), self.conv.weight[:, 0], self.conv.bias, initial_state=window,
                            return_final_state=return_window)
        y, window = out if return_window else (out, None)
        return (y.transpose(1, 2), window) if return_window else y.transpose(1, 2)

    def step(self, x_t, window):
        """x_t (B, D), window (B, D, K-1) -> (y_t (B, D), new window)."""
        return causal_conv1d_update(x_t, window, self.conv.weight[:, 0], self.conv.bias)


class mLSTMCell(nn.Module):
    """Gates and output norm around the mLSTM op."""

    def __init__(self, inner: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.igate = nn.Linear(3 * inner, num_heads)
        self.fgate = nn.Linear(3 * inner, num_heads)
        self.outnorm = MultiHeadLayerNorm(inner)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, num_heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)

    def gates(self, q, k, v):
        qkv = torch.cat([q, k, v], dim=-1)
        return self.igate(qkv), self.fgate(qkv)


class mLSTM(nn.Module):
    """The mLSTM mixer of an xLSTM block (B, L, d_model) -> (B, L, d_model), without its pre-norm and residual.

    mode 'chunkwise' (default, O(L chunk_size)) or 'parallel' (O(L^2)); `step` runs the recurrent form.
    """

    def __init__(self, d_model: int, num_heads: int = 4, proj_factor: float = 2.0, conv1d_kernel_size: int = 4,
                 qkv_proj_blocksize: int = 4, bias: bool = False, mode: str = "chunkwise", chunk_size: int = 64,
                 num_blocks: int = 1, device=None, dtype=None):
        super().__init__()
        check_positive_ints("mLSTM", d_model=d_model, num_heads=num_heads, conv1d_kernel_size=conv1d_kernel_size,
                            qkv_proj_blocksize=qkv_proj_blocksize, chunk_size=chunk_size)
        if mode not in ("chunkwise", "parallel"):
            raise ValueError(f"mode must be 'chunkwise' or 'parallel', got {mode!r}")
        inner = _round_up(proj_factor * d_model)
        if inner % num_heads or inner % qkv_proj_blocksize:
            raise ValueError(f"inner size {inner} must be divisible by num_heads ({num_heads}) "
                             f"and qkv_proj_blocksize ({qkv_proj_blocksize})")
        self.d_model, self.mode, self.chunk_size = d_model, mode, chunk_size
        self.inner, self.num_heads = inner, num_heads
        self.proj_up = nn.Linear(d_model, 2 * inner, bias=bias)
        self.q_proj = HeadwiseLinear(inner, inner // qkv_proj_blocksize)
        self.k_proj = HeadwiseLinear(inner, inner // qkv_proj_blocksize)
        self.v_proj = HeadwiseLinear(inner, inner // qkv_proj_blocksize)
        self.conv1d = CausalConv1d(inner, conv1d_kernel_size)
        self.mlstm_cell = mLSTMCell(inner, num_heads)
        self.learnable_skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, d_model, bias=bias)
        _small_init(self.proj_up.weight, d_model)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            _small_init(proj.weight, d_model)
        nn.init.normal_(self.proj_down.weight, std=2 / num_blocks / math.sqrt(d_model))
        for lin in (self.proj_up, self.proj_down):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        to_factory(self, device, dtype)

    def _heads(self, t):  # (..., inner) -> (..., NH, DH)
        return t.unflatten(-1, (self.num_heads, t.shape[-1] // self.num_heads))

    def _project(self, x_m, x_conv):
        q, k, v = self.q_proj(x_conv), self.k_proj(x_conv), self.v_proj(x_m)
        i, f = self.mlstm_cell.gates(q, k, v)
        return q, k, v, i, f

    def _output(self, h, x_conv, z):
        h = self.mlstm_cell.outnorm(h) + self.learnable_skip * x_conv
        return self.proj_down(h * F.silu(z))

    def forward(self, x: torch.Tensor, state: Optional[mLSTMState] = None, return_state: bool = False):
        """x (B, L, d_model) -> y (B, L, d_model); with `return_state`, (y, mLSTMState) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype("mLSTM", "x", x, self.proj_up.weight)
        x_m, z = self.proj_up(x).split(self.inner, dim=-1)
        conv, window = self.conv1d(x_m, None if state is None else state.conv, True)
        x_conv = F.silu(conv)
        q, k, v, i, f = self._project(x_m, x_conv)
        to_op = lambda t: self._heads(t).transpose(1, 2)  # (B, S, inner) -> (B, NH, S, DH)
        args = (to_op(q), to_op(k), to_op(v), i.transpose(1, 2), f.transpose(1, 2))
        memory = None if state is None else (state.C, state.n, state.m)
        if self.mode == "parallel":
            h, (C, n, m) = mlstm_parallel(*args, initial_state=memory, return_final_state=True)
        else:
            h, (C, n, m) = mlstm_chunkwise(*args, chunk_size=self.chunk_size, initial_state=memory,
                                           return_final_state=True)
        y = self._output(h.transpose(1, 2), x_conv, z)
        return (y, mLSTMState(window, C, n, m)) if return_state else y

    def initial_state(self, batch_size: int) -> mLSTMState:
        """Empty state: zero conv window and memory (C, n, m) = (0, 0, 0)."""
        w = self.proj_up.weight
        dh = self.inner // self.num_heads
        C, n, m = mlstm_zero_state(batch_size, self.num_heads, dh, dh, torch.promote_types(w.dtype, torch.float32),
                                   w.device)
        window = torch.zeros(batch_size, self.inner, self.conv1d.kernel_size - 1, dtype=w.dtype, device=w.device)
        return mLSTMState(window, C, n, m)

    def step(self, x_t: torch.Tensor, state: mLSTMState) -> Tuple[torch.Tensor, mLSTMState]:
        """x_t (B, d_model) -> (y_t (B, d_model), new state); equals `forward` one position at a time."""
        check_tensor("x_t", x_t, (None, self.d_model))
        x_m, z = self.proj_up(x_t).split(self.inner, dim=-1)
        conv_out, window = self.conv1d.step(x_m, state.conv)
        x_conv = F.silu(conv_out)
        q, k, v, i, f = self._project(x_m, x_conv)
        h, (C, n, m) = mlstm_step(self._heads(q), self._heads(k), self._heads(v), i, f,
                                  (state.C, state.n, state.m))
        return self._output(h.to(x_t.dtype), x_conv, z), mLSTMState(window, C, n, m)


class sLSTMCell(nn.Module):
    """Recurrent weights (NH, DH, 4, DH) and biases (NH, 4, DH) of the four gates (i, f, z, o)."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        dh = d_model // num_heads
        self.recurrent_kernel = nn.Parameter(torch.zeros(num_heads, dh, 4, dh))
        bias = torch.zeros(num_heads, 4, dh)
        # Forget-gate bias: power-law spread over the head dimension (xLSTM 'powerlaw_blockdependent', block 0).
        bias[:, 1] = -(-5.0 + 12.0 * (torch.arange(dh) / max(dh - 1, 1)) ** 0.3)
        self.bias = nn.Parameter(bias)


class FeedForward(nn.Module):
    """GLU feed-forward: proj_down(gelu(gate) * up), with (gate, up) = proj_up(x)."""

    def __init__(self, d_model: int, proj_factor: float, num_blocks: int):
        super().__init__()
        self.hidden = _round_up(proj_factor * d_model)
        self.proj_up = nn.Linear(d_model, 2 * self.hidden, bias=False)
        self.proj_down = nn.Linear(self.hidden, d_model, bias=False)
        _small_init(self.proj_up.weight, d_model)
        nn.init.normal_(self.proj_down.weight, std=2 / num_blocks / math.sqrt(d_model))

    def forward(self, x):
        gate, up = self.proj_up(x).split(self.hidden, dim=-1)
        return self.proj_down(F.gelu(gate) * up)


class sLSTM(nn.Module):
    """The sLSTM mixer of an xLSTM block (B, L, d_model) -> (B, L, d_model), without pre-norm, residual and
    feed-forward: causal conv + SiLU feeds the i, f gates; z, o read the input directly; head-wise group norm."""

    def __init__(self, d_model: int, num_heads: int = 4, conv1d_kernel_size: int = 4, device=None, dtype=None):
        super().__init__()
        check_positive_ints("sLSTM", d_model=d_model, num_heads=num_heads, conv1d_kernel_size=conv1d_kernel_size)
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.d_model, self.num_heads = d_model, num_heads
        self.conv1d = CausalConv1d(d_model, conv1d_kernel_size)
        self.fgate = HeadwiseLinear(d_model, num_heads)
        self.igate = HeadwiseLinear(d_model, num_heads)
        self.zgate = HeadwiseLinear(d_model, num_heads)
        self.ogate = HeadwiseLinear(d_model, num_heads)
        self.slstm_cell = sLSTMCell(d_model, num_heads)
        self.group_norm = MultiHeadLayerNorm(d_model)
        to_factory(self, device, dtype)

    def preactivations(self, x, x_conv):
        wx = torch.stack([self.igate(x_conv), self.fgate(x_conv), self.zgate(x), self.ogate(x)], dim=-2)
        return wx.unflatten(-1, (self.num_heads, wx.shape[-1] // self.num_heads))  # (..., 4, NH, DH)

    def forward(self, x: torch.Tensor, state: Optional[sLSTMState] = None, return_state: bool = False):
        """x (B, L, d_model) -> y (B, L, d_model); with `return_state`, (y, sLSTMState) to continue."""
        check_tensor("x", x, (None, None, self.d_model))
        check_input_dtype("sLSTM", "x", x, self.conv1d.conv.weight)
        conv, window = self.conv1d(x, None if state is None else state.conv, True)
        wx = self.preactivations(x, F.silu(conv))
        cell = None if state is None else tuple(state[1:])
        y, cell = slstm(wx, self.slstm_cell.recurrent_kernel, self.slstm_cell.bias, cell, return_final_state=True)
        y = self.group_norm(y)
        return (y, sLSTMState(window, *cell)) if return_state else y

    def initial_state(self, batch_size: int) -> sLSTMState:
        """Empty state: zero conv window and cell state (y, c, n, m)."""
        w = self.slstm_cell.bias
        cell = slstm_zero_state(batch_size, self.num_heads, self.d_model // self.num_heads,
                                torch.promote_types(w.dtype, torch.float32), w.device)
        window = torch.zeros(batch_size, self.d_model, self.conv1d.kernel_size - 1, dtype=w.dtype, device=w.device)
        return sLSTMState(window, *cell)

    def step(self, x_t: torch.Tensor, state: sLSTMState) -> Tuple[torch.Tensor, sLSTMState]:
        """x_t (B, d_model) -> (y_t (B, d_model), new state); equals `forward` one position at a time."""
        check_tensor("x_t", x_t, (None, self.d_model))
        conv_out, window = self.conv1d.step(x_t, state.conv)
        wx = self.preactivations(x_t, F.silu(conv_out))
        y, cell = slstm_step(wx, self.slstm_cell.recurrent_kernel, self.slstm_cell.bias, tuple(state[1:]))
        return self.group_norm(y.to(x_t.dtype)), sLSTMState(window, *cell)
