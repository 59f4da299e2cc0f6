"""Full-softmax cross-entropy over tied item embeddings (RecBole `loss_type: CE`), computed in blocks of rows.

`F.cross_entropy(h @ E^T, target)` materialises the (batch, n_items + 1) logits three times (scores, log-softmax,
their gradient): on Beauty (2,048 x 12,102) that is 300 MB of fresh memory per step, and on one CPU core it took
0.57 s, a third of a Mamba4Rec training step. Here each block of rows computes its logits, their log-sum-exp
and, in place, softmax - onehot, and adds that block's share of the gradients of h and of the table at once (the
"fused linear cross-entropy" of Liger-Kernel): nothing of size (batch, n_items) outlives a block. Same value and
gradients (tested against F.cross_entropy in fp64); `benchmarks/recsys.py --latency-only` times a training step
with both.
"""
from __future__ import annotations

import torch

BLOCK_BYTES = 4 << 20  # logits per block of rows: about 4 MB, inside the caches of a laptop CPU


def _block_rows(n_cols: int, itemsize: int) -> int:
    return max(1, BLOCK_BYTES // (n_cols * itemsize))


def _masked_logits(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    logits = h @ weight.T
    logits[:, 0] = float("-inf")  # the padding column is never a candidate
    return logits


class _TiedCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and, when a gradient is wanted, the gradients of h and the item table too (each
    block's softmax - onehot is used right away and dropped); backward only scales them."""

    @staticmethod
    def forward(ctx, h, weight, target):
        ct = torch.float64 if torch.float64 in (h.dtype, weight.dtype) else torch.float32
        hc, wc = h.detach().to(ct), weight.detach().to(ct)
        want_grad = any(ctx.needs_input_grad[:2])
        rows = _block_rows(wc.shape[0], wc.element_size())
        losses = torch.empty(len(hc), dtype=ct, device=h.device)
        dh = torch.empty_like(hc) if want_grad else None
        dw = torch.zeros_like(wc) if want_grad else None
        with torch.autocast(h.device.type, enabled=False):
            for i in range(0, len(hc), rows):
                h_i, t_i = hc[i:i + rows], target[i:i + rows, None]
                logits = _masked_logits(h_i, wc)
                lse = torch.logsumexp(logits, 1, keepdim=True)
                losses[i:i + rows] = (lse - logits.gather(1, t_i)).squeeze(1)
                if want_grad:
                    p = logits.sub_(lse).exp_()  # softmax, 0 in the padding column
                    p.scatter_add_(1, t_i, torch.full_like(lse, -1.0))
                    dh[i:i + rows] = p @ wc
                    dw.addmm_(p.T, h_i)
        if want_grad:
            ctx.save_for_backward(dh.div_(len(hc)), dw.div_(len(hc)))
            ctx.dtypes = (h.dtype, weight.dtype)
        return losses.mean().to(h.dtype)

    @staticmethod
    def backward(ctx, grad):
        dh, dw = ctx.saved_tensors
        g = grad.to(dh.dtype)
        return (dh * g).to(ctx.dtypes[0]), (dw * g).to(ctx.dtypes[1]), None


def tied_cross_entropy(h: torch.Tensor, weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the scores h . weight^T (padding column 0 excluded) against target item ids.

    h (B, D) user representations, weight (n_items + 1, D) the item table, target (B,) ids in 1..n_items.
    Equals `F.cross_entropy(scores, target)` with scores[:, 0] = -inf.
    """
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(f"h must be (B, D) and weight (n_items + 1, D), got {tuple(h.shape)} and "
                         f"{tuple(weight.shape)}")
    if target.shape != (h.shape[0],):
        raise ValueError(f"target must be ({h.shape[0]},), got {tuple(target.shape)}")
    return _TiedCrossEntropy.apply(h, weight, target)
