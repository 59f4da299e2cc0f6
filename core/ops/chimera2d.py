"""Chimera's input-dependent 2-D selective SSM over a (time t, variate v) grid.

Chimera (Behrouz et al., NeurIPS 2024) has no official code; this is our reading of the paper. Each channel
d of each cell (t, v) carries two hidden states of size N: h1 moves along time, h2 across variates.
With diagonal A1, A4 < 0 (decays) and cross-couplings A2 = rho2 |A1|, A3 = rho3 |A4|, the continuous system
dh1/dt = A1 h1 + A2 h2 + B1 u (along time), dh2/dv = A4 h2 + A3 h1 + B2 u (across variates), discretised by
zero-order hold with separate input-dependent steps delta1 (time) and delta2 (variates), is

    h1[t, v] = a1 h1[t-1, v] + (1 - a1) rho2 h2[t-1, v] + g1 B1[t, v] u[t, v]     a1 = exp(delta1 A1)
    h2[t, v] = a4 h2[t, v-1] + (1 - a4) rho3 h1[t, v-1] + g4 B2[t, v] u[t, v]     a4 = exp(delta2 A4)
    y[t, v]  = C1[t, v] . h1[t, v] + C2[t, v] . h2[t, v] + D u[t, v]               g = (a - 1) / A (ZOH gain)

with zero states outside the grid; |rho| <= 1 keeps it stable. y[t, v] depends on every cell (t' <= t, v' <= v).

Parallel form: the cells of one anti-diagonal s = t + v depend only on anti-diagonal s - 1, so skewing the grid
(cell (t, v) -> (s, v)) turns the 2-D recurrence into L + V - 1 steps, each vectorised over all variates.

Backends (`backend=`): "torch" is the wavefront above in PyTorch; "cpp" (`kernels/cpu/chimera2d.cpp`) runs the
recurrence cell by cell with every (D, N) state of a cell in registers and its own backward, and is what "auto"
picks on CPU.

Layouts: u, delta1, delta2 (B, L, V, D); A (2, D, N) = (A1, A4), negative; couplings (2, D, N) = (rho2, rho3);
B1, B2, C1, C2 (B, L, V, N); D (D,); delta_bias (2, D) for (delta1, delta2). States fp32 (fp64 for fp64 u).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._checks import check_same_device, check_tensor
from ._dispatch import describe, select


def _validate(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias):
    s = check_tensor("u", u, ("B", "L", "V", "D"))
    for name, t in (("delta1", delta1), ("delta2", delta2)):
        check_tensor(name, t, ("B", "L", "V", "D"), s)
    check_tensor("A", A, (2, "D", "N"), s)
    check_tensor("couplings", couplings, (2, "D", "N"), s)
    for name, t in (("B1", B1), ("B2", B2), ("C1", C1), ("C2", C2)):
        check_tensor(name, t, ("B", "L", "V", "N"), s)
    if D is not None:
        check_tensor("D", D, ("D",), s)
    if delta_bias is not None:
        check_tensor("delta_bias", delta_bias, (2, "D"), s)
    check_same_device(u=u, delta1=delta1, delta2=delta2, A=A, couplings=couplings, B1=B1, B2=B2, C1=C1, C2=C2,
                      D=D, delta_bias=delta_bias)


def _terms(u, delta1, delta2, A, couplings, B1, B2, delta_bias, delta_softplus):
    """Per cell: decays a1, a4, coupling weights (1-a) rho, and inputs g B u; each (..., D, N) in the state dtype."""
    f = torch.float64 if u.dtype == torch.float64 else torch.float32
    d1, d2 = delta1.to(f), delta2.to(f)
    if delta_bias is not None:
        d1, d2 = d1 + delta_bias[0].to(f), d2 + delta_bias[1].to(f)
    if delta_softplus:
        d1, d2 = F.softplus(d1), F.softplus(d2)
    A, rho, u = A.to(f), couplings.to(f), u.to(f).unsqueeze(-1)
    e1, e4 = torch.expm1(d1.unsqueeze(-1) * A[0]), torch.expm1(d2.unsqueeze(-1) * A[1])   # a - 1, accurately
    # take 1/A and -rho on the small (D, N) parameters, so no divide or negation runs on the (..., D, N) terms
    x1 = e1 * B1.to(f).unsqueeze(-2) * (u * A[0].reciprocal())
    x2 = e4 * B2.to(f).unsqueeze(-2) * (u * A[1].reciprocal())
    return e1 + 1, e1 * -rho[0], x1, e4 + 1, e4 * -rho[1], x2


def _finish(y, u, D, out_dtype):
    if D is not None:
        y = y + D.to(y.dtype) * u.to(y.dtype)
    return y.to(out_dtype)


def selective_scan_2d_ref(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D=None, delta_bias=None,
                          delta_softplus=False):
    """The definition: the plain 2-D recurrence, cell by cell in raster order (time outer, variates inner)."""
    _validate(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias)
    if u.shape[1] == 0 or u.shape[2] == 0:  # an empty grid (L = 0 or V = 0): an empty output
        return torch.zeros_like(u)
    a1, w2, x1, a4, w3, x2 = _terms(u, delta1, delta2, A, couplings, B1, B2, delta_bias, delta_softplus)
    f = a1.dtype
    Bsz, L, V, Dm = u.shape
    zero = torch.zeros(Bsz, Dm, A.shape[-1], dtype=f, device=u.device)
    cols = [list(zip(*(t.unbind(1) for t in (a1_t, w2_t, x1_t, a4_t, w3_t, x2_t, c1_t, c2_t))))
            for a1_t, w2_t, x1_t, a4_t, w3_t, x2_t, c1_t, c2_t in
            zip(*(t.unbind(1) for t in (a1, w2, x1, a4, w3, x2, C1.to(f), C2.to(f))))]
    h1_prev_t, h2_prev_t = [zero] * V, [zero] * V                    # states of row t-1, per variate
    rows = []
    for cells in cols:                                                # t = 0 .. L-1
        h1_row, h2_row, y_row = [], [], []
        h1_left, h2_left = zero, zero                                 # states of (t, v-1)
        for v, (a1c, w2c, x1c, a4c, w3c, x2c, c1c, c2c) in enumerate(cells):
            h1 = a1c * h1_prev_t[v] + w2c * h2_prev_t[v] + x1c
            h2 = a4c * h2_left + w3c * h1_left + x2c
            y_row.append((h1 * c1c.unsqueeze(1)).sum(-1) + (h2 * c2c.unsqueeze(1)).sum(-1))
            h1_row.append(h1)
            h2_row.append(h2)
            h1_left, h2_left = h1, h2
        h1_prev_t, h2_prev_t = h1_row, h2_row
        rows.append(torch.stack(y_row, 1))
    return _finish(torch.stack(rows, 1), u, D, u.dtype)


def _skew(x: torch.Tensor, L: int, V: int) -> torch.Tensor:
    """(B, L, V, ...) -> (B, L+V-1, V, ...): cell (t, v) moves to (t + v, v); cells off the grid are zero."""
    s = torch.arange(L + V - 1, device=x.device)[:, None]
    v = torch.arange(V, device=x.device)[None, :]
    t = s - v
    valid = ((t >= 0) & (t < L)).to(x.dtype).view(1, L + V - 1, V, *([1] * (x.dim() - 3)))
    return x[:, t.clamp(0, L - 1), v.expand_as(t)] * valid


def _unskew(y: torch.Tensor, L: int, V: int) -> torch.Tensor:
    """(B, L+V-1, V, ...) -> (B, L, V, ...): the inverse of `_skew` on the grid cells."""
    t = torch.arange(L, device=y.device)[:, None]
    v = torch.arange(V, device=y.device)[None, :]
    return y[:, t + v, v.expand(L, V)]


def _shift_variates(h: torch.Tensor) -> torch.Tensor:
    """(B, V, D, N) -> state of variate v-1 at position v, zeros at v = 0."""
    return F.pad(h, (0, 0, 0, 0, 1, 0))[:, :-1]


def selective_scan_2d(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D: Optional[torch.Tensor] = None,
                      delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                      backend: str = "auto") -> torch.Tensor:
    """The 2-D selective scan (see module docstring): (B, L, V, D) -> (B, L, V, D).

    backend: "auto" (the C++ kernel on CPU when it builds, else PyTorch), "torch" (anti-diagonal wavefront), "cpp".
    """
    _validate(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D, delta_bias)
    kwargs = dict(u=u, delta1=delta1, delta2=delta2, A=A, couplings=couplings, B1=B1, B2=B2, C1=C1, C2=C2, D=D,
                  delta_bias=delta_bias, delta_softplus=delta_softplus)
    call = describe(u.dtype, kwargs, ("D", "delta_bias", "delta_softplus"))
    impl = select("selective_scan_2d", backend, u.device, _scan_2d_wavefront, call)
    if u.shape[1] == 0 or u.shape[2] == 0:  # an empty grid: an empty output, the same from every backend
        return torch.zeros_like(u)
    return impl(**kwargs)


def _scan_2d_wavefront(u, delta1, delta2, A, couplings, B1, B2, C1, C2, D=None, delta_bias=None,
                       delta_softplus=False) -> torch.Tensor:
    """The PyTorch path: the recurrence by anti-diagonal wavefront (validated inputs, non-empty grid)."""
    Bsz, L, V, Dm = u.shape
    # Skew the per-cell inputs (small), then form the (.., D, N) terms on the skewed grid; u is zero off the grid.
    u_s, d1, d2, B1, B2, C1, C2 = (_skew(t, L, V) for t in (u, delta1, delta2, B1, B2, C1, C2))
    terms = _terms(u_s, d1, d2, A, couplings, B1, B2, delta_bias, delta_softplus)
    f = terms[0].dtype
    steps = zip(*(t.unbind(1) for t in (*terms, C1.to(f), C2.to(f))))
    h1 = h2 = torch.zeros(Bsz, V, Dm, A.shape[-1], dtype=f, device=u.device)
    ys = []
    for a1, w2, x1, a4, w3, x2, c1, c2 in steps:
        h1, h2 = (a1 * h1 + w2 * h2 + x1,
                  a4 * _shift_variates(h2) + w3 * _shift_variates(h1) + x2)
        ys.append((h1 * c1.unsqueeze(2)).sum(-1) + (h2 * c2.unsqueeze(2)).sum(-1))
    return _finish(_unskew(torch.stack(ys, 1), L, V), u, D, u.dtype)
