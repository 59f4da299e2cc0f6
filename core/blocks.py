"""Residual blocks and a block stack with embedding and head that any mixer can fill.

`Block`, `Backbone`, `SequenceModel`: names follow mamba_ssm (`backbone.embedding`, `backbone.layers.{i}.mixer`,
`.norm`, `backbone.norm_f`, `lm_head`) so its language-model checkpoints map onto `SequenceModel` key for key.
`xLSTMBlock` (`mLSTMBlock`, `sLSTMBlock`): xLSTM's norm-then-add block with its names (`xlstm_norm`, `xlstm`,
`ffn_norm`, `ffn`) around an mLSTM / sLSTM mixer, so xLSTM checkpoints load by name.
The norms themselves live in `ssmkit.core.norms` (re-exported here).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn

from .init import to_factory
from .layers.xlstm import FeedForward, LayerNorm, mLSTM, sLSTM
from .norms import RMSNorm, RMSNormGated

__all__ = ["Block", "Backbone", "SequenceModel", "RMSNorm", "RMSNormGated", "xLSTMBlock", "mLSTMBlock",
           "sLSTMBlock"]


class Block(nn.Module):
    """Pre-norm residual block in mamba_ssm's add-then-norm order.

    forward(hidden, residual) -> (mixer(norm(residual')), residual') with residual' = hidden + residual,
    so the last block's output plus residual goes through a final norm. `residual_in_fp32` keeps the running
    residual in fp32 under mixed precision. An optional `mlp` adds a second norm + MLP sub-block.
    """

    def __init__(self, dim: int, mixer: nn.Module, norm: Optional[nn.Module] = None, mlp: Optional[nn.Module] = None,
                 residual_in_fp32: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.mixer = mixer
        self.norm = norm if norm is not None else RMSNorm(dim)
        self.mlp = mlp
        self.norm2 = (RMSNorm(dim) if mlp is not None else None)
        self.residual_in_fp32 = residual_in_fp32
        self.drop_path = drop_path

    def _drop(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.drop_path)
        return x * keep / (1 - self.drop_path)

    def _add(self, hidden, residual):
        residual = hidden if residual is None else residual + self._drop(hidden)
        return residual.float() if self.residual_in_fp32 else residual

    def forward(self, hidden: torch.Tensor, residual: Optional[torch.Tensor] = None, **mixer_kwargs):
        residual = self._add(hidden, residual)
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)), **mixer_kwargs)
        if self.mlp is not None:
            residual = self._add(hidden, residual)
            hidden = self.mlp(self.norm2(residual.to(self.norm2.weight.dtype)))
        return hidden, residual

    def step(self, hidden: torch.Tensor, residual: Optional[torch.Tensor], state):
        """One decoding step on (batch, dim) tokens; the mixer must have `step`."""
        residual = self._add(hidden, residual)
        hidden, state = self.mixer.step(self.norm(residual.to(self.norm.weight.dtype)), state)
        if self.mlp is not None:
            residual = self._add(hidden, residual)
            hidden = self.mlp(self.norm2(residual.to(self.norm2.weight.dtype)))
        return hidden, residual, state


class Backbone(nn.Module):
    """Embedding -> n_layer Blocks -> final norm (mamba_ssm's MixerModel)."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, mixer: Callable[[int], nn.Module],
                 residual_in_fp32: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(Block(d_model, mixer(i), residual_in_fp32=residual_in_fp32)
                                    for i in range(n_layer))
        self.norm_f = RMSNorm(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, residual = self.embedding(tokens), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        residual = hidden if residual is None else residual + hidden
        return self.norm_f(residual.to(self.norm_f.weight.dtype))


class SequenceModel(nn.Module):
    """A language model: Backbone + tied linear head. `mixer(layer_idx)` builds each layer's mixer."""

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, mixer: Callable[[int], nn.Module],
                 tie_embeddings: bool = True, residual_in_fp32: bool = False):
        super().__init__()
        self.backbone = Backbone(vocab_size, d_model, n_layer, mixer, residual_in_fp32)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.reset_parameters(n_layer)
        if tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight

    def reset_parameters(self, n_layer: int, initializer_range: float = 0.02) -> None:
        """mamba_ssm's init: embeddings N(0, 0.02), zero linear biases (unless marked `_no_reinit`), and each
        residual branch's output projection scaled by 1/sqrt(n_layer) so the residual stream does not grow."""
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                if not getattr(module.bias, "_no_reinit", False):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=initializer_range)
        for name, p in self.backbone.layers.named_parameters():
            if name.endswith(("out_proj.weight", "fc2.weight")):
                nn.init.kaiming_uniform_(p, a=5 ** 0.5)
                with torch.no_grad():
                    p /= n_layer ** 0.5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (batch, L) int64 -> logits (batch, L, vocab_size)."""
        if tokens.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"tokens must be an integer tensor of shape (batch, L), got dtype {tokens.dtype}")
        return self.lm_head(self.backbone(tokens))

    def initial_state(self, batch_size: int) -> List:
        return [layer.mixer.initial_state(batch_size) for layer in self.backbone.layers]

    def step(self, token: torch.Tensor, state: List):
        """token (batch,) -> (logits (batch, vocab_size), new state): one step of autoregressive decoding."""
        hidden, residual, new_state = self.backbone.embedding(token), None, []
        for layer, s in zip(self.backbone.layers, state):
            hidden, residual, s = layer.step(hidden, residual, s)
            new_state.append(s)
        residual = hidden if residual is None else residual + hidden
        return self.lm_head(self.backbone.norm_f(residual.to(self.backbone.norm_f.weight.dtype))), new_state


class xLSTMBlock(nn.Module):
    """xLSTM's residual block: x + drop(mixer(xlstm_norm(x))), then x + drop(ffn(ffn_norm(x))) when `ffn` is given.

    `forward(x, state=None, return_state=False)`, `initial_state` and `step` pass the mixer's state through.
    """

    def __init__(self, d_model: int, mixer: nn.Module, ffn: Optional[nn.Module] = None, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.xlstm_norm = LayerNorm(d_model)
        self.xlstm = mixer
        if ffn is not None:
            self.ffn_norm = LayerNorm(d_model)
            self.ffn = ffn
        else:
            self.ffn_norm = self.ffn = None
        self.dropout = nn.Dropout(dropout)

    def _ffn(self, x):
        return x if self.ffn is None else x + self.dropout(self.ffn(self.ffn_norm(x)))

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False):
        """x (B, L, d_model) -> same shape; with `return_state`, (y, the mixer's state)."""
        out = self.xlstm(self.xlstm_norm(x), state=state, return_state=return_state)
        y, state = out if return_state else (out, None)
        y = self._ffn(x + self.dropout(y))
        return (y, state) if return_state else y

    def initial_state(self, batch_size: int):
        return self.xlstm.initial_state(batch_size)

    def step(self, x_t: torch.Tensor, state) -> Tuple[torch.Tensor, object]:
        """x_t (B, d_model) -> (y_t (B, d_model), new state)."""
        y, state = self.xlstm.step(self.xlstm_norm(x_t), state)
        return self._ffn(x_t + self.dropout(y)), state


class mLSTMBlock(xLSTMBlock):
    """mLSTM block: x + mLSTM(LayerNorm(x)); the keyword arguments are `ssmkit.core.layers.mLSTM`'s."""

    def __init__(self, d_model: int, num_heads: int = 4, proj_factor: float = 2.0, conv1d_kernel_size: int = 4,
                 qkv_proj_blocksize: int = 4, bias: bool = False, dropout: float = 0.0, mode: str = "chunkwise",
                 chunk_size: int = 64, num_blocks: int = 1, device=None, dtype=None):
        mixer = mLSTM(d_model, num_heads, proj_factor, conv1d_kernel_size, qkv_proj_blocksize, bias, mode,
                      chunk_size, num_blocks)
        super().__init__(d_model, mixer, dropout=dropout)
        to_factory(self, device, dtype)


class sLSTMBlock(xLSTMBlock):
    """sLSTM block: x + sLSTM(LayerNorm(x)), then x + FeedForward(LayerNorm(x)) (GLU, xLSTM's `ffn`)."""

    def __init__(self, d_model: int, num_heads: int = 4, conv1d_kernel_size: int = 4, ffn_proj_factor: float = 1.3,
                 dropout: float = 0.0, num_blocks: int = 1, device=None, dtype=None):
        mixer = sLSTM(d_model, num_heads, conv1d_kernel_size)
        super().__init__(d_model, mixer, FeedForward(d_model, ffn_proj_factor, num_blocks), dropout)
        to_factory(self, device, dtype)
