"""S4 convolution kernels and the discrete recurrences they unroll.

A real SSM of state size 2N is stored as N complex modes whose complex conjugates complete it (the
S4 convention), for H independent channels:

- S4D (diagonal): A = diag(Lambda), ZOH (default) or bilinear discretisation, output y = 2 Re(C x);
  kernel K[l] = 2 Re sum_n C_n dB_n dA_n^l by a Vandermonde product, O(H N L).
- S4 (DPLR, Hurwitz-tied): on the completed state, A = diag(Lambda) - P P^* with P = [P, conj P];
  Re(Lambda) < 0 makes (A + A^*)/2 negative definite, so every eigenvalue of A has Re < 0 and the
  bilinear dA is a contraction. Kernel from its generating function at the L-th roots of unity:
  c~ = (I - dA^L)^T C, one Cauchy sum per (vector, vector) pair, rank-R Woodbury, then irfft.
  Stepping uses the dense 2N x 2N dA ("dense" step mode), which matches the convolution exactly.

Shapes: dt (H,), Lambda/B/C (H, N) complex, P (R, H, N) complex; kernels are (H, L) real.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ._checks import check_same_device, check_tensor

Tensor = torch.Tensor


def _complex(t: Tensor) -> Tensor:
    return t if t.is_complex() else t.to(torch.promote_types(t.dtype, torch.complex64))


def _check_diag(dt, A, B, C, L):
    sizes = check_tensor("dt", dt, ("H",))
    for name, t in (("A", A), ("B", B), ("C", C)):
        check_tensor(name, t, ("H", "N"), sizes, allow_complex=True)
    check_same_device(dt=dt, A=A, B=B, C=C)
    if not isinstance(L, int) or L < 0:
        raise ValueError(f"L must be a non-negative int, got {L!r}")


def s4d_discretize(dt: Tensor, A: Tensor, B: Tensor, method: str = "zoh") -> Tuple[Tensor, Tensor]:
    """Discrete diagonal (dA, dB), each (H, N) complex: ZOH dA = exp(dt A), dB = (dA - 1)/A B; or bilinear."""
    A, B = _complex(A), _complex(B)
    dtA = dt.unsqueeze(-1) * A
    if method == "zoh":
        dA = torch.exp(dtA)
        return dA, (dA - 1) / A * B
    if method == "bilinear":
        denom = 1 - dtA / 2
        return (1 + dtA / 2) / denom, dt.unsqueeze(-1) * B / denom
    raise ValueError(f"method must be 'zoh' or 'bilinear', got {method!r}")


def s4d_kernel(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, L: int, method: str = "zoh") -> Tensor:
    """S4D kernel (H, L): K[l] = 2 Re sum_n C_n dB_n dA_n^l, via a Vandermonde matrix exp(l log dA)."""
    _check_diag(dt, A, B, C, L)
    dA, dB = s4d_discretize(dt, A, B, method)
    log_dA = dt.unsqueeze(-1) * _complex(A) if method == "zoh" else torch.log(dA)
    powers = torch.exp(log_dA.unsqueeze(-1) * torch.arange(L, device=dt.device, dtype=dt.dtype))  # (H, N, L)
    return 2 * torch.einsum("hn,hnl->hl", _complex(C) * dB, powers).real


def s4d_kernel_ref(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, L: int, method: str = "zoh") -> Tensor:
    """The S4D kernel by running the recurrence x <- dA x from x = dB: the oracle."""
    _check_diag(dt, A, B, C, L)
    dA, x = s4d_discretize(dt, A, B, method)
    C = _complex(C)
    out = [dt.new_zeros(dt.shape[0])] if L == 0 else []  # L = 0: an empty (H, 0) kernel
    for _ in range(L):
        out.append(2 * (C * x).sum(-1).real)
        x = dA * x
    return torch.stack(out, dim=-1)[:, :L]


def _check_dplr(dt, Lambda, P, B, C=None):
    sizes = check_tensor("dt", dt, ("H",))
    check_tensor("Lambda", Lambda, ("H", "N"), sizes, allow_complex=True)
    check_tensor("P", P, (None, "H", "N"), sizes, allow_complex=True)
    check_tensor("B", B, ("H", "N"), sizes, allow_complex=True)
    if C is not None:
        check_tensor("C", C, ("H", "N"), sizes, allow_complex=True)
    check_same_device(dt=dt, Lambda=Lambda, P=P, B=B, C=C)


def _complete(v: Tensor) -> Tensor:
    """Append the conjugate modes: (..., N) -> (..., 2N)."""
    v = _complex(v)
    return torch.cat([v, v.conj()], dim=-1)


def dplr_matrix(Lambda: Tensor, P: Tensor) -> Tensor:
    """Dense continuous A = diag(Lambda) - P P^* on the completed state: (H, 2N, 2N) complex."""
    Lf, Pf = _complete(Lambda), _complete(P)  # (H, 2N), (R, H, 2N)
    return torch.diag_embed(Lf) - torch.einsum("rhn,rhm->hnm", Pf, Pf.conj())


def dplr_discretize(dt: Tensor, Lambda: Tensor, P: Tensor, B: Tensor) -> Tuple[Tensor, Tensor]:
    """Bilinear (dA (H, 2N, 2N), dB (H, 2N)) of the completed DPLR system: the dense step matrices.

    dA = (I - dt/2 A)^-1 (I + dt/2 A), dB = (I - dt/2 A)^-1 dt B.
    """
    _check_dplr(dt, Lambda, P, B)
    A = dplr_matrix(Lambda, P)
    half = (dt / 2).to(A.dtype)[:, None, None] * A
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    rhs = torch.cat([eye + half, (dt.to(A.dtype)[:, None] * _complete(B)).unsqueeze(-1)], dim=-1)
    sol = torch.linalg.solve(eye - half, rhs)
    return sol[..., :-1], sol[..., -1]


def dplr_kernel(dt: Tensor, Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, L: int,
                node_chunk: int = 2048) -> Tensor:
    """S4 (DPLR) kernel (H, L) for any L, by Cauchy sums and Woodbury at the rfft nodes, then irfft.

    At node w: K^(w) = c~^T (I - w dA)^-1 dB = dt c~^T ((1 - w) I - (1 + w) dt/2 A)^-1 B, and with
    A = Lambda - P P^* the inverse is diagonal plus a rank-R Woodbury correction. `node_chunk` bounds
    memory (the Cauchy matrix is (H, 2N, node_chunk)).
    """
    _check_dplr(dt, Lambda, P, B, C)
    if not isinstance(L, int) or L < 0:
        raise ValueError(f"L must be a non-negative int, got {L!r}")
    if L == 0:
        return dt.new_zeros(dt.shape[0], 0)
    dA, _ = dplr_discretize(dt, Lambda, P, B)
    Cf = _complete(C)
    c_tilde = Cf - torch.einsum("hnm,hn->hm", torch.linalg.matrix_power(dA, L), Cf)
    Lf, Pf, Bf = _complete(Lambda), _complete(P), _complete(B)
    R = Pf.shape[0]
    left = torch.cat([c_tilde.unsqueeze(0), Pf.conj()], dim=0).transpose(0, 1)  # (H, 1+R, 2N)
    right = torch.cat([Bf.unsqueeze(0), Pf], dim=0).transpose(0, 1)  # (H, 1+R, 2N)
    real = dt.dtype
    nodes = torch.exp(-2j * torch.pi * torch.arange(L // 2 + 1, device=dt.device, dtype=real) / L)
    dt_c = dt.to(Lf.dtype)[:, None]
    eye = torch.eye(R, dtype=Lf.dtype, device=Lf.device)
    spectrum = []
    for w in nodes.to(Lf.dtype).split(node_chunk):
        alpha = 1 - w  # (M,)
        beta = (1 + w) * dt_c / 2  # (H, M)
        cauchy = 1 / (alpha - beta.unsqueeze(1) * Lf.unsqueeze(-1))  # (H, 2N, M)
        k = torch.einsum("han,hbn,hnm->hmab", left, right, cauchy)  # (H, M, 1+R, 1+R)
        k00, k01, k10, k11 = k[..., 0, 0], k[..., 0, 1:], k[..., 1:, 0], k[..., 1:, 1:]
        bm = beta.unsqueeze(-1)  # (H, M, 1)
        corr = torch.linalg.solve(eye + bm.unsqueeze(-1) * k11, k10.unsqueeze(-1)).squeeze(-1)  # (H, M, R)
        spectrum.append(dt_c * (k00 - bm.squeeze(-1) * (k01 * corr).sum(-1)))
    return torch.fft.irfft(torch.cat(spectrum, dim=-1), n=L)


def dplr_kernel_ref(dt: Tensor, Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor, L: int) -> Tensor:
    """The DPLR kernel by running the dense recurrence x <- dA x from x = dB: the oracle."""
    _check_dplr(dt, Lambda, P, B, C)
    dA, x = dplr_discretize(dt, Lambda, P, B)
    Cf = _complete(C)
    out = [dt.new_zeros(dt.shape[0])] if L == 0 else []  # L = 0: an empty (H, 0) kernel
    for _ in range(L):
        out.append((Cf * x).sum(-1).real)
        x = torch.einsum("hnm,hm->hn", dA, x)
    return torch.stack(out, dim=-1)[:, :L]
