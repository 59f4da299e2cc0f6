"""DNA-xLSTM (Bio-xLSTM, Schmidinger et al., ICLR 2025; code ml-jku/DNA-xLSTM): mLSTM/sLSTM block stacks.

A stack of n_layer xLSTM residual blocks (core `mLSTMBlock` / `sLSTMBlock`); `s_lstm_at` lists the sLSTM
positions (the rest are mLSTM), then a LayerNorm and a head tied to the embedding. Causal form (CLM) decodes
token by token with `step`; the bidirectional form (MLM) runs every block on x and on flip(x) with shared
weights and adds the two branches, x + f(x) + flip(f(flip(x))) (each block's residual counted once).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ssmkit.core.blocks import mLSTMBlock, sLSTMBlock
from ssmkit.core.layers.xlstm import LayerNorm

from ..tokenizer import PADDED_VOCAB_SIZE

# Bio-xLSTM's DNA checkpoints are named by size (~500k for GenomicBenchmarks, ~2M for NT); these layouts give
# 0.44M and 1.67M parameters with the default heads and projection factors (our layouts; the published
# configurations are not in the reference).
PRESETS = {
    "dna-xlstm-500k": dict(d_model=128, n_layer=4, s_lstm_at=()),
    "dna-xlstm-500k-slstm": dict(d_model=128, n_layer=4, s_lstm_at=(0, 1, 2, 3)),
    "dna-xlstm-2m": dict(d_model=256, n_layer=4, s_lstm_at=()),
}


class DNAxLSTM(nn.Module):
    """ids (B, L) -> logits (B, L, vocab); `hidden(ids)` -> (B, L, d_model); causal unless `bidirectional`."""

    def __init__(self, d_model: int = 128, n_layer: int = 4, s_lstm_at: Sequence[int] = (),
                 bidirectional: bool = False, vocab_size: int = PADDED_VOCAB_SIZE, num_heads: int = 4,
                 proj_factor: float = 2.0, ffn_proj_factor: float = 1.3, conv1d_kernel_size: int = 4,
                 chunk_size: int = 64, dropout: float = 0.0):
        super().__init__()
        bad = [i for i in s_lstm_at if not 0 <= i < n_layer]
        if bad:
            raise ValueError(f"s_lstm_at positions {bad} are outside 0..{n_layer - 1}")
        self.d_model, self.vocab_size, self.bidirectional = d_model, vocab_size, bidirectional
        self.s_lstm_at = tuple(s_lstm_at)
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(
            sLSTMBlock(d_model, num_heads, conv1d_kernel_size, ffn_proj_factor, dropout, n_layer)
            if i in self.s_lstm_at else
            mLSTMBlock(d_model, num_heads, proj_factor, conv1d_kernel_size, dropout=dropout, chunk_size=chunk_size,
                       num_blocks=n_layer)
            for i in range(n_layer))
        self.post_blocks_norm = LayerNorm(d_model)

    @property
    def causal(self) -> bool:
        return not self.bidirectional

    @property
    def d_output(self) -> int:
        return self.d_model

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DNAxLSTM":
        if name not in PRESETS:
            raise ValueError(f"unknown DNAxLSTM preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        for block in self.blocks:
            x = block(x) + block(x.flip(1)).flip(1) - x if self.bidirectional else block(x)
        return self.post_blocks_norm(x)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden(ids) @ self.embedding.weight.T

    def initial_state(self, batch_size: int):
        if self.bidirectional:
            raise ValueError("step decoding needs the causal form (bidirectional=False)")
        return [block.initial_state(batch_size) for block in self.blocks]

    def step(self, token: torch.Tensor, state: Optional[list] = None):
        """token (B,) -> (logits (B, vocab), new state): one step of autoregressive decoding."""
        if state is None:
            state = self.initial_state(token.shape[0])
        x, new_state = self.embedding(token), []
        for block, s in zip(self.blocks, state):
            x, s = block.step(x, s)
            new_state.append(s)
        return self.post_blocks_norm(x) @ self.embedding.weight.T, new_state
