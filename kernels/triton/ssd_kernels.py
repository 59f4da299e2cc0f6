"""Triton kernels of SSD (Mamba-2's chunked scan), forward, in four passes over chunks of Q steps:

1. `ssd_chunk_cumsum_kernel`: dt = clamp(softplus(dt + dt_bias)) and the cumulative log-decay cs = cumsum(dt A)
   inside each chunk, both fp32 (fp64 for fp64 inputs), stored (batch, H, nchunks, Q).
2. `ssd_chunk_state_kernel`: the state each chunk adds on its own, s_c = sum_j exp(cs_end - cs_j) dt_j x_j B_j^T
   (P, N) per head, as a tl.dot over the chunk's steps.
3. `ssd_state_passing_kernel`: h_c = exp(cs_end) h_{c-1} + s_c sequentially over chunks; overwrites each chunk's
   slot with the state entering it and writes the final state.
4. `ssd_chunk_scan_kernel`: y_i = exp(cs_i) C_i h_in + sum_{j<=i} (C_i . B_j) exp(cs_i - cs_j) dt_j x_j, the
   intra-chunk decay an exponent difference clamped <= 0; then + D x and * silu(z).

Steps past L load as zeros (dt 0: decay 1, no input), so a padded last chunk changes neither y nor the states.
Packed sequences (seq_idx) are masks, never -inf decays: a step j reaches i only if seq_idx[j] == seq_idx[i], a
chunk's state only counts steps of the sequence that ends the chunk, and a state crosses a chunk boundary (and
reaches a step) only inside one sequence; the initial state belongs to the sequence at position 0.
"""
import triton
import triton.language as tl

from .scan_kernels import sigmoid, softplus


@triton.jit
def ssd_chunk_cumsum_kernel(
    dt_ptr, A_ptr, bias_ptr, limit_ptr, dt_out_ptr, cs_ptr,
    L, H, Q, NC, s_dt_b, s_dt_l, s_dt_h,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_LIMIT: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_H: tl.constexpr, ACC: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    offs_h = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_q = tl.arange(0, BLOCK_Q)
    t = c * Q + offs_q
    m_h = offs_h < H
    m = ((offs_q < Q) & (t < L))[:, None] & m_h[None, :]
    dt = tl.load(dt_ptr + b * s_dt_b + t[:, None] * s_dt_l + offs_h[None, :] * s_dt_h, mask=m, other=0.0).to(ACC)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_h, mask=m_h, other=0.0).to(ACC)[None, :]
    if SOFTPLUS:
        dt = softplus(dt)
    if HAS_LIMIT:
        dt = tl.minimum(tl.maximum(dt, tl.load(limit_ptr)), tl.load(limit_ptr + 1))
    dt = tl.where(m, dt, 0.0)
    A = tl.load(A_ptr + offs_h, mask=m_h, other=0.0).to(ACC)
    cs = tl.cumsum(dt * A[None, :], axis=0)
    out = ((b * H + offs_h[None, :]) * NC + c) * Q + offs_q[:, None]
    m_out = (offs_q < Q)[:, None] & m_h[None, :]
    tl.store(dt_out_ptr + out, dt, mask=m_out)
    tl.store(cs_ptr + out, cs, mask=m_out)


@triton.jit
def _chunk_end(c, Q, L):
    """Position of a chunk's last real step."""
    return tl.minimum((c + 1) * Q, L) - 1


