"""SSD, the scan of Mamba-2, with the layout and semantics of `mamba_ssm`'s `mamba_chunk_scan_combined`.

    dt  = clamp(softplus(dt + dt_bias), *dt_limit)        (each step optional)
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T            (per head: h (P, N), A a negative scalar)
    y_t = h_t C_t + D x_t,   y *= silu(z)

x, z: (batch, L, H, P). dt: (batch, L, H). A: (H,). B, C: (batch, L, G, N), head h reads group h // (H / G).
D: (H,) or (H, P). initial_states and final states: (batch, H, P, N). `seq_idx` (batch, L) integers, non-decreasing,
marks sequences packed into one row: no state crosses a change of seq_idx; `initial_states` continue the
sequence at position 0 and the final states are those of the last one. States are fp32 (fp64 for fp64 x);
y takes x's dtype.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import nonfinite as nf
from ..dtypes import state_dtype
from ._checks import check_same_device, check_tensor
from ._dispatch import describe, select

DEFAULT_DT_LIMIT = (0.0, float("inf"))


def prepare_dt(dt, dt_bias=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, dtype=torch.float32):
    """dt + dt_bias, softplus (linear above 20, as mamba_ssm) and the dt_limit clamp, in `dtype`."""
    dt = dt.to(dtype)
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = torch.where(dt <= 20.0, F.softplus(dt), dt)
    if tuple(dt_limit) != DEFAULT_DT_LIMIT:
        dt = dt.clamp(dt_limit[0], dt_limit[1])
    return dt


def _resets(seq_idx: torch.Tensor) -> torch.Tensor:
    """(batch, L) bool: True where a new packed sequence starts (never at position 0)."""
    new = torch.zeros_like(seq_idx, dtype=torch.bool)
    new[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    return new


def skip_and_gate(y, x, D, z, out_dtype):
    """Skip connection D x and gate silu(z), shared by every implementation."""
    if D is not None:
        Df = D.to(y.dtype)
        y = y + x.to(y.dtype) * (Df[:, None] if Df.dim() == 1 else Df)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def ssd_ref(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT,
            initial_states=None, seq_idx=None, return_final_states=False):
    """The definition: the recurrence as a sequential loop over time (unbound once), fp64-capable. The oracle."""
    _validate(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_states, seq_idx)
    f = state_dtype(x)
    batch, L, H, P = x.shape
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, f)
    reps = H // B.shape[2]
    Bh, Ch = (M.to(f).repeat_interleave(reps, dim=2) for M in (B, C))  # (batch, L, H, N)
    decay = torch.exp(dt * A.to(f))
    # A new packed sequence starts from a zero state: a select, so that a NaN state does not leak into it.
    resets = (_resets(seq_idx) if seq_idx is not None else torch.zeros(batch, L, dtype=torch.bool,
                                                                       device=x.device))
    h = (torch.zeros(batch, H, P, B.shape[-1], dtype=f, device=x.device) if initial_states is None
         else initial_states.to(f))
    xdt = x.to(f) * dt.unsqueeze(-1)
    ys = [x.new_empty(batch, H, P, dtype=f)] if L == 0 else []  # L = 0: an empty y, the initial state
    for xdt_t, a_t, B_t, C_t, r_t in zip(xdt.unbind(1), decay.unbind(1), Bh.unbind(1), Ch.unbind(1),
                                         resets.unbind(1)):
        h = torch.where(r_t[:, None, None, None], 0.0, a_t[:, :, None, None] * h)
        h = h + xdt_t.unsqueeze(-1) * B_t.unsqueeze(2)
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C_t))
    y = skip_and_gate(torch.stack(ys, dim=1)[:, :L], x, D, z, x.dtype)
    return (y, h) if return_final_states else y


def segsum(a: torch.Tensor) -> torch.Tensor:
    """Stable segment sums: a (..., T) -> (..., T, T) with [i, j] = a_{j+1} + ... + a_i for i >= j, -inf above.

    Each entry is a sum of its own terms (masked cumsum), never a difference of two long cumsums, so no
    precision is lost and, as every a_k <= 0, every exponent is <= 0; -inf entries (a reset) give exp = 0.
    """
    T = a.shape[-1]
    ones = torch.ones(T, T, dtype=torch.bool, device=a.device)
    terms = a.unsqueeze(-2).expand(*a.shape[:-1], T, T).transpose(-1, -2)  # [k, j] = a_k
    sums = terms.masked_fill(~torch.tril(ones, -1), 0.0).cumsum(-2)
    return sums.masked_fill(~torch.tril(ones), float("-inf"))


def _ssd_chunked(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                 dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, return_final_states=False):
    """The chunked matrix ("state space duality") form: quadratic inside chunks, a state passed between them.

    Per chunk of Q steps: y = (C B^T * exp(segsum(dt A))) (x dt)  [the diagonal block]  plus the incoming
    state read out through C with decay exp(cumsum(dt A)). Chunk states are passed on by a loop over chunks.
    """
    f = state_dtype(x)
    batch, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    R = H // G
    if L == 0:  # nothing to scan: the empty output and the initial state
        return ssd_ref(x, dt, A, B, C, D, z, dt_bias, dt_softplus, dt_limit, initial_states, seq_idx,
                       return_final_states)
    Q = min(chunk_size, L)
    nc = -(-L // Q)
    pad = nc * Q - L
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, f)
    a = dt * A.to(f)                                                    # (batch, L, H) log-decays, <= 0
    xdt = x.to(f) * dt.unsqueeze(-1)
    Bf, Cf = B.to(f), C.to(f)
    h = (torch.zeros(batch, H, P, N, dtype=f, device=x.device) if initial_states is None
         else initial_states.to(f))
    # Non-finite entries are computed as zeros and put back as NaN where the recurrence carries them (_nonfinite).
    resets = None if seq_idx is None else _resets(seq_idx)
    masked = nf.maybe_bad(xdt, a, Bf, Cf, h)
    if masked:
        bads = nf.bad(xdt), torch.isnan(a), nf.bad(Bf), nf.bad(Cf), nf.bad(h)
        xdt, a, Bf, Cf, h = (nf.clean(t, m) for t, m in zip((xdt, a, Bf, Cf, h), bads))
    if resets is not None:
        a = a.masked_fill(resets.unsqueeze(-1), float("-inf"))
    if pad:  # zero steps: no input, decay 1; they change neither y[:L] nor the final state
        a, xdt = F.pad(a, (0, 0, 0, pad)), F.pad(xdt, (0, 0, 0, 0, 0, pad))
        Bf, Cf = F.pad(Bf, (0, 0, 0, 0, 0, pad)), F.pad(Cf, (0, 0, 0, 0, 0, pad))
    xdt = xdt.view(batch, nc, Q, G, R, P)
    Bf, Cf = Bf.view(batch, nc, Q, G, N), Cf.view(batch, nc, Q, G, N)
    a = a.view(batch, nc, Q, G, R).permute(0, 1, 3, 4, 2)              # (batch, nc, G, R, Q)

    seg = segsum(a)                                                     # (batch, nc, G, R, Q, Q)
    cs = a.cumsum(-1)                                                   # decay from the chunk start
    CB = torch.einsum("bcign,bcjgn->bcgij", Cf, Bf)
    y = torch.einsum("bcgrij,bcjgrp->bcigrp", CB.unsqueeze(3) * torch.exp(seg), xdt)

    to_end = torch.exp(seg[..., -1, :]).permute(0, 1, 4, 2, 3).unsqueeze(-1)   # (batch, nc, Q, G, R, 1)
    states = torch.einsum("bcjgn,bcjgrp->bcgrpn", Bf, xdt * to_end)
    chunk_decay = torch.exp(cs[..., -1])                                # (batch, nc, G, R)
    h = h.view(batch, G, R, P, N)
    entering = []
    for s_c, d_c in zip(states.unbind(1), chunk_decay.unbind(1)):
        entering.append(h)
        h = d_c[..., None, None] * h + s_c
    entering = torch.stack(entering, dim=1)                             # (batch, nc, G, R, P, N)
    from_start = torch.exp(cs).permute(0, 1, 4, 2, 3).unsqueeze(-1)    # (batch, nc, Q, G, R, 1)
    y = y + torch.einsum("bcign,bcgrpn->bcigrp", Cf, entering) * from_start

    y, h = y.reshape(batch, nc * Q, H, P)[:, :L], h.reshape(batch, H, P, N)
    if masked:
        y, h = _poison_nonfinite(y, h, bads, resets, R)
    y = skip_and_gate(y, x, D, z, x.dtype)
    return (y, h) if return_final_states else y


def _poison_nonfinite(y, h, bads, resets, R):
    """NaN in y (batch, L, H, P) and the final state h (batch, H, P, N) wherever the recurrence carries a non-finite
    x dt, log-decay, B, C or initial state, within its packed sequence (bads as computed in `_ssd_chunked`)."""
    bad_xdt, bad_a, bad_B, bad_C, bad_h0 = bads
    batch, L = y.shape[:2]
    starts = nf.segment_starts(resets, L, y.device)
    to_heads = functools.partial(torch.repeat_interleave, repeats=R, dim=2)  # group axis -> head axis
    per_head = nf.reach(bad_a, starts) | to_heads(nf.reach(bad_B.any(-1), starts) | bad_C.any(-1))
    mask = nf.reach(bad_xdt, starts) | per_head.unsqueeze(-1)
    first = nf.in_first_segment(resets)
    from_h0 = bad_h0.any(-1).unsqueeze(1)                                # (batch, 1, H, P)
    mask = mask | (from_h0 if first is None else from_h0 & first[:, :, None, None])
    last = nf.in_last_segment(starts)

    def in_last(m):  # any over the last packed sequence of each row
        return (m if last is None else m & last.view(batch, L, *(1,) * (m.dim() - 2))).any(1)

    final = (in_last(bad_xdt).unsqueeze(-1) | in_last(bad_a)[..., None, None]
             | to_heads(in_last(bad_B), dim=1)[:, :, None])
    final = final | (bad_h0 if resets is None else bad_h0 & ~resets.any(1)[:, None, None, None])
    return nf.poison(y, mask), nf.poison(h, final)


def _check_heads(s: dict, D, dt_bias) -> None:
    """G must divide H; D is (H,) or (H, P) and dt_bias (H,) when given (s: the sizes named so far)."""
    if s["G"] == 0 or s["H"] % s["G"]:
        raise ValueError(f"B and C have G={s['G']} groups, which must divide the H={s['H']} heads of x")
    if D is not None:
        check_tensor("D", D, ("H",) if D.dim() == 1 else ("H", "P"), s)
    if dt_bias is not None:
        check_tensor("dt_bias", dt_bias, ("H",), s)


def validate_heads(x, dt, A, B, C, D, dt_bias) -> dict:
    """Shapes shared by the causal and non-causal SSD: x (batch, L, H, P), dt (batch, L, H), A (H,),
    B/C (batch, L, G, N) with G dividing H, D (H,) or (H, P), dt_bias (H,). Returns the bound sizes."""
    s = check_tensor("x", x, ("batch", "L", "H", "P"))
    check_tensor("dt", dt, ("batch", "L", "H"), s)
    check_tensor("A", A, ("H",), s)
    check_tensor("B", B, ("batch", "L", "G", "N"), s)
    check_tensor("C", C, ("batch", "L", "G", "N"), s)
    _check_heads(s, D, dt_bias)
    return s


def _validate(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_states, seq_idx, chunk_size=1):
    s = validate_heads(x, dt, A, B, C, D, dt_bias)
    if z is not None:
        check_tensor("z", z, ("batch", "L", "H", "P"), s)
    if initial_states is not None:
        check_tensor("initial_states", initial_states, ("batch", "H", "P", "N"), s)
    if seq_idx is not None:
        check_tensor("seq_idx", seq_idx, ("batch", "L"), s, floating=False)
        if seq_idx.is_floating_point() or seq_idx.is_complex():
            raise TypeError(f"seq_idx must be an integer tensor, got dtype {seq_idx.dtype}")
        if (seq_idx[:, 1:] < seq_idx[:, :-1]).any():
            raise ValueError("seq_idx must be non-decreasing along L (packed sequences in order)")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    lo, hi = dt_limit
    if not 0.0 <= lo <= hi:
        raise ValueError(f"dt_limit must be (low, high) with 0 <= low <= high, got {tuple(dt_limit)}")
    if A.device.type == "cpu" and (A > 0).any():  # host-side only: on an accelerator it would sync every call
        raise ValueError(f"A must be <= 0 (decay exp(dt A) <= 1), got max {A.max().item():g}")
    return check_same_device(x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias,
                             initial_states=initial_states, seq_idx=seq_idx)


def _check_dt_nonnegative(dt, dt_bias, dt_softplus, dt_limit):
    """Only raw dt (no softplus, no limit) can be negative; a negative step would grow the state."""
    if dt_softplus or tuple(dt_limit) != DEFAULT_DT_LIMIT:
        return
    d = dt if dt_bias is None else dt + dt_bias
    if (d < 0).any():
        raise ValueError(f"dt (+ dt_bias) must be >= 0 without dt_softplus, got min {d.min().item():g};"
                         " pass dt_softplus=True or a dt_limit")


def ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
        chunk_size: int = 64, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
        dt_bias: Optional[torch.Tensor] = None, dt_softplus: bool = False,
        dt_limit: Tuple[float, float] = DEFAULT_DT_LIMIT, initial_states: Optional[torch.Tensor] = None,
        seq_idx: Optional[torch.Tensor] = None, return_final_states: bool = False, backend: str = "auto"):
    """SSD (see module docstring). Returns y, or (y, final_states) with `return_final_states`.

    chunk_size: steps per chunk of the matrix form (any positive int; 32-64 is fastest on CPU, mamba_ssm
    needs a power of two). A must be <= 0: checked for CPU tensors; on an accelerator the check would synchronise
    every call, so there it is the caller's contract (the layers build A = -exp(A_log)).
    backend: "auto", "torch" (chunked PyTorch), "triton" (ssmkit's Triton kernels; CUDA, or
    CPU under TRITON_INTERPRET=1) or "mamba_ssm" (its Triton kernels, CUDA).
    """
    device = _validate(x, dt, A, B, C, D, z, dt_bias, dt_limit, initial_states, seq_idx, chunk_size)
    _check_dt_nonnegative(dt, dt_bias, dt_softplus, dt_limit)
    kwargs = dict(x=x, dt=dt, A=A, B=B, C=C, chunk_size=chunk_size, D=D, z=z, dt_bias=dt_bias,
                  initial_states=initial_states, seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=tuple(dt_limit),
                  return_final_states=return_final_states)
    call = describe(x.dtype, kwargs, ("D", "z", "dt_bias", "dt_softplus", "dt_limit", "initial_states", "seq_idx",
                                      "return_final_states"),
                    "return_final_states", (x, dt, A, B, C, D, z, dt_bias, initial_states))
    impl = select("ssd", backend, device, _ssd_chunked, call)
    if x.shape[1] == 0:  # L = 0: an empty y and the initial states, the same from every backend
        impl = _ssd_chunked
    if getattr(impl, "takes_backward_impl", False):  # the Triton SSD differentiates by re-running this chunked form
        impl = functools.partial(impl, backward_impl=_ssd_chunked)
    if impl is not _ssd_chunked and nf.maybe_bad(x, dt, dt_bias, A, B, C, initial_states):
        return _around_nonfinite(impl, **kwargs)  # _ssd_chunked does this inside; the kernels get clean inputs
    return impl(**kwargs)


def _around_nonfinite(impl, x, dt, A, B, C, dt_bias, dt_softplus, dt_limit, initial_states, seq_idx,
                      return_final_states, **rest):
    """Run an accelerated SSD on inputs whose non-finite entries are zeroed (dt prepared here, in the state dtype)
    and put NaN back where the recurrence carries them, as `_ssd_chunked` does: the kernels' chunk matrices would
    otherwise send a NaN back in time and across packed sequences. (On an accelerator every call comes here:
    asking whether an input is finite would synchronise the device.)"""
    f = state_dtype(x)
    batch, L, H, P = x.shape
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, f)
    h0 = (initial_states if initial_states is not None
          else torch.zeros(batch, H, P, B.shape[-1], dtype=f, device=x.device))
    bad_x, bad_dt = nf.bad(x), nf.bad(dt)
    bads = (bad_x | bad_dt.unsqueeze(-1), torch.isnan(dt * A.to(f)) | bad_dt, nf.bad(B), nf.bad(C), nf.bad(h0))
    out = impl(x=nf.clean(x, bad_x), dt=nf.clean(dt, bads[1]), A=A, B=nf.clean(B, bads[2]), C=nf.clean(C, bads[3]),
               dt_bias=None, dt_softplus=False, dt_limit=DEFAULT_DT_LIMIT, seq_idx=seq_idx,
               initial_states=None if initial_states is None else nf.clean(initial_states, bads[4]),
               return_final_states=True, **rest)
    y, h = _poison_nonfinite(*out, bads, None if seq_idx is None else _resets(seq_idx), H // B.shape[2])
    return (y, h) if return_final_states else y


def _validate_step(state, x, dt, A, B, C, D, z, dt_bias, dt_limit):
    s = check_tensor("x", x, ("batch", "H", "P"))
    check_tensor("state", state, ("batch", "H", "P", "N"), s)
    check_tensor("dt", dt, ("batch", "H"), s)
    check_tensor("A", A, ("H",), s)
    check_tensor("B", B, ("batch", "G", "N"), s)
    check_tensor("C", C, ("batch", "G", "N"), s)
    _check_heads(s, D, dt_bias)
    if z is not None:
        check_tensor("z", z, ("batch", "H", "P"), s)
    lo, hi = dt_limit
    if not 0.0 <= lo <= hi:
        raise ValueError(f"dt_limit must be (low, high) with 0 <= low <= high, got {tuple(dt_limit)}")
    check_same_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)


def ssd_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                         dt_limit=DEFAULT_DT_LIMIT):
    """The oracle of one decoding step: `ssd_ref` over a length-1 sequence from `state`."""
    _validate_step(state, x, dt, A, B, C, D, z, dt_bias, dt_limit)
    t = lambda M: None if M is None else M.unsqueeze(1)
    y, h = ssd_ref(t(x), t(dt), A, t(B), t(C), D, t(z), dt_bias, dt_softplus, dt_limit, initial_states=state,
                   return_final_states=True)
    return y[:, 0], h


def ssd_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                     C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                     dt_bias: Optional[torch.Tensor] = None, dt_softplus: bool = False,
                     dt_limit: Tuple[float, float] = DEFAULT_DT_LIMIT):
    """One SSD step (mamba_ssm's multi-head `selective_state_update`, functional): returns (y, new state).

    state (batch, H, P, N); x, z (batch, H, P); dt (batch, H); A, dt_bias (H,); B, C (batch, G, N); D (H,) or
    (H, P). The new state is fp32 (fp64 for fp64 x), y takes x's dtype; stepping through a sequence equals `ssd`
    with `initial_states`.
    """
    _validate_step(state, x, dt, A, B, C, D, z, dt_bias, dt_limit)
    f = state_dtype(x)
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit, f)                              # (batch, H)
    reps = x.shape[1] // B.shape[1]
    Bh, Ch = (M.to(f).repeat_interleave(reps, dim=1) for M in (B, C))                   # (batch, H, N)
    decay = torch.exp(dt * A.to(f))
    h = decay[..., None, None] * state.to(f) + (dt.unsqueeze(-1) * x.to(f)).unsqueeze(-1) * Bh.unsqueeze(2)
    y = torch.einsum("bhpn,bhn->bhp", h, Ch)
    return skip_and_gate(y, x, D, z, x.dtype), h
