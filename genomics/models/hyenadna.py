"""HyenaDNA (Nguyen et al., NeurIPS 2023): a causal character-level DNA LM of Hyena blocks (core `Hyena`).

Module names follow `standalone_hyenadna.py` (`backbone.embeddings.word_embeddings`, `backbone.layers.{i}.mixer`,
`.norm1`, `.mlp.fc1|fc2`, `.norm2`, `backbone.ln_f`), so the official checkpoints load through
`convert_official_state_dict` (the Lightning prefix `model.` and, for models trained with `checkpoint_mixer`, the
`.mixer.layer.` / `.mlp.layer.` keys are mapped back). Block: residual stream r; r += dropout(h);
h = mixer(LN1(r)); r += h; h = MLP(LN2(r)) (GELU-tanh, 4 d); after the last block ln_f(r + h).
The LM head is tied to the embedding. `l_max` = context + 2 as in the official configs. The core Hyena marks
its implicit-filter parameters `_optim = {"weight_decay": 0.0}`, which `ssmkit.train.param_groups` honours.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.layers import Hyena

from ..tokenizer import PADDED_VOCAB_SIZE

# name: (n_layer, d_model, max context); counts are those of the official standalone model (reference table)
PRESETS = {
    "tiny-1k": dict(n_layer=2, d_model=128, context=1024),
    "tiny-1k-d256": dict(n_layer=2, d_model=256, context=1024),
    "small-32k": dict(n_layer=4, d_model=256, context=32768),
    "medium-160k": dict(n_layer=8, d_model=256, context=160000),
    "medium-450k": dict(n_layer=8, d_model=256, context=450000),
    "large-1m": dict(n_layer=8, d_model=256, context=1_000_000),
}
PRESET_PARAMS = {"tiny-1k": 436_096, "tiny-1k-d256": 1_641_088, "small-32k": 3_277_568, "medium-160k": 6_550_528,
                 "medium-450k": 6_550_528, "large-1m": 6_550_528}


class Mlp(nn.Module):
    def __init__(self, d_model: int, d_inner: int):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HyenaBlock(nn.Module):
    """One HyenaDNA block on (hidden, residual) pairs, in the official dropout-add-norm order."""

    def __init__(self, d_model: int, l_max: int, d_inner: int, dropout: float, filter_order: int = 64,
                 emb_dim: int = 5):
        super().__init__()
        self.mixer = Hyena(d_model, l_max, filter_order=filter_order, emb_dim=emb_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.mlp = Mlp(d_model, d_inner)
        self.dropout2 = nn.Dropout(0.0)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, hidden, residual=None):
        residual = self.dropout1(hidden) + (residual if residual is not None else 0)
        hidden = self.mixer(self.norm1(residual))
        residual = self.dropout2(hidden) + residual
        return self.mlp(self.norm2(residual)), residual


class Embeddings(nn.Module):
    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, d_model)

    def forward(self, ids):
        return self.word_embeddings(ids)


class HyenaBackbone(nn.Module):
    def __init__(self, vocab_size, d_model, n_layer, l_max, d_inner, embed_dropout, filter_order, emb_dim):
        super().__init__()
        self.embeddings = Embeddings(vocab_size, d_model)
        self.layers = nn.ModuleList(
            HyenaBlock(d_model, l_max, d_inner, embed_dropout if i == 0 else 0.0, filter_order, emb_dim)
            for i in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)

    def forward(self, ids):
        hidden, residual = self.embeddings(ids), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        return self.ln_f(hidden + residual)


class HyenaDNA(nn.Module):
    """HyenaDNA LM: ids (B, L) -> logits (B, L, vocab); `hidden(ids)` gives the (B, L, d_model) features.

    Args: d_model, n_layer, l_max (longest input; official presets use context + 2), d_inner (default 4 d),
    vocab_size (16), embed_dropout (0.1, on the first block's input), filter_order (64), emb_dim (5).
    """

    causal = True

    def __init__(self, d_model: int = 128, n_layer: int = 2, l_max: int = 1026, d_inner: Optional[int] = None,
                 vocab_size: int = PADDED_VOCAB_SIZE, embed_dropout: float = 0.1, filter_order: int = 64,
                 emb_dim: int = 5):
        super().__init__()
        self.d_model, self.n_layer, self.l_max, self.vocab_size = d_model, n_layer, l_max, vocab_size
        self.backbone = HyenaBackbone(vocab_size, d_model, n_layer, l_max, d_inner or 4 * d_model, embed_dropout,
                                      filter_order, emb_dim)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.reset_parameters()
        self.lm_head.weight = self.backbone.embeddings.word_embeddings.weight

    @property
    def d_output(self) -> int:
        return self.d_model

    def reset_parameters(self, initializer_range: float = 0.02) -> None:
        """GPT-2 init as the official model: N(0, 0.02) linears/embedding, zero biases, out_proj/fc2 scaled by
        1/sqrt(2 n_layer). The implicit filter MLP keeps the same init (the official `_init_weights` also
        reaches it)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=initializer_range)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=initializer_range)
        for name, p in self.backbone.layers.named_parameters():
            if name.endswith(("mixer.out_proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(p, std=initializer_range / math.sqrt(2 * self.n_layer))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HyenaDNA":
        """A named configuration (see PRESETS), l_max = context + 2; keyword arguments override it."""
        if name not in PRESETS:
            raise ValueError(f"unknown HyenaDNA preset {name!r}; presets: {sorted(PRESETS)}")
        p = PRESETS[name]
        kwargs = dict(d_model=p["d_model"], n_layer=p["n_layer"], l_max=p["context"] + 2)
        return cls(**{**kwargs, **overrides})

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"ids must be an integer tensor (batch, L), got dtype {ids.dtype}")
        return self.backbone(ids)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden(ids))


def convert_official_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an official HyenaDNA state_dict (HF `LongSafari/hyenadna-*` `weights.ckpt['state_dict']`, or the
    standalone model's) onto `HyenaDNA`'s names.

    - drops the Lightning prefix `model.` and the decoder/head keys (`decoder.`, `head.`, `model.head.`);
    - `.mixer.layer.` -> `.mixer.` and `.mlp.layer.` -> `.mlp.` (checkpoints trained with `checkpoint_mixer`);
    - adds `lm_head.weight` tied to the embedding when absent.
    """
    out = {}
    for key, value in state_dict.items():
        k = key[len("model."):] if key.startswith("model.") else key
        if not k.startswith(("backbone.", "lm_head.")):
            continue
        k = re.sub(r"\.mixer\.layer\.", ".mixer.", k)
        k = re.sub(r"\.mlp\.layer\.", ".mlp.", k)
        out[k] = value
    if "lm_head.weight" not in out and "backbone.embeddings.word_embeddings.weight" in out:
        out["lm_head.weight"] = out["backbone.embeddings.word_embeddings.weight"]
    return out


def load_official(model: HyenaDNA, state_dict: Dict[str, torch.Tensor]) -> HyenaDNA:
    """Load an official checkpoint's state_dict into `model` strictly (every key and shape must match)."""
    converted = convert_official_state_dict(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    wrong = [f"{k}: checkpoint {tuple(converted[k].shape)} vs model {tuple(own[k].shape)}"
             for k in set(own) & set(converted) if converted[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"official HyenaDNA state_dict does not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatches {wrong[:5]} "
                         f"(is l_max = context + 2 and the preset right?)")
    model.load_state_dict(converted)
    return model
