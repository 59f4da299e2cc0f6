"""xLSTM cells (Beck et al. 2024): mLSTM (matrix memory; parallel, chunkwise and recurrent forms) and
sLSTM (scalar memory with a block-diagonal recurrent matrix; recurrent only).

mLSTM, per head, with k scaled by 1/sqrt(DH) and exponential input gate:
    C_t = sigma(f_t) C_{t-1} + exp(i_t) k_t v_t^T,  n_t = sigma(f_t) n_{t-1} + exp(i_t) k_t,
    h_t = C_t^T q_t / max(|n_t . q_t|, 1).
Stabilised with m_t = max(log sigma(f_t) + m_{t-1}, i_t): the state holds C e^{-m}, n e^{-m}, so no exp
overflows and h is unchanged (h does not depend on m). The zero state is C = 0, n = 0, m = 0.
Layouts follow xLSTM: q, k (B, NH, S, DH), v (B, NH, S, DV), gate pre-activations i, f (B, NH, S);
state C (B, NH, DH, DV), n (B, NH, DH), m (B, NH), fp32 (fp64 for fp64 inputs). Outputs take q's dtype.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import nonfinite as nf
from ._checks import check_same_device, check_tensor

Tensor = torch.Tensor
State = Tuple[Tensor, ...]


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def _check_mlstm(q, k, v, i, f, state, time_axis=True):
    seq = ("S",) if time_axis else ()
    sizes = check_tensor("q", q, ("B", "NH") + seq + ("DH",))
    check_tensor("k", k, ("B", "NH") + seq + ("DH",), sizes)
    check_tensor("v", v, ("B", "NH") + seq + ("DV",), sizes)
    check_tensor("i", i, ("B", "NH") + seq, sizes)
    check_tensor("f", f, ("B", "NH") + seq, sizes)
    if state is not None:
        if not isinstance(state, (tuple, list)) or len(state) != 3:
            raise TypeError(f"mLSTM state must be a tuple (C, n, m), got {type(state).__name__}")
        check_tensor("C", state[0], ("B", "NH", "DH", "DV"), sizes)
        check_tensor("n", state[1], ("B", "NH", "DH"), sizes)
        check_tensor("m", state[2], ("B", "NH"), sizes)
    check_same_device(q=q, k=k, v=v, i=i, f=f)
    return sizes


def mlstm_zero_state(batch: int, heads: int, dh: int, dv: int, dtype=torch.float32, device=None) -> State:
    """The empty memory (C, n, m) = (0, 0, 0)."""
    return (torch.zeros(batch, heads, dh, dv, dtype=dtype, device=device),
            torch.zeros(batch, heads, dh, dtype=dtype, device=device),
            torch.zeros(batch, heads, dtype=dtype, device=device))


def _state(state, q, v, work):
    if state is None:
        B, NH, *_, DH = q.shape
        return mlstm_zero_state(B, NH, DH, v.shape[-1], work, q.device)
    return tuple(s.to(work) for s in state)


def mlstm_step(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, state: Optional[State] = None,
               eps: float = 1e-6) -> Tuple[Tensor, State]:
    """One recurrent step: q, k (B, NH, DH), v (B, NH, DV), i, f (B, NH) -> (h (B, NH, DV), (C, n, m))."""
    _check_mlstm(q, k, v, i, f, state, time_axis=False)
    work = _work_dtype(q)
    C, n, m = _state(state, q, v, work)
    q, k, v, i, f = (t.to(work) for t in (q, k, v, i, f))
    k = k / math.sqrt(q.shape[-1])
    log_f = F.logsigmoid(f)
    m_new = torch.maximum(log_f + m, i)
    f_gate = torch.exp(log_f + m - m_new)
    i_gate = torch.exp(i - m_new)
    C = f_gate[..., None, None] * C + i_gate[..., None, None] * k.unsqueeze(-1) * v.unsqueeze(-2)
    n = f_gate[..., None] * n + i_gate[..., None] * k
    num = torch.einsum("bhd,bhde->bhe", q, C)
    den = torch.maximum((q * n).sum(-1).abs(), torch.exp(-m_new)) + eps
    return num / den.unsqueeze(-1), (C, n, m_new)


def mlstm_ref(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, initial_state: Optional[State] = None,
              return_final_state: bool = False, eps: float = 1e-6):
    """The recurrent form: `mlstm_step` over time (the oracle). Returns h (B, NH, S, DV) [, (C, n, m)]."""
    _check_mlstm(q, k, v, i, f, initial_state)
    state = _state(initial_state, q, v, _work_dtype(q))
    hs = [v.new_empty(v.shape[:2] + v.shape[3:])] if q.shape[2] == 0 else []  # S = 0: empty h, the state
    for q_t, k_t, v_t, i_t, f_t in zip(*(t.unbind(2) for t in (q, k, v, i, f))):
        h_t, state = mlstm_step(q_t, k_t, v_t, i_t, f_t, state, eps)
        hs.append(h_t)
    h = torch.stack(hs, dim=2)[:, :, :q.shape[2]].to(q.dtype)
    return (h, state) if return_final_state else h


def _parallel(q, k, v, i, log_f, state, eps):
    """Stabilised quadratic form over one block of S steps, entering with `state`; returns h and the exit state."""
    C0, n0, m0 = state
    S, DH = q.shape[-2], q.shape[-1]
    b = torch.cumsum(log_f, dim=-1)  # log of the product of forget gates up to t
    # log_d[t, s] = sum_{s<r<=t} log_f_r + i_s, summed (not b_t - b_s) so that a gate of -inf gives -inf, not NaN.
    causal = torch.ones(S, S, dtype=torch.bool, device=q.device).tril()
    gates = log_f.unsqueeze(-1).expand(*log_f.shape, S).masked_fill(~causal.tril(-1), 0.0)  # [t, s] = log_f_t, t > s
    log_d = (torch.cumsum(gates, dim=-2) + i.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    carry = b + m0.unsqueeze(-1)  # weight (log) of the entering state at each t
    m = torch.maximum(log_d.amax(-1), carry)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(DH) * torch.exp(log_d - m.unsqueeze(-1))
    w0 = torch.exp(carry - m)
    num = scores @ v + w0.unsqueeze(-1) * (q @ C0)
    den = scores.sum(-1) + w0 * (q @ n0.unsqueeze(-1)).squeeze(-1)
    h = num / (torch.maximum(den.abs(), torch.exp(-m)) + eps).unsqueeze(-1)
    # Exit state: the last row of the same weights.
    last = log_d[..., -1, :]  # (B, NH, S)
    m_out = torch.maximum(last.amax(-1), b[..., -1] + m0)
    w = torch.exp(last - m_out.unsqueeze(-1)) / math.sqrt(DH)
    decay = torch.exp(b[..., -1] + m0 - m_out)
    C = decay[..., None, None] * C0 + (k * w.unsqueeze(-1)).transpose(-1, -2) @ v
    n = decay[..., None] * n0 + (k * w.unsqueeze(-1)).sum(-2)
    return h, (C, n, m_out)


def mlstm_parallel(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, initial_state: Optional[State] = None,
                   return_final_state: bool = False, eps: float = 1e-6):
    """The stabilised parallel form, O(S^2): h_t = sum_s (q_t.k_s) D_ts v_s / max(|sum_s (q_t.k_s) D_ts|, 1)
    with log D_ts = sum_{s<r<=t} log sigma(f_r) + i_s, each row stabilised by its max."""
    _check_mlstm(q, k, v, i, f, initial_state)
    work = _work_dtype(q)
    h, state = _without_nonfinite(lambda *a: _parallel(*a, eps), *(t.to(work) for t in (q, k, v, i)),
                                  F.logsigmoid(f.to(work)), _state(initial_state, q, v, work))
    h = h.to(q.dtype)
    return (h, state) if return_final_state else h


def mlstm_chunkwise(q: Tensor, k: Tensor, v: Tensor, i: Tensor, f: Tensor, chunk_size: int = 64,
                    initial_state: Optional[State] = None, return_final_state: bool = False, eps: float = 1e-6):
    """Chunkwise form: the parallel form inside chunks of `chunk_size` steps, the (C, n, m) state carried
    between them; O(S chunk_size) time, O(chunk_size^2) memory. The last chunk may be shorter."""
    _check_mlstm(q, k, v, i, f, initial_state)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    work = _work_dtype(q)

    def chunkwise(q, k, v, i, log_f, state):
        hs = []
        for q_c, k_c, v_c, i_c, lf_c in zip(*(t.split(chunk_size, dim=2) for t in (q, k, v, i, log_f))):
            h_c, state = _parallel(q_c, k_c, v_c, i_c, lf_c, state, eps)
            hs.append(h_c)
        return torch.cat(hs, dim=2), state

    h, state = _without_nonfinite(chunkwise, *(t.to(work) for t in (q, k, v, i)), F.logsigmoid(f.to(work)),
                                  _state(initial_state, q, v, work))
    h = h.to(q.dtype)
    return (h, state) if return_final_state else h


def _without_nonfinite(run, q, k, v, i, log_f, state):
    """`run(q, k, v, i, log_f, state) -> (h, state)` (a parallel form) on inputs whose non-finite entries are zeroed,
    then NaN wherever the recurrence (`mlstm_ref`) carries them: a bad q at its own step, a bad k, v (per value
    column), input gate (NaN or +inf; -inf means "no input" and is kept) or forget gate from its step on, a bad
    initial state at every step. The quadratic forms would otherwise multiply a future NaN by a zero weight and
    send it back in time (see `_nonfinite`). S = 0 gives an empty h and the initial state. A forget-gate
    pre-activation of -inf ("forget everything") is exact: the parallel form sums log-gates per segment."""
    if q.shape[2] == 0:
        return v.new_empty(v.shape), state
    if not nf.maybe_bad(q, k, v, i, log_f, *state):
        return run(q, k, v, i, log_f, state)
    C0, n0, m0 = state
    bad_q, bad_k, bad_v = nf.bad(q).any(-1), nf.bad(k), nf.bad(v)
    bad_gate = torch.isnan(i) | (i == float("inf")) | torch.isnan(log_f)
    # An infinite n only shrinks h towards 0 (the recurrence's own result) and -inf in m is an empty memory: kept.
    bad_C0, bad_n0, bad_m0 = nf.bad(C0), torch.isnan(n0), torch.isnan(m0) | (m0 == float("inf"))
    i = torch.where(bad_gate, 0.0, i)
    log_f = torch.where(torch.isnan(log_f), 0.0, log_f)
    q, k, v = nf.clean(q, nf.bad(q)), nf.clean(k, bad_k), nf.clean(v, bad_v)
    state = (nf.clean(C0, bad_C0), nf.clean(n0, bad_n0), torch.where(bad_m0, 0.0, m0))
    h, (C, n, m) = run(q, k, v, i, log_f, state)

    def from_step_on(mask):  # along S (axis 2)
        return mask.to(torch.int32).cumsum(2, dtype=torch.int32) > 0

    everything = bad_n0.any(-1) | bad_m0                                          # (B, NH)
    per_step = bad_q | from_step_on(bad_k.any(-1) | bad_gate) | everything[..., None]
    mask_h = per_step[..., None] | from_step_on(bad_v) | bad_C0.any(-2)[:, :, None, :]
    all_state = bad_gate.any(-1) | bad_m0
    k_rows, v_cols = bad_k.any(2), bad_v.any(2)                                   # (B, NH, DH), (B, NH, DV)
    mask_C = k_rows[..., None] | v_cols[..., None, :] | bad_C0 | all_state[..., None, None]
    mask_n = k_rows | bad_n0 | all_state[..., None]
    return nf.poison(h, mask_h), (nf.poison(C, mask_C), nf.poison(n, mask_n), nf.poison(m, all_state))


# ---------------------------------------------------------------------------------------------- sLSTM

def _check_slstm(wx, R, b, state):
    sizes = check_tensor("wx", wx, ("B", 4, "NH", "DH"))
    check_tensor("R", R, ("NH", "DH", 4, "DH"), sizes)
    check_tensor("b", b, ("NH", 4, "DH"), sizes)
    if state is not None:
        if not isinstance(state, (tuple, list)) or len(state) != 4:
            raise TypeError(f"sLSTM state must be a tuple (y, c, n, m), got {type(state).__name__}")
        for name, s in zip("ycnm", state):
            check_tensor(name, s, ("B", "NH", "DH"), sizes)
    check_same_device(wx=wx, R=R, b=b)


def slstm_zero_state(batch: int, heads: int, dh: int, dtype=torch.float32, device=None) -> State:
    """Empty sLSTM state (y, c, n, m), each (B, NH, DH)."""
    return tuple(torch.zeros(batch, heads, dh, dtype=dtype, device=device) for _ in range(4))


def slstm_step(wx: Tensor, R: Tensor, b: Tensor, state: Optional[State] = None) -> Tuple[Tensor, State]:
    """One sLSTM step. wx (B, 4, NH, DH): input pre-activations of gates (i, f, z, o); R (NH, DH, 4, DH):
    per-head recurrent weights on y_{t-1}; b (NH, 4, DH). Returns (y (B, NH, DH), (y, c, n, m)).

    Stabilised exponential gating: m_t = max(log sigma(f) + m_{t-1}, i) (m_t = i while n = 0),
    c_t = f' c + i' tanh z, n_t = f' n + i', y_t = sigma(o) c_t / n_t.
    """
    _check_slstm(wx, R, b, state)
    work = _work_dtype(wx)
    y, c, n, m = _state_s(state, wx, work)
    raw = wx.to(work) + torch.einsum("bhd,hdge->bghe", y, R.to(work)) + b.to(work).transpose(0, 1)
    i, f, z, o = raw.unbind(1)
    log_f = F.logsigmoid(f)
    m_new = torch.where(n == 0, i, torch.maximum(log_f + m, i))
    i_gate = torch.exp(i - m_new)
    f_gate = torch.exp(torch.clamp(log_f + m - m_new, max=0.0))
    c = f_gate * c + i_gate * torch.tanh(z)
    n = f_gate * n + i_gate
    y = torch.sigmoid(o) * c / n
    return y, (y, c, n, m_new)


def _state_s(state, wx, work):
    if state is None:
        return slstm_zero_state(wx.shape[0], wx.shape[2], wx.shape[3], work, wx.device)
    return tuple(s.to(work) for s in state)


def slstm(wx: Tensor, R: Tensor, b: Tensor, initial_state: Optional[State] = None,
          return_final_state: bool = False):
    """sLSTM over a sequence, wx (B, S, 4, NH, DH) -> y (B, S, NH, DH) [, final state]. Sequential by nature."""
    check_tensor("wx", wx, (None, None, 4, None, None))
    if wx.shape[1] == 0:  # S = 0: an empty y and the initial (or zero) state
        step_shape = wx.sum(1)  # (B, 4, NH, DH) zeros: the shape of one step
        _check_slstm(step_shape, R, b, initial_state)
        state = _state_s(initial_state, step_shape, _work_dtype(wx))
        y = wx.new_empty(wx.shape[0], 0, wx.shape[3], wx.shape[4])
        return (y, state) if return_final_state else y
    state = initial_state
    ys = []
    for wx_t in wx.unbind(1):
        y_t, state = slstm_step(wx_t, R, b, state)
        ys.append(y_t)
    y = torch.stack(ys, dim=1).to(wx.dtype)
    return (y, state) if return_final_state else y
