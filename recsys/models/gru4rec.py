"""GRU4Rec (Hidasi et al., ICLR 2016) as RecBole 1.2 builds it for CE training: item embedding -> dropout ->
GRU (no bias) -> Linear(hidden -> embedding) at the last real position, CE over tied item embeddings.
RecBole defaults: embedding 64, GRU hidden 128, 1 layer, dropout 0.3. Streams with `step` (one GRU step)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Dropout, SequentialRecommender, dropout, gather_last


class GRU4Rec(SequentialRecommender):
    """GRU session recommender; `step` equals re-encoding the whole history."""

    streamable = True
    PRESETS = {"recbole": {}}  # RecBole GRU4Rec.yaml defaults

    def __init__(self, n_items: int = 0, hidden_size: int = 64, gru_size: int = 128, n_layers: int = 1,
                 dropout: float = 0.3):
        super().__init__(n_items, hidden_size)
        self.gru_size, self.n_layers, self.dropout = gru_size, n_layers, dropout
        self.emb_dropout = Dropout(dropout)
        self.gru = nn.GRU(hidden_size, gru_size, n_layers, bias=False, batch_first=True)
        self.dense = nn.Linear(gru_size, hidden_size)
        self.init_weights()

    def init_weights(self) -> None:
        """RecBole GRU4Rec: xavier-normal embedding, xavier-uniform GRU weights, default Linear."""
        nn.init.xavier_normal_(self.item_embedding.weight)
        for p in self.gru.parameters():
            nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def encode(self, items: torch.Tensor, lengths: torch.Tensor, times: Optional[torch.Tensor] = None):
        out, _ = self.gru(self.emb_dropout(self.item_embedding(items)))
        return self.dense(gather_last(out, lengths))

    def initial_state(self, batch_size: int) -> Tuple[torch.Tensor]:
        w = self.dense.weight
        return (w.new_zeros(self.n_layers, batch_size, self.gru_size),)

    def step(self, item: torch.Tensor, state: Tuple[torch.Tensor], time: Optional[torch.Tensor] = None):
        """One `gru_cell` per layer (the GRU's own equations, without `nn.GRU`'s per-call packing overhead)."""
        x = dropout(self.emb_dropout, F.embedding(item, self.item_embedding.weight, 0))
        hs = []
        for k in range(self.n_layers):
            x = torch.gru_cell(x, state[0][k], getattr(self.gru, f"weight_ih_l{k}"),
                               getattr(self.gru, f"weight_hh_l{k}"))
            hs.append(x)
        h = hs[0].unsqueeze(0) if len(hs) == 1 else torch.stack(hs)
        return F.linear(x, self.dense.weight, self.dense.bias), (h,)
