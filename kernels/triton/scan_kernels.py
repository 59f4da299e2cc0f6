"""Triton kernels of the selective scan (Mamba-1), forward and backward.

One program per (batch, block of BLOCK_D channels) walks the sequence in chunks of T steps. Inside a chunk the
recurrence h_t = a_t h_{t-1} + b_t (a_t = exp(dt_t A), b_t = dt_t u_t B_t) is a parallel associative scan over the
chunk's time axis on a (BLOCK_D, BLOCK_N, T) tile; the running state is carried from chunk to chunk in registers
(fp32, or fp64 when the inputs are fp64). The forward stores the state at the start of every chunk; the backward
walks the chunks in reverse, recomputes a chunk's states from its stored start state, and runs the adjoint
recurrence g_t = dy_t C_t + a_{t+1} g_{t+1} as a reverse associative scan (same combine: a reverse scan is a
forward scan on the flipped axis).

Masked time steps (past L) are identity elements (a = 1, b = 0), so the state after the chunk is always its last
column. The backward needs every block of channels inside one group of B / C (the launcher picks BLOCK_D so);
input-dependent dB / dC are summed over the block's channels and written per block, then summed per group.
"""
import triton
import triton.language as tl


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def softplus(x):
    # torch.nn.functional.softplus (threshold 20); log(1 + e) loses e below ~1e-7, so use e there.
    # The clamp is a select, not tl.minimum (which may return 20 for a NaN x): softplus(NaN) stays NaN.
    e = tl.exp(tl.where(x > 20.0, 20.0, x))
    return tl.where(x > 20.0, x, tl.where(x < -15.0, e, tl.log(1.0 + e)))


