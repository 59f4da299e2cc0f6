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
    _check_length(u, k)


def _check_length(u, k):
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


def _check_bank(u, k):
    sizes = check_tensor("u", u, ("B", "D", "L"))
    check_tensor("k", k, (None, "D", None), sizes)
    _check_length(u, k)


def fft_conv_bank(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution of one input u (B, D, L) with each of M kernel sets k (M, D, Lk), Lk <= L: (M, B, D, L),
    out[m] = fft_conv(u, k[m]).

    u is transformed once for all M kernels, at the smallest 2^a 3^b 5^c length >= L + Lk - 1 (enough for a linear
    convolution), and the backward is written in the frequency domain with the forward's spectra: one transform of
    the output gradient per kernel set, one inverse for u's gradient, and k's gradient reduced over the batch before
    its inverse (autograd through `fft_conv` pays a full complex transform for u's gradient). Computes in at least
    fp32; the output takes u's dtype. Non-finite inputs go through `fft_conv` (its masking) kernel set by kernel set.
    First-order gradients only (the backward is not itself differentiable).
    """
    _check_bank(u, k)
    L, Lk = u.shape[-1], k.shape[-1]
    if u.numel() == 0 or k.numel() == 0:
        return u.new_zeros(k.shape[0], *u.shape)
    if nf.maybe_bad(u, k):
        return torch.stack([fft_conv(u, km) for km in k.unbind(0)])
    work = torch.promote_types(torch.promote_types(u.dtype, k.dtype), torch.float32)
    return _FFTConvBank.apply(u.to(work), k.to(work), fft_size(L + Lk - 1)).to(u.dtype)


def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (a length the FFT handles fast)."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


class _FFTConvBank(torch.autograd.Function):
    """y[m] = irfft(rfft(u) rfft(k[m]))[:L]; gradients as correlations: du = irfft(sum_m G_m conj(K_m))[:L],
    dk = irfft(sum_b G conj(U))[:Lk], exact (no wrap-around) because n >= L + Lk - 1."""

    @staticmethod
    def forward(ctx, u, k, n):
        u_f, k_f = torch.fft.rfft(u, n=n), torch.fft.rfft(k, n=n)      # (B, D, F), (M, D, F)
        ctx.save_for_backward(u_f, k_f)
        ctx.sizes = u.shape[-1], k.shape[-1], n
        return torch.fft.irfft(u_f * k_f.unsqueeze(1), n=n)[..., :u.shape[-1]]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        u_f, k_f = ctx.saved_tensors
        L, Lk, n = ctx.sizes
        g_f = torch.fft.rfft(g, n=n)                                        # (M, B, D, F)
        du = dk = None
        if ctx.needs_input_grad[0]:
            k_c = k_f.conj().resolve_conj().unsqueeze(1)
            du_f = g_f[0] * k_c[0]
            for m in range(1, g_f.shape[0]):
                du_f = du_f.addcmul_(g_f[m], k_c[m])
            du = torch.fft.irfft(du_f, n=n)[..., :L]
        if ctx.needs_input_grad[1]:
            dk = torch.fft.irfft((g_f * u_f.conj()).sum(1), n=n)[..., :Lk]
        return du, dk, None


def fft_conv_bank_ref(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The oracle of `fft_conv_bank`: the direct convolution with each kernel set, stacked."""
    _check_bank(u, k)
    return torch.stack([fft_conv_ref(u, km) for km in k.unbind(0)]) if k.shape[0] else u.new_zeros(0, *u.shape)


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
