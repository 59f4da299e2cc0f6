"""`SaShiMiStepper`: the network of `SaShiMi.step`, stepped in place with the per-sample overhead taken out.

At batch 1 one sample is ~40 tiny tensor ops, so generation time is per-op overhead (Python, module calls, views,
allocations), not arithmetic. The stepper computes the same function as `SaShiMi.step`, written for that:
- each S4 / S4D layer is its fused real recurrence `fused_matrix` (one bmm per layer step), and its state lives in
  an (H, B, n + 1) buffer whose last column is the input slot: the normalised input is copied into the slot and
  one bmm writes [new state, SSM output] into a second buffer; the two buffers swap roles every step (no cat,
  slice or transpose ops; the slot and output views are made once);
- every Linear is one addmm on a pre-transposed weight; GLU + residual is sigmoid + addcmul on views of a
  preallocated buffer; layer norms, GELUs and the embedding are direct calls (no module `__call__`, no checks);
- up-pool outputs go into a buffer with one view per fine step; the logits go into the caller's `out` tensor.

A stepper is a snapshot: every tensor it uses is copied or derived from the parameters when it is built, so a later
change of the weights does not reach it (build a new one; `generate` builds one per batch, so it always uses the
current weights). It computes the eval-mode network (dropout off) and requires the model in eval mode.
The fused matrices (O(N^3) per channel: a complex solve per channel, ~70 ms for the small preset, more than 100 sample
steps) are cached per layer, keyed like the core layers' own step cache by each SSM parameter's (data_ptr, version):
an in-place optimiser step, `load_state_dict` or `.to()` changes the key and the next stepper recomputes them.
"""
from __future__ import annotations

import weakref
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .recurrence import fused_matrix


_FUSED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()  # layer -> (key, M^T)


def _fused(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """fused_matrix(layer, dtype), recomputed only when an SSM parameter changed (see the module docstring)."""
    key = (dtype, *((p.data_ptr(), p._version) for p in (layer.D, *layer.kernel.parameters())))
    cached = _FUSED.get(layer)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = _FUSED[layer] = (key, fused_matrix(layer, dtype))
    return cached[1]


def _frozen(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()


def _norm(norm: nn.LayerNorm) -> tuple:
    """Arguments after the input of torch.layer_norm for this LayerNorm (frozen weights)."""
    return (norm.normalized_shape, _frozen(norm.weight), _frozen(norm.bias), norm.eps)


def _linear(linear: nn.Linear) -> tuple:
    """(bias, W^T) for torch.addmm(bias, x, W^T) == linear(x); both copies (a snapshot), W^T contiguous."""
    return _frozen(linear.bias), linear.weight.detach().t().clone(memory_format=torch.contiguous_format)


class _SSMBlock:
    """x + GLU(Linear(GELU(S4(LayerNorm(x))))) with the S4 layer as its fused recurrence (see the module docstring)."""

    def __init__(self, block: nn.Module, batch_size: int):
        layer, ref = block.layer, block.norm.weight
        self.norm = _norm(block.norm)
        self.Mt = _fused(layer, ref.dtype)  # (H, n + 1, n + 1), never written
        H, n1 = self.Mt.shape[:2]
        self.cur, self.nxt = ref.new_zeros(H, batch_size, n1), ref.new_zeros(H, batch_size, n1)
        self.slot_cur, self.slot_nxt = self.cur[:, :, -1].t(), self.nxt[:, :, -1].t()  # (B, H) input / output
        self.bias, self.wt = _linear(layer.output_linear[0])
        self.glu_in = ref.new_empty(batch_size, 2 * H)
        self.value, self.gate = self.glu_in[:, :H], self.glu_in[:, H:]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.slot_cur.copy_(torch.layer_norm(x, *self.norm))
        torch.bmm(self.cur, self.Mt, out=self.nxt)  # [s_t, y_t] = [s_{t-1}, u_t] M^T for every channel
        z = self.slot_nxt
        self.cur, self.nxt, self.slot_cur, self.slot_nxt = self.nxt, self.cur, self.slot_nxt, self.slot_cur
        torch.addmm(self.bias, F.gelu(z), self.wt, out=self.glu_in)
        return torch.addcmul(x, self.value, torch.sigmoid(self.gate))


class _FFBlock:
    """x + Linear(GELU(Linear(LayerNorm(x))))."""

    def __init__(self, block: nn.Module):
        self.norm = _norm(block.norm)
        (self.bias1, self.wt1), (self.bias2, self.wt2) = _linear(block.layer[0]), _linear(block.layer[-1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(torch.addmm(self.bias1, torch.layer_norm(x, *self.norm), self.wt1))
        return torch.addmm(self.bias2, h, self.wt2).add_(x)


class _Stack:
    """n residual blocks with one more residual around them (`_Stack` of sashimi.py)."""

    def __init__(self, stack: nn.Module, batch_size: int):
        self.blocks = [_SSMBlock(b, batch_size) if b.is_ssm else _FFBlock(b) for b in stack.blocks]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for block in self.blocks:
            y = block(y)
        return x + y


class _UpPool:
    """Pending fine frames of an up-pool: zeros at the start (the causal shift), refilled from each coarse frame."""

    def __init__(self, up_pool: nn.Module, batch_size: int):
        self.pool, self.i = up_pool.pool, 0
        self.bias, self.wt = _linear(up_pool.linear)
        self.pending = self.wt.new_zeros(batch_size, up_pool.pool * up_pool.d_out)
        self.frames = self.pending.view(batch_size, up_pool.pool, up_pool.d_out).unbind(1)

    def __call__(self, skip: torch.Tensor, coarse: Optional[torch.Tensor]) -> torch.Tensor:
        """The next fine frame + skip; after the last pending frame, the p next ones from `coarse` (this step's)."""
        y = self.frames[self.i] + skip
        self.i += 1
        if self.i == self.pool:
            torch.addmm(self.bias, coarse, self.wt, out=self.pending)
            self.i = 0
        return y


class SaShiMiStepper:
    """`stepper(code_t, out=None) -> logits_t` advances the whole U-Net by one sample in place; code_t (B,) int64
    with the B it was built for (not checked: this is the generation inner loop), logits (B, n_classes), written into
    `out` when given."""

    def __init__(self, model: nn.Module, batch_size: int):
        if model.training:
            raise ValueError("SaShiMiStepper computes the eval-mode network: call model.eval() first")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        with torch.no_grad():
            self.embedding = _frozen(model.embedding.weight)
            self.down = [(pool.pool, *_linear(pool.linear)) for pool in model.down]
            self.buffers: List[list] = [[] for _ in model.down]
            self.center = _Stack(model.center, batch_size)
            self.up = [(_UpPool(u, batch_size), _Stack(s, batch_size)) for u, s in zip(model.up_pools, model.up)]
            self.norm, (self.bias, self.wt) = _norm(model.norm), _linear(model.head)

    def __call__(self, code: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = torch.index_select(self.embedding, 0, code)
        skips = []
        for (pool, bias, wt), buffer in zip(self.down, self.buffers):
            skips.append(x)
            buffer.append(x)
            if len(buffer) < pool:
                x = None
                break
            x = torch.addmm(bias, torch.cat(buffer, dim=-1), wt)
            buffer.clear()
        if x is not None:  # every pool fired: the center stage runs this step
            x = self.center(x)
        for up_pool, stack in self.up[len(self.up) - len(skips):]:  # only the stages whose rate ticks now
            x = stack(up_pool(skips.pop(), x))
        return torch.addmm(self.bias, torch.layer_norm(x, *self.norm), self.wt, out=out)
