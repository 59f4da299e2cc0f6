"""SASRec (Kang & McAuley, ICDM 2018) as RecBole 1.2 builds it: item + learned position embeddings, LN, dropout,
n_layers post-LN Transformer layers with causal, padding-masked self-attention and a GELU FFN, read-out at the
last real position, CE over tied item embeddings. RecBole defaults: 2 layers, 2 heads, hidden 64, inner 256,
dropout 0.5 (hidden and attention), LayerNorm eps 1e-12."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Dropout, FeedForward, SequentialRecommender, gather_last, padding_mask


class SelfAttention(nn.Module):
    """RecBole MultiHeadAttention: LN(x + Dropout(W_o softmax(QK^T / sqrt(d_h) + mask) V))."""

    def __init__(self, d_model: int, n_heads: int, hidden_dropout: float, attn_dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide hidden_size={d_model}")
        self.n_heads, self.attn_dropout = n_heads, attn_dropout
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.dense = nn.Linear(d_model, d_model)
        self.dropout = Dropout(hidden_dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, queries: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (B, L, D); allowed (B, 1, Q, L) bool: query i may attend to key j. The queries are the positions of x
        (Q = L), or `queries` (B, Q, D) (the read-out positions only)."""
        heads = lambda t: t.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)  # noqa: E731
        queries = x if queries is None else queries
        q, k, v = heads(self.query(queries)), heads(self.key(x)), heads(self.value(x))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.LayerNorm(self.dropout(self.dense(y.transpose(1, 2).flatten(-2))) + queries)


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommender; not streamable (attention re-reads the whole history)."""
    PRESETS = {"recbole": {}}  # RecBole SASRec.yaml defaults

    def __init__(self, n_items: int = 0, hidden_size: int = 64, n_layers: int = 2, n_heads: int = 2,
                 inner_size: int = 256, hidden_dropout: float = 0.5, attn_dropout: float = 0.5, max_len: int = 50):
        super().__init__(n_items, hidden_size)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers, self.n_heads, self.inner_size = n_layers, n_heads, inner_size
        self.hidden_dropout, self.attn_dropout, self.max_len = hidden_dropout, attn_dropout, max_len
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.dropout = Dropout(hidden_dropout)
        self.attention = nn.ModuleList(SelfAttention(hidden_size, n_heads, hidden_dropout, attn_dropout)
                                       for _ in range(n_layers))
        self.ffn = nn.ModuleList(FeedForward(hidden_size, inner_size, hidden_dropout, inner_dropout=False)
                                 for _ in range(n_layers))
        self.init_weights()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        L = items.shape[1]
        if L > self.max_len:
            raise ValueError(f"items has {L} positions but SASRec was built with max_len={self.max_len}")
        positions = torch.arange(L, device=items.device)
        x = self.dropout(self.LayerNorm(self.item_embedding(items) + self.position_embedding(positions)))
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        allowed = (causal & padding_mask(items)[:, None, :]).unsqueeze(1)  # (B, 1, L, L)
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # an empty history attends everywhere (read-out unused)
        for attention, ffn in zip(self.attention[:-1], self.ffn[:-1]):
            x = ffn(attention(x, allowed))
        # the last layer only for the read-out position (query length - 1; keys and values from every position)
        last = (lengths.to(items.device).long() - 1).clamp(min=0).view(-1, 1, 1, 1).expand(-1, 1, 1, L)
        x = self.ffn[-1](self.attention[-1](x, allowed.gather(2, last), gather_last(x, lengths).unsqueeze(1)))
        return x.squeeze(1)