@triton.jit
def ssd_chunk_state_kernel(
    x_ptr, B_ptr, dt_ptr, cs_ptr, seq_ptr, st_ptr,
    L, H, P, N, Q, NC, R,
    s_x_b, s_x_l, s_x_h, s_x_p, s_B_b, s_B_l, s_B_g, s_B_n, s_seq_b, s_seq_l,
    HAS_SEQ: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr,
):
    nblk_n = tl.cdiv(N, BLOCK_N)
    pid_p = tl.program_id(0) // nblk_n
    pid_n = tl.program_id(0) % nblk_n
    b = (tl.program_id(1) // NC).to(tl.int64)
    c = tl.program_id(1) % NC
    h = tl.program_id(2)
    g = h // R
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_p = offs_p < P
    m_n = offs_n < N
    cbase = ((b * H + h) * NC + c) * Q
    cs_end = tl.load(cs_ptr + cbase + Q - 1)
    if HAS_SEQ:
        seq_end = tl.load(seq_ptr + b * s_seq_b + _chunk_end(c, Q, L) * s_seq_l)
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=ACC)
    k0 = 0
    while k0 < Q:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        t = c * Q + offs_k
        m_k = (offs_k < Q) & (t < L)
        x = tl.load(x_ptr + b * s_x_b + t[None, :] * s_x_l + h * s_x_h + offs_p[:, None] * s_x_p,
                    mask=m_p[:, None] & m_k[None, :], other=0.0).to(ACC)
        Bk = tl.load(B_ptr + b * s_B_b + t[:, None] * s_B_l + g * s_B_g + offs_n[None, :] * s_B_n,
                     mask=m_k[:, None] & m_n[None, :], other=0.0).to(ACC)
        dt = tl.load(dt_ptr + cbase + offs_k, mask=m_k, other=0.0)
        cs = tl.load(cs_ptr + cbase + offs_k, mask=m_k, other=0.0)
        w = dt * tl.exp(tl.minimum(cs_end - cs, 0.0))
        if HAS_SEQ:
            seq = tl.load(seq_ptr + b * s_seq_b + t * s_seq_l, mask=m_k, other=-1)
            w = tl.where(seq == seq_end, w, 0.0)
        w = tl.where(m_k, w, 0.0)
        acc += tl.dot(x * w[None, :], Bk, input_precision="ieee", out_dtype=ACC)
        k0 += BLOCK_K
    out = st_ptr + (((b * NC + c) * H + h) * P + offs_p[:, None]) * N + offs_n[None, :]
    tl.store(out, acc, mask=m_p[:, None] & m_n[None, :])


