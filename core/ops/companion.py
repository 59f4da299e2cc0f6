"""Companion-matrix SSM kernels (SpaceTime, Zhang et al. 2023).

A = S + a e_d^T: the down-shift S (S e_i = e_{i+1}) plus a learned last column a, so x_t = A x_{t-1} + b u_t,
y_t = c^T x_t has the kernel K[l] = c^T A^l b. Shapes: a, b, c (H, d); kernels (H, L).

- `companion_kernel_ref`: explicit powers, O(d^2 L) (the oracle).
- `companion_kernel_squaring`: Krylov matrix [b, Ab, A^2 b, ...] by repeated squaring (SpaceTime's released path).
- `companion_kernel`: the FFT algorithm. With c~ = (I - A^L)^T c, the DFT of K at z = e^{-2 pi i k/L} is
  c~^T (I - zA)^-1 b, and since I - zA = (I - zS) - z a e_d^T (shift + rank 1), Sherman-Morrison gives
  K^ = Q(c~, b) + z Q(c~, a) Q(e_d, b) / (1 - z Q(e_d, a)), where u^T (I - zS)^-1 v = sum_j z^j sum_i u_{i+j} v_i,
  i.e. Q(u, v) is the length-L DFT of the (folded) cross-correlation of u and v: O((d + L) log(d + L)) after c~.
  c~ needs A^L (O(d^3 log L) by squaring; d is small). It breaks down only if A has an eigenvalue on the
  unit circle at an L-th root of unity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor

Tensor = torch.Tensor


def _check(a, b, c, L):
    sizes = check_tensor("a", a, ("H", "d"))
    check_tensor("b", b, ("H", "d"), sizes)
    if c is not None:
        check_tensor("c", c, ("H", "d"), sizes)
    check_same_device(a=a, b=b, c=c)
    if not isinstance(L, int) or L < 0:
        raise ValueError(f"L must be a non-negative int, got {L!r}")


def companion_matrix(a: Tensor) -> Tensor:
    """(H, d) last columns -> (H, d, d) companion matrices: ones on the subdiagonal, a in the last column."""
    d = a.shape[-1]
    shift = torch.diag_embed(torch.ones(d - 1, dtype=a.dtype, device=a.device), offset=-1)
    return torch.cat([shift[:, :-1].expand(*a.shape[:-1], d, d - 1), a.unsqueeze(-1)], dim=-1)


def krylov(A: Tensor, x: Tensor, L: int) -> Tensor:
    """[x, A x, ..., A^{L-1} x] as (..., d, L), by repeated squaring: O(log L) matrix products.

    A (H, d, d) and x (..., H, d) broadcast over leading batch dims of x.
    """
    X = x.unsqueeze(-1)[..., :L]  # L = 0: no columns
    power = A
    while 0 < X.shape[-1] < L:
        # the last doubling only extends to L columns: no wasted products, no slice to back-propagate through
        X = torch.cat([X, power @ X[..., :L - X.shape[-1]]], dim=-1)
        if X.shape[-1] < L:
            power = power @ power
    return X


def companion_kernel_squaring(a: Tensor, b: Tensor, c: Tensor, L: int) -> Tensor:
    """K[l] = c^T A^l b from the Krylov matrix by repeated squaring: (H, L)."""
    _check(a, b, c, L)
    return torch.einsum("hd,hdl->hl", c, krylov(companion_matrix(a), b, L))


def companion_kernel_ref(a: Tensor, b: Tensor, c: Tensor, L: int) -> Tensor:
    """K[l] = c^T A^l b by applying the dense A one step at a time (the oracle): (H, L)."""
    _check(a, b, c, L)
    A = companion_matrix(a)
    x, out = b, [b.new_zeros(b.shape[0])] if L == 0 else []  # L = 0: an empty (H, 0) kernel
    for _ in range(L):
        out.append((c * x).sum(-1))
        x = torch.einsum("hij,hj->hi", A, x)
    return torch.stack(out, dim=-1)[:, :L]


def _folded_correlation_dft(u: Tensor, v: Tensor, L: int) -> Tensor:
    """Q(u, v)[k] = sum_j z_k^j sum_i u_{i+j} v_i at z_k = e^{-2 pi i k/L}, k = 0..L//2."""
    d = u.shape[-1]
    n = 2 * d
    corr = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(v, n=n).conj(), n=n)[..., :d]  # lags 0..d-1
    rounded = -(-d // L) * L
    folded = F.pad(corr, (0, rounded - d)).unflatten(-1, (rounded // L, L)).sum(-2)  # z^L = 1
    return torch.fft.rfft(folded, n=L)


def companion_kernel(a: Tensor, b: Tensor, c: Tensor, L: int) -> Tensor:
    """K[l] = c^T A^l b, l < L, by the shift-plus-rank-1 FFT algorithm: (H, L). Differentiable."""
    _check(a, b, c, L)
    work = torch.promote_types(a.dtype, torch.float32)
    if L == 0:
        return a.new_zeros(a.shape[0], 0, dtype=work)
    a, b, c = a.to(work), b.to(work), c.to(work)
    A_L = torch.linalg.matrix_power(companion_matrix(a), L)
    c_tilde = c - torch.einsum("hij,hi->hj", A_L, c)
    e_d = torch.zeros_like(a)
    e_d[..., -1] = 1
    z = torch.exp(-2j * torch.pi * torch.arange(L // 2 + 1, device=a.device, dtype=work) / L)
    q_cb, q_ca = _folded_correlation_dft(c_tilde, b, L), _folded_correlation_dft(c_tilde, a, L)
    q_eb, q_ea = _folded_correlation_dft(e_d, b, L), _folded_correlation_dft(e_d, a, L)
    spectrum = q_cb + z * q_ca * q_eb / (1 - z * q_ea)
    return torch.fft.irfft(spectrum, n=L)
