"""HiPPO-LegS (Gu et al. 2020/2022), the initialisation of S4 and of ConvS5 (S5's HiPPO-N), built once.

LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) on the diagonal, 0 above; B_n = sqrt(2n+1).
With P_n = sqrt(n + 1/2), A + P P^T = -1/2 I + S with S skew-symmetric: the normal part of LegS.
"""
from __future__ import annotations

from typing import Tuple

import torch


def hippo_legs(N: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A (N, N), P (N,), B (N,)) of HiPPO-LegS in float64."""
    if N < 1:
        raise ValueError(f"N must be a positive int, got {N}")
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    A = -torch.tril(r[:, None] * r[None, :], -1) - torch.diag(n + 1)
    return A, torch.sqrt(n + 0.5), r


def hippo_legs_normal(N: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the normal part of LegS, keeping one eigenvalue of each conjugate pair.

    Returns (Lambda (N/2,), V (N, N/2)) complex128: Lambda = -1/2 + i w for the eigenvalues with positive imaginary
    part, in ascending order of w, and V their orthonormal eigenvectors, so A + P P^T = V diag(Lambda) V^* on the
    kept half (the other half is the conjugate).
    """
    A, P, _ = hippo_legs(N)
    S = A + P[:, None] * P[None, :] + 0.5 * torch.eye(N, dtype=torch.float64)
    w, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # S = V diag(i w) V^*
    keep = w > 0
    return torch.complex(torch.full_like(w[keep], -0.5), w[keep]), V[:, keep]
