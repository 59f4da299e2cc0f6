"""Krylov sequences of SpaceTime's companion matrices by their structure: O(d) per step instead of dense powers.

A = S + a e_d^T (down-shift plus a learned last column) applies as A v = shift_down(v) + a v_{d-1}, and the
closed-loop transition read from the output side, M = (A + b k^T)^T = S^T + e_d a^T + k b^T, as
M v = shift_up(v) + e_d (a . v) + k (b . v). So [v, A v, ..., A^{L-1} v] costs O(H d L) by the recurrence,
where repeated squaring of the dense (H, d, d) matrices (`krylov`) costs O(H d^3 log L): at SpaceTime's
d = 64 with one kernel per channel that squaring is most of a training step.

- `companion_krylov(a, v, L)` / `companion_krylov_ref`: [v, A v, ...] for A = companion_matrix(a).
- `closed_loop_krylov(a, b, k, v, L)` / `closed_loop_krylov_ref`: [v, M v, ...] for M = (A + b k^T)^T.
- `companion_kernel_recurrence(a, b, c, L)`: K[l] = c^T A^l b from `companion_krylov` (H, L).
Shapes: a, b, k (H, d); v (..., H, d) broadcasting over leading dims; results (..., H, d, L). The `_ref`
oracles apply the dense matrices one step at a time. Backends: "torch" steps the recurrence in PyTorch (one autograd
node per column); "cpp" (`kernels/cpu/companion_krylov.cpp`, fp32 / fp64, its own backward) runs all columns in one
call and is what "auto" picks on CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from ._dispatch import describe, select
from .companion import companion_matrix

Tensor = torch.Tensor


def _check(L: int, v: Tensor, **params: Tensor) -> None:
    sizes = None
    for name, t in params.items():
        sizes = check_tensor(name, t, ("H", "d"), sizes)
    check_tensor("v", v, (None,) * max(v.dim() - 2, 0) + ("H", "d") if isinstance(v, Tensor) else ("H", "d"), sizes)
    check_same_device(v=v, **params)
    if not isinstance(L, int) or L < 0:
        raise ValueError(f"L must be a non-negative int, got {L!r}")


def _columns(v: Tensor, L: int, step) -> Tensor:
    cols = []
    for _ in range(L):
        cols.append(v)
        if len(cols) < L:
            v = step(v)
    return torch.stack(cols, dim=-1) if cols else v.new_zeros(*v.shape, 0)


def _dispatch(op: str, backend: str, torch_impl, **kwargs) -> Tensor:
    v, L = kwargs["v"], kwargs["L"]
    impl = select(op, backend, v.device, torch_impl, describe(v.dtype, kwargs, ()))
    if L == 0 or v.numel() == 0:  # no columns or no vectors: the same empty result from every backend
        impl = torch_impl
    return impl(**kwargs)


def companion_krylov(a: Tensor, v: Tensor, L: int, backend: str = "auto") -> Tensor:
    """[v, A v, ..., A^{L-1} v] for A = companion_matrix(a), by the O(d) recurrence: (..., H, d, L).

    backend: "auto" (the C++ kernel on CPU for fp32 / fp64 when it builds), "torch", "cpp".
    """
    _check(L, v, a=a)
    return _dispatch("companion_krylov", backend, _companion_krylov_torch, a=a, v=v, L=L)


def _companion_krylov_torch(a: Tensor, v: Tensor, L: int) -> Tensor:
    return _columns(v, L, lambda x: torch.addcmul(F.pad(x[..., :-1], (1, 0)), a, x[..., -1:]))


def closed_loop_krylov(a: Tensor, b: Tensor, k: Tensor, v: Tensor, L: int, backend: str = "auto") -> Tensor:
    """[v, M v, ..., M^{L-1} v] for M = (companion_matrix(a) + b k^T)^T, by the O(d) recurrence: (..., H, d, L).

    backend: "auto" (the C++ kernel on CPU for fp32 / fp64 when it builds), "torch", "cpp".
    """
    _check(L, v, a=a, b=b, k=k)
    return _dispatch("closed_loop_krylov", backend, _closed_loop_krylov_torch, a=a, b=b, k=k, v=v, L=L)


def _closed_loop_krylov_torch(a: Tensor, b: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    ab = torch.stack([a, b], dim=-1)                        # (H, d, 2): both dot products in one product

    def step(x):
        dots = (x.unsqueeze(-2) @ ab).squeeze(-2)           # (..., H, 2): a . x, b . x
        return torch.addcmul(torch.cat([x[..., 1:], dots[..., :1]], -1), k, dots[..., 1:])
    return _columns(v, L, step)


def _dense_columns(M: Tensor, v: Tensor, L: int) -> Tensor:
    return _columns(v, L, lambda x: torch.einsum("hij,...hj->...hi", M, x))


def companion_krylov_ref(a: Tensor, v: Tensor, L: int) -> Tensor:
    """The oracle of `companion_krylov`: the dense companion matrix applied one step at a time."""
    _check(L, v, a=a)
    return _dense_columns(companion_matrix(a), v, L)


def closed_loop_krylov_ref(a: Tensor, b: Tensor, k: Tensor, v: Tensor, L: int) -> Tensor:
    """The oracle of `closed_loop_krylov`: the dense (A + b k^T)^T applied one step at a time."""
    _check(L, v, a=a, b=b, k=k)
    return _dense_columns((companion_matrix(a) + b.unsqueeze(-1) * k.unsqueeze(-2)).transpose(-1, -2), v, L)


def companion_kernel_recurrence(a: Tensor, b: Tensor, c: Tensor, L: int) -> Tensor:
    """K[l] = c^T A^l b, l < L, from the structured Krylov sequence: (H, L)."""
    check_tensor("c", c, tuple(a.shape))
    return torch.einsum("hd,hdl->hl", c, companion_krylov(a, b, L))
