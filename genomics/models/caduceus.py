"""Caduceus (Schiff et al., ICML 2024): a bidirectional Mamba (BiMamba) DNA LM, in its "Ph" and "PS" forms.

Each block is a pre-norm residual RMSNorm -> BiMamba (core `BiMamba(variant="caduceus")`: forward and reverse
Mamba with in/out projections tied across directions, outputs added); Mamba-only blocks, no MLP; d_state 16,
d_conv 4, expand 2. `Caduceus` is the plain model ("Ph": train with RC augmentation, average the predictions on
x and RC(x) with `rc_average_logits` / the classification task's `rc_conjoin`); `Caduceus.from_preset(
"caduceus-ps-...")` returns the RC-equivariant `RCPS` form with the same blocks. Trained with masked LM.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ssmkit.core.blocks import Block, RMSNorm
from ssmkit.core.layers import BiMamba

from ..tokenizer import PADDED_VOCAB_SIZE
from .rc import RCPS, ResidualBlock

# Caduceus GB models are ~0.47M parameters (4 layers, d 118); the published hg38 checkpoints are 16 x 256.
PRESETS = {
    "caduceus-ph-1k": dict(d_model=118, n_layer=4, rcps=False),
    "caduceus-ps-1k": dict(d_model=118, n_layer=4, rcps=True),
    "caduceus-ph-131k-d256-n16": dict(d_model=256, n_layer=16, rcps=False),
    "caduceus-ps-131k-d256-n16": dict(d_model=256, n_layer=16, rcps=True),
}


def bimamba(d_model: int, **mamba_kwargs) -> BiMamba:
    return BiMamba(d_model, variant="caduceus", strategy="add", **mamba_kwargs)


class Caduceus(nn.Module):
    """BiMamba LM: ids (B, L) -> logits (B, L, vocab) (tied head); `hidden(ids)` -> (B, L, d_model)."""

    causal = False

    def __init__(self, d_model: int = 128, n_layer: int = 4, vocab_size: int = PADDED_VOCAB_SIZE, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.d_model, self.vocab_size = d_model, vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.layers = nn.ModuleList(
            Block(d_model, bimamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand), norm=RMSNorm(d_model))
            for _ in range(n_layer))
        self.norm_f = RMSNorm(d_model)

    @property
    def d_output(self) -> int:
        return self.d_model

    @classmethod
    def from_preset(cls, name: str, **overrides) -> nn.Module:
        """A named configuration; the "-ps-" presets return `RCPS` with Caduceus blocks."""
        if name not in PRESETS:
            raise ValueError(f"unknown Caduceus preset {name!r}; presets: {sorted(PRESETS)}")
        p = {**PRESETS[name], **overrides}
        return CaduceusPS(**p) if p.pop("rcps") else cls(**p)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, residual = self.embedding(ids), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        return self.norm_f(hidden + residual)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hidden(ids) @ self.embedding.weight.T


class CaduceusPS(RCPS):
    """Caduceus-PS: RC-equivariant parameter sharing (`RCPS`) around RMSNorm -> BiMamba residual blocks."""

    def __init__(self, d_model: int = 128, n_layer: int = 4, vocab_size: int = PADDED_VOCAB_SIZE, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2):
        kw = dict(d_state=d_state, d_conv=d_conv, expand=expand)
        super().__init__(lambda i: ResidualBlock(d_model, bimamba(d_model, **kw), norm=RMSNorm), d_model, n_layer,
                         vocab_size, norm=RMSNorm)
