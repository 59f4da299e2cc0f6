"""Baselines for the genomics benchmarks: a CNN classifier backbone (GenomicBenchmarks-style) and a causal
Transformer LM on PyTorch SDPA with HyenaDNA's block layout (for the speed/memory comparison)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..tokenizer import PADDED_VOCAB_SIZE


class CNN(nn.Module):
    """Embedding -> n_layer x [Conv1d(k) -> BatchNorm -> ReLU] (same padding); `hidden(ids)` (B, L, d_model)."""

    causal = False

    def __init__(self, d_model: int = 128, n_layer: int = 3, kernel_size: int = 9, vocab_size: int = PADDED_VOCAB_SIZE,
                 dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.convs = nn.ModuleList(nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2)
                                   for _ in range(n_layer))
        self.norms = nn.ModuleList(nn.BatchNorm1d(d_model) for _ in range(n_layer))
        self.dropout = nn.Dropout(dropout)

    @property
    def d_output(self) -> int:
        return self.d_model

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids).transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms):
            x = self.dropout(F.relu(norm(conv(x))))
        return x.transpose(1, 2)


class TransformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.fc1, self.fc2 = nn.Linear(d_model, 4 * d_model), nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out_proj(y.transpose(1, 2).reshape(B, L, D))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))


class TransformerLM(nn.Module):
    """Causal pre-norm Transformer LM (SDPA attention, sinusoidal positions, MLP 4 d, tied head)."""

    causal = True

    def __init__(self, d_model: int = 128, n_layer: int = 2, n_heads: int = 2, vocab_size: int = PADDED_VOCAB_SIZE):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(TransformerBlock(d_model, n_heads) for _ in range(n_layer))
        self.norm_f = nn.LayerNorm(d_model)

    def positions(self, L: int, device) -> torch.Tensor:
        pos = torch.arange(L, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, self.d_model, 2, device=device) / self.d_model)
        return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids) + self.positions(ids.shape[1], ids.device)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x) @ self.embedding.weight.T