@triton.jit
def softplus_grad(x):
    e = tl.exp(tl.where(x > 20.0, 20.0, x))
    return tl.where(x > 20.0, 1.0, e / (e + 1.0))


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _load_bc(ptr, pid_b, offs_d, offs_n, t, mask_d, mask_n, mask_t, dpg, s_b, s_g, s_n, s_l, N,
             VAR: tl.constexpr, ACC: tl.constexpr):
    """B or C for a chunk: (BLOCK_D, BLOCK_N, T) when input-dependent, else (BLOCK_D, BLOCK_N, 1)."""
    if VAR:
        grp = offs_d // dpg
        p = ptr + pid_b * s_b + grp[:, None, None] * s_g + offs_n[None, :, None] * s_n + t[None, None, :] * s_l
        m = mask_d[:, None, None] & mask_n[None, :, None] & mask_t[None, None, :]
        x = tl.load(p, mask=m, other=0.0).to(ACC)
    else:
        p = ptr + offs_d[:, None] * N + offs_n[None, :]
        x = tl.load(p, mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(ACC)
        x = x[:, :, None]
    return x


@triton.jit
def _dt_chunk(delta_ptr, row, t, m_dt, bias, L, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
              ACC: tl.constexpr):
    raw = tl.load(delta_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
    if HAS_BIAS:
        raw = raw + bias[:, None]
    if SOFTPLUS:
        dt = softplus(raw)
    else:
        dt = raw
    dt = tl.where(m_dt, dt, 0.0)
    return raw, dt


@triton.jit
def selective_scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr,
    out_ptr, last_ptr, states_ptr,
    dim, L, N, NCHUNK, dpgB, dpgC,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr, SAVE_STATES: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr, ACC: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, T)
    mask_d = offs_d < dim
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    row = pid_b * dim + offs_d
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    else:
        bias = tl.zeros([BLOCK_D], dtype=ACC)
    sn_ptrs = row[:, None] * N + offs_n[None, :]
    if HAS_H0:
        h = tl.load(h0_ptr + sn_ptrs, mask=mask_dn, other=0.0).to(ACC)
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    # (a while loop: the interpreter cannot take range() over a runtime scalar with numpy >= 2)
    k = 0
    while k < NCHUNK:
        t = k * T + offs_t
        mask_t = t < L
        m_dt = mask_d[:, None] & mask_t[None, :]
        if SAVE_STATES:
            tl.store(states_ptr + (row[:, None] * NCHUNK + k) * N + offs_n[None, :], h, mask=mask_dn)
        u = tl.load(u_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
        raw, dt = _dt_chunk(delta_ptr, row, t, m_dt, bias, L, HAS_BIAS, SOFTPLUS, ACC)
        Bt = _load_bc(B_ptr, pid_b, offs_d, offs_n, t, mask_d, mask_n, mask_t, dpgB, sB_b, sB_g, sB_n, sB_l, N,
                      B_VAR, ACC)
        Ct = _load_bc(C_ptr, pid_b, offs_d, offs_n, t, mask_d, mask_n, mask_t, dpgC, sC_b, sC_g, sC_n, sC_l, N,
                      C_VAR, ACC)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        bu = (dt * u)[:, None, :] * Bt
        acum, bcum = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        hs = acum * h[:, :, None] + bcum
        # padded state lanes add nothing (0 * h would be NaN once a non-finite dt or u reached their h)
        y = tl.sum(tl.where(mask_n[None, :, None], Ct * hs, 0.0), axis=1)
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
            y = y * (z * sigmoid(z))
        tl.store(out_ptr + row[:, None] * L + t[None, :], y.to(out_ptr.dtype.element_ty), mask=m_dt)
        h = tl.sum(tl.where(offs_t[None, None, :] == T - 1, hs, 0.0), axis=2)
        k += 1
    tl.store(last_ptr + sn_ptrs, h, mask=mask_dn)


@triton.jit
def selective_scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr, dout_ptr, dlast_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dB_ptr, dC_ptr,
    dim, L, N, NCHUNK, NBLK, dpgB, dpgC,
    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    B_VAR: tl.constexpr, C_VAR: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_DLAST: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, T: tl.constexpr, ACC: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, T)
    mask_d = offs_d < dim
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    row = pid_b * dim + offs_d
    sn_ptrs = row[:, None] * N + offs_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn, other=0.0).to(ACC)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    else:
        Dv = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
    else:
        bias = tl.zeros([BLOCK_D], dtype=ACC)
    if HAS_DLAST:
        g_next = tl.load(dlast_ptr + sn_ptrs, mask=mask_dn, other=0.0).to(ACC)
    else:
        g_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dBinv = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dCinv = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    dD = tl.zeros([BLOCK_D], dtype=ACC)
    dbias = tl.zeros([BLOCK_D], dtype=ACC)
    dh0 = tl.zeros([BLOCK_D, BLOCK_N], dtype=ACC)
    k = NCHUNK - 1
    while k >= 0:
        t = k * T + offs_t
        mask_t = t < L
        m_dt = mask_d[:, None] & mask_t[None, :]
        h = tl.load(states_ptr + (row[:, None] * NCHUNK + k) * N + offs_n[None, :], mask=mask_dn, other=0.0)
        h = h.to(ACC)
        u = tl.load(u_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
        raw, dt = _dt_chunk(delta_ptr, row, t, m_dt, bias, L, HAS_BIAS, SOFTPLUS, ACC)
        # decay of the following step, a_{t+1} (1 past the end: the final state's gradient enters unscaled)
        t1 = t + 1
        m_dt1 = mask_d[:, None] & (t1 < L)[None, :]
        _, dt1 = _dt_chunk(delta_ptr, row, t1, m_dt1, bias, L, HAS_BIAS, SOFTPLUS, ACC)
        Bt = _load_bc(B_ptr, pid_b, offs_d, offs_n, t, mask_d, mask_n, mask_t, dpgB, sB_b, sB_g, sB_n, sB_l, N,
                      B_VAR, ACC)
        Ct = _load_bc(C_ptr, pid_b, offs_d, offs_n, t, mask_d, mask_n, mask_t, dpgC, sC_b, sC_g, sC_n, sC_l, N,
                      C_VAR, ACC)
        # recompute the chunk's states
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        bu = (dt * u)[:, None, :] * Bt
        acum, bcum = tl.associative_scan((a, bu), axis=2, combine_fn=_combine)
        hs = acum * h[:, :, None] + bcum
        # output gradient before the gate
        dy = tl.load(dout_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
        if HAS_Z:
            z = tl.load(z_ptr + row[:, None] * L + t[None, :], mask=m_dt, other=0.0).to(ACC)
            y = tl.sum(Ct * hs, axis=1) + Dv[:, None] * u
            sz = sigmoid(z)
            tl.store(dz_ptr + row[:, None] * L + t[None, :], dy * y * sz * (1.0 + z * (1.0 - sz)), mask=m_dt)
            dy = dy * z * sz
        # adjoint: g_t = dy_t C_t + a_{t+1} g_{t+1}, g past the chunk = g_next
        alpha = tl.exp(dt1[:, None, :] * A[:, :, None])
        beta = dy[:, None, :] * Ct
        ga, gb = tl.associative_scan((alpha, beta), axis=2, combine_fn=_combine, reverse=True)
        g = ga * g_next[:, :, None] + gb
        ha = hs - bu  # a_t h_{t-1}
        ddt = tl.sum(g * (ha * A[:, :, None] + Bt * u[:, None, :]), axis=1)
        dA += tl.sum(g * ha * dt[:, None, :], axis=2)
        dBc = g * (dt * u)[:, None, :]
        dCc = dy[:, None, :] * hs
        if B_VAR:
            tl.store(dB_ptr + ((pid_b * NBLK + pid_d) * N + offs_n[:, None]) * L + t[None, :],
                     tl.sum(dBc, axis=0), mask=mask_n[:, None] & mask_t[None, :])
        else:
            dBinv += tl.sum(dBc, axis=2)
        if C_VAR:
            tl.store(dC_ptr + ((pid_b * NBLK + pid_d) * N + offs_n[:, None]) * L + t[None, :],
                     tl.sum(dCc, axis=0), mask=mask_n[:, None] & mask_t[None, :])
        else:
            dCinv += tl.sum(dCc, axis=2)
        du = dy * Dv[:, None] + dt * tl.sum(g * Bt, axis=1)
        if SOFTPLUS:
            ddt = ddt * softplus_grad(raw)
        ddt = tl.where(m_dt, ddt, 0.0)
        tl.store(du_ptr + row[:, None] * L + t[None, :], du, mask=m_dt)
        tl.store(ddelta_ptr + row[:, None] * L + t[None, :], ddt, mask=m_dt)
        dD += tl.sum(tl.where(m_dt, dy * u, 0.0), axis=1)
        dbias += tl.sum(ddt, axis=1)
        first = offs_t[None, None, :] == 0
        g_next = tl.sum(tl.where(first, g, 0.0), axis=2)
        dh0 = tl.sum(tl.where(first, a * g, 0.0), axis=2)
        k -= 1
    tl.store(dA_ptr + sn_ptrs, dA, mask=mask_dn)
    tl.store(dh0_ptr + sn_ptrs, dh0, mask=mask_dn)
    if not B_VAR:
        tl.store(dB_ptr + sn_ptrs, dBinv, mask=mask_dn)
    if not C_VAR:
        tl.store(dC_ptr + sn_ptrs, dCinv, mask=mask_dn)
    tl.store(dD_ptr + row, dD, mask=mask_d)
    tl.store(dbias_ptr + row, dbias, mask=mask_d)
