"""Reverse-complement (RC) treatments for any DNA backbone (Caduceus, Schiff et al. 2024).

- "PS" (`RCPS`): RC-equivariant parameter sharing. Hidden states carry 2 d channels; each layer f of width d is
  applied as concat(f(h[..., :d]), RC(f(RC(h[..., d:])))) with RC = flip of the length and channel axes; the
  embedding is concat(E(ids), RC(E(comp(flip(ids))))) and the LM head W h_fwd + W[comp] flip_C(h_rc). The whole
  model is then exactly RC-equivariant: logits(RC(ids)) = flip_L(logits(ids))[..., comp].
- "Ph": any model, trained with RC augmentation, predicts the average of its outputs on x and on RC(x)
  (`rc_average_logits`, `rc_average`).
Inputs may be left-padded with [PAD]; `reverse_complement_padded` keeps the padding on the left.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..tokenizer import COMPLEMENT, PAD, PADDED_VOCAB_SIZE


def complement_index(device=None) -> torch.Tensor:
    return torch.as_tensor(COMPLEMENT, dtype=torch.long, device=device)


def reverse_complement_ids(ids: torch.Tensor) -> torch.Tensor:
    """RC of (B, L) ids over the whole length."""
    return complement_index(ids.device)[ids.flip(-1)]


def reverse_complement_padded(ids: torch.Tensor) -> torch.Tensor:
    """RC of each left-padded row's real tokens, padding kept on the left."""
    L = ids.shape[-1]
    n_pad = (ids == PAD).sum(-1, keepdim=True)
    rc = reverse_complement_ids(ids)                       # real tokens first, then the pads
    index = (torch.arange(L, device=ids.device) - n_pad) % L  # rotate the pads back to the front
    return rc.gather(-1, index)


def rc_logits(logits: torch.Tensor) -> torch.Tensor:
    """The token-level prediction for RC(x) expressed in x's frame: flip the length axis, complement the vocab."""
    return logits.flip(-2)[..., complement_index(logits.device)[: logits.shape[-1]]]


def rc_average_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """"Ph" at test time for token outputs: (model(x) + RC-frame model(RC(x))) / 2 (unpadded ids)."""
    return 0.5 * (model(ids) + rc_logits(model(reverse_complement_ids(ids))))


def rc_average(fn: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """"Ph" at test time for sequence-level outputs: (fn(x) + fn(RC(x))) / 2, padding kept on the left."""
    return 0.5 * (fn(ids) + fn(reverse_complement_padded(ids)))


def rc_hidden(h: torch.Tensor) -> torch.Tensor:
    return h.flip(-2).flip(-1)


class RCPSWrapper(nn.Module):
    """Apply a width-d module to both halves of a 2d-channel RC-equivariant hidden state."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.submodule = module

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1] // 2
        return torch.cat([self.submodule(h[..., :d]), rc_hidden(self.submodule(rc_hidden(h[..., d:])))], dim=-1)


class ResidualBlock(nn.Module):
    """x + mixer(norm(x)) [+ mlp(norm2(.))]: a pre-norm residual block of width d for RCPS stacks."""

    def __init__(self, d_model: int, mixer: nn.Module, mlp: nn.Module = None, norm: Callable[[int], nn.Module] = None):
        super().__init__()
        norm = norm or nn.LayerNorm
        self.norm, self.mixer = norm(d_model), mixer
        self.norm2, self.mlp = (norm(d_model), mlp) if mlp is not None else (None, None)

    def forward(self, x):
        x = x + self.mixer(self.norm(x))
        return x if self.mlp is None else x + self.mlp(self.norm2(x))


class RCPS(nn.Module):
    """RC-equivariant LM around any stack of width-d residual blocks: ids (B, L) -> logits (B, L, vocab).

    block(i) builds layer i (a module (B, L, d) -> (B, L, d), e.g. `ResidualBlock(d, Mamba(d))`, an xLSTM block,
    a Hyena block); norm builds the final norm. `hidden(ids)` returns RC-equivariant per-token features
    h_fwd + flip_C(h_rc) (B, L, d): under RC(x) they are flipped along L, so a mean over L is RC-invariant.
    """

    causal = False

    def __init__(self, block: Callable[[int], nn.Module], d_model: int, n_layer: int,
                 vocab_size: int = PADDED_VOCAB_SIZE, norm: Callable[[int], nn.Module] = None):
        super().__init__()
        self.d_model, self.vocab_size = d_model, vocab_size
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.layers = nn.ModuleList(RCPSWrapper(block(i)) for i in range(n_layer))
        self.norm_f = RCPSWrapper((norm or nn.LayerNorm)(d_model))

    @property
    def d_output(self) -> int:
        return self.d_model

    def _comp(self, device):
        return complement_index(device)[: self.vocab_size]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        fwd = self.embedding(ids)
        rc = self.embedding(self._comp(ids.device)[ids.flip(-1)])
        return torch.cat([fwd, rc_hidden(rc)], dim=-1)

    def hidden_pair(self, ids: torch.Tensor) -> torch.Tensor:
        """The (B, L, 2 d) RC-equivariant hidden state after the final norm."""
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return self.norm_f(h)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.hidden_pair(ids)
        d = self.d_model
        return h[..., :d] + h[..., d:].flip(-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.hidden_pair(ids)
        d, w = self.d_model, self.embedding.weight
        return h[..., :d] @ w.T + h[..., d:].flip(-1) @ w[self._comp(ids.device)].T
