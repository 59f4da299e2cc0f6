"""Long convolutions of (B, D, L) sequences with per-channel kernels, by FFT in O(L log L).

Causal: y[t] = sum_{j<=t} k[j] u[t-j]. Transforms are taken at n = 2L so the product is a linear
(not circular) convolution. Two-sided (`bidirectional=True`): k is (2, D, Lk); k[0] looks back
(lags 0, 1, ...), k[1] looks ahead (leads 1, 2, ...): y[t] += sum_{j>=1} k[1, j-1] u[t+j].

A transform spreads a NaN or inf over the whole sequence, so non-finite entries of u and k are transformed as
zeros and NaN is put back at the outputs the direct convolution reaches: u[s] reaches y[s .. s + Lk - 1] (and
y[s - La .. s - 1] looking ahead), a non-finite k the whole channel, as in `fft_conv_ref`. A bad input thus
shows where it entered, causally, as in every other op (no device sync, no data-dependent branch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import nonfinite as nf
from ._checks import check_same_device, check_tensor


def _check(u, k, bidirectional):
    sizes = check_tensor("u", u, ("B", "D", "L"))
    check_tensor("k", k, (2, "D", None) if bidirectional else ("D", None), sizes)
    check_same_device(u=u, k=k)
    if k.shape[-1] > u.shape[-1]:
        raise ValueError(f"k is longer than the sequence: kernel length {k.shape[-1]} > L = {u.shape[-1]} "
                         f"(u has shape {tuple(u.shape)}, k has shape {tuple(k.shape)})")


def fft_conv(u: torch.Tensor, k: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """Convolve u (B, D, L) with k (D, Lk) [or (2, D, Lk) if bidirectional], Lk <= L, by rfft at n = 2L.

    Shorter kernels are zero-padded. Computes in at least fp32; the output takes u's dtype.
    """
    _check(u, k, bidirectional)
    L = u.shape[-1]
    if u.numel() == 0 or k.shape[-1] == 0:  # nothing to transform (L = 0, batch 0, or an empty kernel)
        return torch.zeros_like(u)
    masked = nf.maybe_bad(u, k)
    if masked:
        bad_u, bad_k = nf.bad(u), nf.bad(k)
        u, k = nf.clean(u, bad_u), nf.clean(k, bad_k)
    work = torch.promote_types(torch.promote_types(u.dtype, k.dtype), torch.float32)
    n = 2 * L
    if bidirectional:
        # Circular kernel of length 2L: lags at the front, leads (reversed) at the back.
        back, ahead = k.to(work).unbind(0)
        kernel = F.pad(back, (0, n - back.shape[-1])) + F.pad(ahead.flip(-1), (n - ahead.shape[-1], 0))
    else:
        kernel = k.to(work)
    k_f = torch.fft.rfft(kernel, n=n)
    u_f = torch.fft.rfft(u.to(work), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]
    if masked:
        y = nf.poison(y, _reached(bad_u, bad_k, bidirectional))
    return y.to(u.dtype)


def _reached(bad_u: torch.Tensor, bad_k: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """(B, D, L) True where the direct convolution sums a non-finite u or k term (window counts by cumsum)."""
    L, Lk = bad_u.shape[-1], bad_k.shape[-1]
    count = F.pad(bad_u.to(torch.int32).cumsum(-1, dtype=torch.int32), (1, 0))   # count[t] = bad u before t
    upto = count[..., 1:]                                                         # bad u in [0, t]
    reached = upto > F.pad(count[..., :L - Lk + 1], (Lk - 1, 0))                  # u[t - Lk + 1 .. t]
    if bidirectional:
        total = count[..., -1:].expand(*count.shape[:-1], Lk)                    # Lk <= L (checked)
        reached = reached | (torch.cat([count[..., Lk + 1:], total], -1) > upto)   # u[t + 1 .. t + La]
    k_any = bad_k.any(-1).any(0) if bidirectional else bad_k.any(-1)               # (D,)
    return reached | k_any[:, None]


def fft_conv_ref(u: torch.Tensor, k: torch.Tensor, bidirectional: bool = False) -> torch.Tensor:
    """Direct (time-domain) convolution with the same contract as `fft_conv`: the oracle."""
    _check(u, k, bidirectional)
    D, L = u.shape[1], u.shape[2]
    if u.numel() == 0 or k.shape[-1] == 0:  # no terms to sum
        return torch.zeros_like(u)
    back = k[0] if bidirectional else k
    Lk = back.shape[-1]
    # conv1d is a cross-correlation: flip the kernel and pad on the left so y[t] only sees u[<= t].
    y = F.conv1d(F.pad(u, (Lk - 1, 0)), back.flip(-1).unsqueeze(1), groups=D)
    if bidirectional:
        ahead = k[1]
        La = ahead.shape[-1]
        # y[t] += sum_{j=1..La} ahead[j-1] u[t+j]: correlate with `ahead` over u shifted left by one.
        shifted = F.pad(u[..., 1:], (0, La))
        y = y + F.conv1d(shifted, ahead.unsqueeze(1), groups=D)[..., :L]
    return y