@triton.jit
def ssd_state_passing_kernel(
    st_ptr, cs_ptr, h0_ptr, seq_ptr, final_ptr,
    L, H, PN, Q, NC, s_seq_b, s_seq_l,
    HAS_H0: tl.constexpr, HAS_SEQ: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    b = tl.program_id(1).to(tl.int64)
    h = tl.program_id(2)
    m = offs < PN
    if HAS_H0:
        state = tl.load(h0_ptr + (b * H + h) * PN + offs, mask=m, other=0.0).to(ACC)
    else:
        state = tl.zeros([BLOCK], dtype=ACC)
    if HAS_SEQ:
        seq_prev = tl.load(seq_ptr + b * s_seq_b)
    c = 0
    while c < NC:
        slot = st_ptr + ((b * NC + c) * H + h) * PN + offs
        s = tl.load(slot, mask=m, other=0.0)
        tl.store(slot, state, mask=m)
        decay = tl.exp(tl.load(cs_ptr + ((b * H + h) * NC + c) * Q + Q - 1))
        if HAS_SEQ:
            seq_end = tl.load(seq_ptr + b * s_seq_b + _chunk_end(c, Q, L) * s_seq_l)
            decay = tl.where(seq_end == seq_prev, decay, 0.0)
            seq_prev = seq_end
        state = decay * state + s
        c += 1
    tl.store(final_ptr + (b * H + h) * PN + offs, state, mask=m)


@triton.jit
def ssd_chunk_scan_kernel(
    x_ptr, z_ptr, B_ptr, C_ptr, dt_ptr, cs_ptr, seq_ptr, st_ptr, D_ptr, y_ptr,
    L, H, P, N, Q, NC, R,
    s_x_b, s_x_l, s_x_h, s_x_p, s_z_b, s_z_l, s_z_h, s_z_p, s_B_b, s_B_l, s_B_g, s_B_n,
    s_C_b, s_C_l, s_C_g, s_C_n, s_y_b, s_y_l, s_y_h, s_y_p, s_seq_b, s_seq_l,
    HAS_SEQ: tl.constexpr, HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_Z: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    ACC: tl.constexpr,
):
    nblk_p = tl.cdiv(P, BLOCK_P)
    pid_m = tl.program_id(0) // nblk_p
    pid_p = tl.program_id(0) % nblk_p
    b = (tl.program_id(1) // NC).to(tl.int64)
    c = tl.program_id(1) % NC
    h = tl.program_id(2)
    g = h // R
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    t_m = c * Q + offs_m
    m_m = (offs_m < Q) & (t_m < L)
    m_p = offs_p < P
    cbase = ((b * H + h) * NC + c) * Q
    cs_m = tl.load(cs_ptr + cbase + offs_m, mask=m_m, other=0.0)
    C_row = C_ptr + b * s_C_b + t_m[:, None] * s_C_l + g * s_C_g
    B_base = B_ptr + b * s_B_b + g * s_B_g

    # the state entering the chunk, read out through C and decayed from the chunk start
    acc = tl.zeros([BLOCK_M, BLOCK_P], dtype=ACC)
    h_in = st_ptr + (((b * NC + c) * H + h) * P + offs_p[None, :]) * N
    n0 = 0
    while n0 < N:
        offs_n = n0 + tl.arange(0, BLOCK_N)
        m_n = offs_n < N
        Cm = tl.load(C_row + offs_n[None, :] * s_C_n, mask=m_m[:, None] & m_n[None, :], other=0.0).to(ACC)
        hT = tl.load(h_in + offs_n[:, None], mask=m_n[:, None] & m_p[None, :], other=0.0)
        acc += tl.dot(Cm, hT, input_precision="ieee", out_dtype=ACC)
        n0 += BLOCK_N
    scale = tl.exp(cs_m)
    if HAS_SEQ:
        seq_m = tl.load(seq_ptr + b * s_seq_b + t_m * s_seq_l, mask=m_m, other=-1)
        seq_in = tl.load(seq_ptr + b * s_seq_b + tl.maximum(c * Q - 1, 0) * s_seq_l)
        scale = tl.where(seq_m == seq_in, scale, 0.0)
    acc = acc * scale[:, None]

    # the chunk's own steps j <= i: (C_i . B_j) exp(cs_i - cs_j) dt_j x_j
    k_end = tl.minimum((pid_m + 1) * BLOCK_M, Q)
    k0 = 0
    while k0 < k_end:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        t_k = c * Q + offs_k
        m_k = (offs_k < Q) & (t_k < L)
        cb = tl.zeros([BLOCK_M, BLOCK_K], dtype=ACC)
        n0 = 0
        while n0 < N:
            offs_n = n0 + tl.arange(0, BLOCK_N)
            m_n = offs_n < N
            Cm = tl.load(C_row + offs_n[None, :] * s_C_n, mask=m_m[:, None] & m_n[None, :], other=0.0).to(ACC)
            BT = tl.load(B_base + t_k[None, :] * s_B_l + offs_n[:, None] * s_B_n,
                         mask=m_n[:, None] & m_k[None, :], other=0.0).to(ACC)
            cb += tl.dot(Cm, BT, input_precision="ieee", out_dtype=ACC)
            n0 += BLOCK_N
        cs_k = tl.load(cs_ptr + cbase + offs_k, mask=m_k, other=0.0)
        dt_k = tl.load(dt_ptr + cbase + offs_k, mask=m_k, other=0.0)
        w = tl.exp(tl.minimum(cs_m[:, None] - cs_k[None, :], 0.0)) * dt_k[None, :]
        keep = (offs_m[:, None] >= offs_k[None, :]) & m_k[None, :]
        if HAS_SEQ:
            seq_k = tl.load(seq_ptr + b * s_seq_b + t_k * s_seq_l, mask=m_k, other=-1)
            keep = keep & (seq_m[:, None] == seq_k[None, :])
        xk = tl.load(x_ptr + b * s_x_b + t_k[:, None] * s_x_l + h * s_x_h + offs_p[None, :] * s_x_p,
                     mask=m_k[:, None] & m_p[None, :], other=0.0).to(ACC)
        acc += tl.dot(tl.where(keep, cb * w, 0.0), xk, input_precision="ieee", out_dtype=ACC)
        k0 += BLOCK_K

    m_mp = m_m[:, None] & m_p[None, :]
    if HAS_D:
        xm = tl.load(x_ptr + b * s_x_b + t_m[:, None] * s_x_l + h * s_x_h + offs_p[None, :] * s_x_p,
                     mask=m_mp, other=0.0).to(ACC)
        if D_PER_P:
            acc += xm * tl.load(D_ptr + h * P + offs_p, mask=m_p, other=0.0)[None, :]
        else:
            acc += xm * tl.load(D_ptr + h)
    if HAS_Z:
        z = tl.load(z_ptr + b * s_z_b + t_m[:, None] * s_z_l + h * s_z_h + offs_p[None, :] * s_z_p,
                    mask=m_mp, other=0.0).to(ACC)
        acc = acc * (z * sigmoid(z))
    tl.store(y_ptr + b * s_y_b + t_m[:, None] * s_y_l + h * s_y_h + offs_p[None, :] * s_y_p,
             acc.to(y_ptr.dtype.element_ty), mask=m_mp)
