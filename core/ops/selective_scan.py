"""The selective scan of Mamba-1 with the layout and semantics of `mamba_ssm.selective_scan_fn`.

    delta = softplus(delta + delta_bias)              (each step optional)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t   = C_t . h_t + D * u_t,   y *= silu(z)

u, delta, z: (batch, dim, L). A: (dim, N). B, C: (dim, N) time-invariant, (batch, N, L) input-dependent or
(batch, G, N, L) grouped (channel d uses group d // (dim / G)). D, delta_bias: (dim,).
States are fp32 (fp64 for fp64 inputs); y takes u's dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..dtypes import state_dtype
from ._checks import check_same_device, check_tensor
from ._dispatch import describe, select

CHUNK_SIZE = 64  # time steps per chunk of the fast PyTorch path (bounds its working memory)


def per_channel(M: torch.Tensor, dim: int) -> torch.Tensor:
    """B or C as (dim, N) or (batch, dim, N, L): groups repeated to their channels."""
    if M.dim() == 2:
        return M
    if M.dim() == 3:
        M = M.unsqueeze(1)
    return M.repeat_interleave(dim // M.shape[1], dim=1)


def prepare_delta(delta, delta_bias, delta_softplus, dtype):
    """delta (batch, dim, L) + delta_bias (dim,), softplus, in `dtype`."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y, u, D, z, out_dtype):
    """Skip connection and gate, shared by every implementation."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u.to(y.dtype)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, initial_state=None):
    """The definition: a sequential loop over time (unbound once), fp64-capable. The oracle for every backend."""
    dtype = state_dtype(u)
    batch, dim, L = u.shape
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A, Bc, Cc = A.to(dtype), per_channel(B, dim).to(dtype), per_channel(C, dim).to(dtype)
    dA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))  # (batch, dim, L, N)
    du = delta * u.to(dtype)
    dBu = du.unsqueeze(-1) * (Bc.unsqueeze(1) if Bc.dim() == 2 else Bc.transpose(-1, -2))
    C_steps = [Cc] * L if Cc.dim() == 2 else Cc.unbind(-1)
    h = (torch.zeros(batch, dim, A.shape[1], dtype=dtype, device=u.device) if initial_state is None
         else initial_state.to(dtype))
    ys = [h.new_empty(batch, dim)] if L == 0 else []  # L = 0: an empty y, the initial state
    for dA_t, dBu_t, C_t in zip(dA.unbind(2), dBu.unbind(2), C_steps):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    y = _finish(torch.stack(ys, dim=-1)[..., :L], u, D, z, u.dtype)
    return (y, h) if return_last_state else y


class _ChunkedScan(torch.autograd.Function):
    """y_t = C_t . h_t with h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t, in chunks of time.

    Forward keeps one state per chunk boundary; backward recomputes each chunk's states from its boundary
    and runs the reverse scan gh_t = C_t gy_t + exp(delta_{t+1} A) gh_{t+1}. Inside a chunk, each time step
    is one fused in-place op on a contiguous (batch, dim, N) slice; everything else is vectorised.
    """

    @staticmethod
    def forward(ctx, delta, u, A, B, C, h0, chunk_size):
        batch, dim, L = u.shape
        h = h0.clone()
        starts = list(range(0, L, chunk_size))
        boundaries = []
        y = u.new_empty(batch, dim, L)
        for t0 in starts:
            t1 = min(t0 + chunk_size, L)
            boundaries.append(h)
            a, b, Cx = _chunk_terms(delta, u, A, B, C, t0, t1)
            H = _chunk_states(a, b, h)
            h = H[-1].clone()  # a copy, so the chunk's buffer is freed
            y[:, :, t0:t1] = _contract_c(H, Cx).permute(1, 2, 0)
        ctx.save_for_backward(delta, u, A, B, C, torch.stack(boundaries))
        ctx.chunk_size = chunk_size
        return y, h.clone()

    @staticmethod
    def backward(ctx, gy, gh_last):
        delta, u, A, B, C, boundaries = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        L = u.shape[-1]
        gdelta, gu = torch.zeros_like(delta), torch.zeros_like(u)
        gA, gB, gC = torch.zeros_like(A), torch.zeros_like(B), torch.zeros_like(C)
        carry = gh_last.clone() if gh_last is not None else torch.zeros_like(boundaries[0])
        gy = gy if gy is not None else torch.zeros_like(u)
        starts = list(range(0, L, chunk_size))
        for k in reversed(range(len(starts))):
            t0 = starts[k]
            t1 = min(t0 + chunk_size, L)
            a, b, Cx = _chunk_terms(delta, u, A, B, C, t0, t1)
            H = _chunk_states(a, b, boundaries[k])
            H_prev = torch.cat([boundaries[k].unsqueeze(0), H[:-1]])
            gy_c = gy[:, :, t0:t1].permute(2, 0, 1).contiguous()     # (T, batch, dim), time-major
            GH = gy_c.unsqueeze(-1) * Cx                              # C_t gy_t, then the reverse scan in place
            GH[-1] += carry
            for t in range(t1 - t0 - 2, -1, -1):
                torch.addcmul(GH[t], a[t + 1], GH[t + 1], out=GH[t])
            carry = a[0] * GH[0]
            g_logdecay = GH * H_prev * a                              # grad of delta_t * A
            d_c = delta[:, :, t0:t1].permute(2, 0, 1).contiguous()
            u_c = u[:, :, t0:t1].permute(2, 0, 1).contiguous()
            Bx = _expand(B, u.shape[1], t0, t1)
            g_du = (GH * Bx).sum(-1)                                  # grad of delta_t * u_t
            gdelta[:, :, t0:t1] = ((g_logdecay * A).sum(-1) + g_du * u_c).permute(1, 2, 0)
            gu[:, :, t0:t1] = (g_du * d_c).permute(1, 2, 0)
            gA += (g_logdecay * d_c.unsqueeze(-1)).sum((0, 1))
            _accumulate_bc(gB, GH, d_c * u_c, t0, t1)
            _accumulate_bc(gC, H, gy_c, t0, t1)
        return gdelta, gu, gA, gB, gC, carry, None


def _expand(M, dim, t0, t1):
    """B or C for steps [t0, t1) broadcastable to (T, batch, dim, N); M is (dim, N) or (batch, G, N, L)."""
    if M.dim() == 2:
        return M
    M = M[..., t0:t1].permute(3, 0, 1, 2)                             # (T, batch, G, N)
    return M if M.shape[2] == 1 else M.repeat_interleave(dim // M.shape[2], dim=2)  # one group broadcasts


def _accumulate_bc(gM, X, w, t0, t1):
    """Add sum_d X * w (X (T, batch, dim, N), w (T, batch, dim)) into the gradient of B or C in its own layout,
    as a contraction over the channels of each group (no (T, batch, dim, N) product is materialised)."""
    if gM.dim() == 2:
        gM += X.mul(w.unsqueeze(-1)).sum((0, 1))
        return
    T, batch, dim, N = X.shape
    G = gM.shape[1]
    g = torch.einsum("tbgkn,tbgk->bgnt", X.reshape(T, batch, G, dim // G, N), w.reshape(T, batch, G, dim // G))
    gM[..., t0:t1] += g


def _contract_c(H, Cx):
    """y_t = C_t . h_t for a chunk: H (T, batch, dim, N) with C (dim, N) or (T, batch, 1|dim, N), as a batched
    matrix product where C is shared by the channels (no (T, batch, dim, N) product is materialised)."""
    if Cx.dim() == 4 and Cx.shape[2] == 1:
        return torch.matmul(H, Cx.transpose(-1, -2)).squeeze(-1)
    return torch.einsum("tbdn,...dn->tbd", H, Cx) if Cx.dim() == 2 else (H * Cx).sum(-1)


def _chunk_terms(delta, u, A, B, C, t0, t1):
    """Decays a = exp(delta A), inputs b = delta u B and C for steps [t0, t1), each (T, batch, dim, N)."""
    d_c = delta[:, :, t0:t1].permute(2, 0, 1).contiguous().unsqueeze(-1)
    u_c = u[:, :, t0:t1].permute(2, 0, 1).contiguous().unsqueeze(-1)
    dim = u.shape[1]
    a = torch.mul(d_c, A).exp_()
    b = (d_c * u_c) * _expand(B, dim, t0, t1)
    return a, b.contiguous(), _expand(C, dim, t0, t1)


def _chunk_states(a, b, h):
    """States h_t = a_t h_{t-1} + b_t for one chunk, starting from h; written over b."""
    prev = h
    for t in range(b.shape[0]):
        torch.addcmul(b[t], a[t], prev, out=b[t])
        prev = b[t]
    return b


def _scan_torch(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                return_last_state=False, initial_state=None, chunk_size=CHUNK_SIZE):
    """The fast PyTorch path: the chunked autograd Function above plus the elementwise parts."""
    dtype = state_dtype(u)
    batch, dim, L = u.shape
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    h0 = (torch.zeros(batch, dim, A.shape[1], dtype=dtype, device=u.device) if initial_state is None
          else initial_state.to(dtype))
    B, C = (M.to(dtype) if M.dim() != 3 else M.to(dtype).unsqueeze(1) for M in (B, C))
    if L == 0:  # nothing to scan: an empty y, the initial state
        y, h = u.new_zeros(batch, dim, 0, dtype=dtype), h0
    else:
        y, h = _ChunkedScan.apply(delta, u.to(dtype), A.to(dtype), B, C, h0, chunk_size)
    y = _finish(y, u, D, z, u.dtype)
    return (y, h) if return_last_state else y


def _validate(u, delta, A, B, C, D, z, delta_bias, initial_state):
    s = check_tensor("u", u, ("batch", "dim", "L"))
    check_tensor("delta", delta, ("batch", "dim", "L"), s)
    check_tensor("A", A, ("dim", "N"), s)
    for name, M in (("B", B), ("C", C)):
        layouts = {2: ("dim", "N"), 3: ("batch", "N", "L"), 4: ("batch", "G", "N", "L")}
        if not isinstance(M, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (dim, N), (batch, N, L) or (batch, G, N, L),"
                            f" got {type(M).__name__}")
        if M.dim() not in layouts:
            raise ValueError(f"{name} must have shape (dim, N), (batch, N, L) or (batch, G, N, L), "
                             f"got {tuple(M.shape)}")
        if M.dim() == 4:
            g = M.shape[1]
            if g == 0 or s["dim"] % g:
                raise ValueError(f"{name} has {g} groups, which must divide dim={s['dim']}")
            if "G" in s and s["G"] != g:
                raise ValueError(f"B and C must have the same number of groups, got {s['G']} and {g}")
        check_tensor(name, M, layouts[M.dim()], s)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None:
            check_tensor(name, t, ("dim",), s)
    if z is not None:
        check_tensor("z", z, ("batch", "dim", "L"), s)
    if initial_state is not None:
        check_tensor("initial_state", initial_state, ("batch", "dim", "N"), s)
    return check_same_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                             initial_state=initial_state)


def selective_scan(u, delta, A, B, C, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False, initial_state: Optional[torch.Tensor] = None,
                   backend: str = "auto"):
    """Selective scan (see module docstring). Returns y, or (y, last_state) with `return_last_state`.

    backend: "auto" (fastest present for the device), "torch" (chunked PyTorch), "cpp", "triton", "mamba_ssm".
    `initial_state` (batch, dim, N) continues a scan: scanning [x1; x2] equals scanning x2 from x1's last state.
    """
    device = _validate(u, delta, A, B, C, D, z, delta_bias, initial_state)
    kwargs = dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state, initial_state=initial_state)
    call = describe(u.dtype, kwargs, ("D", "z", "delta_bias", "delta_softplus", "return_last_state", "initial_state"),
                    "return_last_state", (u, delta, A, B, C, D, z, delta_bias, initial_state))
    impl = select("selective_scan", backend, device, _scan_torch, call)
    if u.shape[-1] == 0:  # L = 0: an empty y and the initial state, the same from every backend
        impl = _scan_torch
    return impl(**kwargs)


def _validate_step(state, x, dt, A, B, C, D, z, dt_bias):
    s = check_tensor("x", x, ("batch", "dim"))
    check_tensor("state", state, ("batch", "dim", "N"), s)
    check_tensor("dt", dt, ("batch", "dim"), s)
    check_tensor("A", A, ("dim", "N"), s)
    for name, M in (("B", B), ("C", C)):
        check_tensor(name, M, ("batch", "N") if isinstance(M, torch.Tensor) and M.dim() == 2 else ("batch", "G", "N"),
                     s)
    if B.dim() == 3 and (s["G"] == 0 or s["dim"] % s["G"]):
        raise ValueError(f"B and C have G={s['G']} groups, which must divide dim={s['dim']}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None:
            check_tensor(name, t, ("dim",), s)
    if z is not None:
        check_tensor("z", z, ("batch", "dim"), s)
    check_same_device(state=state, x=x, dt=dt, A=A, B=B, C=C, D=D, z=z, dt_bias=dt_bias)


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """The oracle of one decoding step: `selective_scan_ref` over a length-1 sequence from `state`."""
    _validate_step(state, x, dt, A, B, C, D, z, dt_bias)
    t = lambda M: None if M is None else M.unsqueeze(-1)
    y, h = selective_scan_ref(t(x), t(dt), A, t(B), t(C), D, t(z), dt_bias, dt_softplus, True, state)
    return y[..., 0], h


def selective_state_update(state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor,
                           B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor] = None,
                           z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                           dt_softplus: bool = False):
    """One step of the selective scan (mamba_ssm's `selective_state_update`, functional): returns (y, new state).

    state (batch, dim, N); x, dt, z (batch, dim); A (dim, N); B, C (batch, N) or (batch, G, N); D, dt_bias (dim,).
    The new state is fp32 (fp64 for fp64 x), y takes x's dtype; scanning a sequence step by step equals
    `selective_scan` with `initial_state`.
    """
    _validate_step(state, x, dt, A, B, C, D, z, dt_bias)
    f = state_dtype(x)
    dim = x.shape[1]
    dt = prepare_delta(dt.unsqueeze(-1), dt_bias, dt_softplus, f)[..., 0]
    Bc, Cc = (M.to(f).unsqueeze(1) if M.dim() == 2 else M.to(f).repeat_interleave(dim // M.shape[1], dim=1)
              for M in (B, C))
    h = torch.exp(dt.unsqueeze(-1) * A.to(f)) * state.to(f) + (dt * x.to(f)).unsqueeze(-1) * Bc
    y = (h * Cc).sum(-1, keepdim=True)
    return _finish(y, x.unsqueeze(-1), D, None if z is None else z.unsqueeze(-1), x.dtype)[..., 0], h
