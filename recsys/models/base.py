"""What every sequential recommender shares: tied item embeddings (row 0 = padding), scores h . E^T over all
items, RecBole's weight init, the position-wise feed-forward block, growing the item table for fine-tuning, and
the streaming interface (`initial_state` / `step`) of the causal models."""
from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssmkit.core.layers.fused_weights import fused_weights
from ssmkit.core.ops import postnorm_ffn


class FeedForward(nn.Module):
    """Mamba4Rec FFN: LN(x + Dropout(W2 Dropout(act(W1 x)))), inner size 4 d by default; RecBole's Transformer
    FFN (SASRec) has no dropout after the activation (`inner_dropout=False`)."""

    def __init__(self, d_model: int, inner_size: Optional[int] = None, dropout: float = 0.2,
                 activation: str = "gelu", inner_dropout: bool = True):
        super().__init__()
        self.inner_dropout = inner_dropout
        acts = {"gelu": nn.GELU, "hardswish": nn.Hardswish, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.w_1 = nn.Linear(d_model, inner_size or 4 * d_model)
        self.w_2 = nn.Linear(inner_size or 4 * d_model, d_model)
        self.activation, self.activation_name = acts[activation](), activation
        self.dropout = Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # functional calls: the same math, without per-module overhead (this runs once per streamed interaction)
        h = self.activation(F.linear(x, self.w_1.weight, self.w_1.bias))
        h = F.linear(dropout(self.dropout, h) if self.inner_dropout else h, self.w_2.weight, self.w_2.bias)
        return layer_norm(self.LayerNorm, dropout(self.dropout, h) + x)


class Dropout(nn.Dropout):
    """nn.Dropout (keep each element with probability 1 - p, scale by 1 / (1 - p)) with the mask drawn as
    uniform >= p instead of by `bernoulli_`: PyTorch vectorises its CPU Bernoulli sampler (MKL) on Intel CPUs only,
    elsewhere it costs ~4x a uniform draw (AMD EPYC, measured), and the masks over (batch, length, 4 d) activations
    were ~10% of a training step. Same distribution, other random numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return x * (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1 / (1 - self.p))


def dropout(module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` that costs nothing in eval mode (the streaming path calls it per interaction)."""
    return module(x) if module.training else x


def layer_norm(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`module(x)` as one functional call."""
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def finish_layer(layer: nn.Module, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ffn(LN(Dropout(y) + x)) (y alone without `layer.residual`): the position-wise end of a Mamba4Rec / TiM4Rec
    layer after its mixer (`layer` has `dropout`, `residual`, `LayerNorm`, `ffn`). In eval mode one `postnorm_ffn`
    call, fused on CPU: streaming one user costs per op (7 here), and per module attribute lookup, so the weights
    are read from the modules' dictionaries (`fused_weights`)."""
    x = x if layer.residual else None
    if layer.training:
        y = dropout(layer.dropout, y)
        return layer.ffn(layer_norm(layer.LayerNorm, y if x is None else y + x))
    m = layer._modules
    ln, ffn = m["LayerNorm"], m["ffn"]
    f = ffn._modules
    ln2 = f["LayerNorm"]
    w1, w2 = fused_weights(f["w_1"], nn.Linear, "ffn.w_1"), fused_weights(f["w_2"], nn.Linear, "ffn.w_2")
    p1, p2 = fused_weights(ln, nn.LayerNorm, "LayerNorm"), fused_weights(ln2, nn.LayerNorm, "ffn.LayerNorm")
    return postnorm_ffn(y, x, p1["weight"], p1["bias"], w1["weight"], w1["bias"], w2["weight"], w2["bias"],
                        p2["weight"], p2["bias"], ln.eps, ln2.eps, ffn.activation_name)


LENGTH_BUCKETS = (2, 4, 8, 16, 32)  # history-length groups of `encode_by_length`


def gather_last(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x (B, L, D) -> x[b, lengths[b] - 1] (B, D): the read-out position of a right-padded history."""
    index = (lengths.to(x.device).long() - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return x.gather(1, index).squeeze(1)


def padding_mask(items: torch.Tensor) -> torch.Tensor:
    """(B, L) bool, True on real items."""
    return items != 0


class SequentialRecommender(nn.Module):
    """Base class: subclasses build their layers after `super().__init__` and implement `encode`.

    n_items: number of real items (ids 1..n_items); 0 lets the task size the table from the data. `spec()` gives
    the constructor arguments, so a checkpoint can rebuild the model.
    """

    streamable = False
    group_by_length = True  # forward() encodes histories in length groups (False: one padded call, to compare)
    PRESETS: Dict[str, Dict[str, Any]] = {}

    @classmethod
    def from_preset(cls, name: str, n_items: int = 0, **overrides) -> "SequentialRecommender":
        """Build a named configuration of the original repository (see each class's PRESETS)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; known: {sorted(cls.PRESETS)}")
        return cls(n_items=n_items, **{**cls.PRESETS[name], **overrides})

    def __init__(self, n_items: int = 0, hidden_size: int = 64):
        super().__init__()
        if n_items < 0:
            raise ValueError(f"n_items must be >= 0, got {n_items}")
        self.n_items, self.hidden_size = n_items, hidden_size
        self.item_embedding = nn.Embedding(n_items + 1, hidden_size, padding_idx=0)

    def spec(self) -> Dict[str, Any]:
        """Constructor arguments (with the current n_items) and the class path, to rebuild from a checkpoint."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        kwargs = {n: getattr(self, n) for n in names}
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": kwargs}

    def init_weights(self) -> None:
        """RecBole's init: Linear / Embedding weights N(0, 0.02), biases 0, LayerNorm (1, 0); parameters flagged
        `_no_reinit` (Mamba's dt bias) keep their own init."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if isinstance(module, nn.Linear) and module.bias is not None \
                        and not getattr(module.bias, "_no_reinit", False):
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        """items (B, L) right-padded, lengths (B,), times (B, L) seconds -> user representation (B, D)."""
        raise NotImplementedError

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, n_items + 1) logits h . E^T (column 0 = padding; the task masks it)."""
        return F.linear(h, self.item_embedding.weight)

    def represent(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        """User representation (B, D): `encode`, run in length groups unless `group_by_length` is off."""
        if self.group_by_length:
            return self.encode_by_length(items, lengths, times)
        return self.encode(items, lengths, times)

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        return self.scores(self.represent(items, lengths, times))

    def encode_by_length(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None,
                         bounds: Tuple[int, ...] = LENGTH_BUCKETS) -> torch.Tensor:
        """`encode` run on groups of similar length (<= 2, <= 4, ... items), each cut to its longest history.

        Equals `encode` on the whole batch (every model reads position length - 1 and ignores right padding,
        tested), but costs what the real lengths need: a random batch of Beauty is padded to 50 positions while
        its histories have 8.4 items on average, so one call spends ~85% of its work on padding.
        """
        lengths = lengths.to(items.device)
        cuts = [b for b in bounds if b < items.shape[1]]
        if not cuts or len(items) < 2:
            return self.encode(items, lengths, times)
        group = torch.bucketize(lengths, torch.tensor(cuts, device=items.device))  # lengths <= cuts[g] -> g
        parts, order = [], []
        for g in group.unique().tolist():
            idx = (group == g).nonzero().squeeze(1)
            width = max(1, int(lengths[idx].max()))
            parts.append(self.encode(items[idx, :width], lengths[idx],
                                     None if times is None else times[idx, :width]))
            order.append(idx)
        order = torch.cat(order)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return torch.cat(parts)[inverse]

    def grow_items(self, n_items: int) -> None:
        """Enlarge the item table to n_items real items; existing rows are kept exactly, new rows drawn N(0, 0.02)."""
        if n_items < self.n_items:
            raise ValueError(f"cannot shrink the item table from {self.n_items} to {n_items} items")
        if n_items == self.n_items:
            return
        old = self.item_embedding.weight
        table = nn.Embedding(n_items + 1, self.hidden_size, padding_idx=0, device=old.device, dtype=old.dtype)
        nn.init.normal_(table.weight, 0.0, 0.02)
        with torch.no_grad():
            table.weight[: self.n_items + 1] = old
        self.item_embedding, self.n_items = table, n_items

    # streaming (causal models override)
    def initial_state(self, batch_size: int) -> Tuple:
        raise NotImplementedError(f"{type(self).__name__} cannot stream: it has no recurrent state")

    def step(self, item: torch.Tensor, state: Tuple, time: Optional[torch.Tensor] = None):
        """item (B,), time (B,) -> (user representation (B, D) after this interaction, new state)."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream: it has no recurrent state")
