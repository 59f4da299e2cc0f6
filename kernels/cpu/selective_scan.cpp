// ssmkit CPU selective scan (Mamba-1), forward and backward.
//
// Semantics are those of mamba_ssm's selective_scan_fn, per (batch b, channel d) row:
//   dt_t = delta_t (+ delta_bias_d), softplus'ed when asked
//   h_t  = exp(dt_t * A_d) * h_{t-1} + dt_t * B_t * u_t          (N-vector, h_{-1} = initial state or 0)
//   y_t  = C_t . h_t + D_d * u_t ;  out_t = y_t * silu(z_t) when z is given
//
// Layout contract (the Python wrapper prepares it):
//   u, delta, z            (Bt, D, L) contiguous, compute dtype T (float or double)
//   A                      (D, N)
//   B, C                   (D, N) time-invariant  or  (Bt, G, N, L) input-dependent (G groups; G=1 for (Bt,N,L))
//   Dv, delta_bias         (D,)
//   initial_state          (Bt, D, N)
//
// Nothing of size (Bt, D, L, N) is ever materialised. The forward walks each row once with the N-vector state
// in registers / L1, and (when a backward will follow) stores the state at the start of every chunk of
// kChunk steps after the first (whose start is the initial state). The backward walks the chunks of a row in reverse: it recomputes the chunk's states and decays
// from its stored start state into a small buffer and then runs the adjoint recurrence
//   g_t = dy_t * C_t + exp(dt_{t+1} A) * g_{t+1}   (g_{L-1} starts from the gradient of the final state)
// backwards through it.
//
// Parallelism: at::parallel_for over rows (forward) and over (block of batch rows, channel segment) tasks
// (backward). A task owns one segment of channels that lies inside one group of B and of C, so it accumulates the
// gradients of the input-dependent B / C into its own (L, N) slab per batch row, and the parameters' gradients
// into its block's partial sums; slabs and blocks are summed afterwards (deterministic: blocks and segments
// depend on the shapes only, not on the number of threads).

#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "vec_math.h"

namespace {

constexpr int64_t kChunk = 64;  // time steps between stored states (the backward's recompute window)

using ssmk::exp_vec;
using ssmk::sigmoid;
using ssmk::softplus;
using ssmk::softplus_grad;

// The state dimension is padded to a multiple of kLanes<T> (one 64-byte vector) with zero A, B, C, so every inner
// loop over the state runs whole vectors, and sums over the state go through kLanes partial sums and a tree
// (a plain `omp simd reduction` makes GCC add the lanes one by one, which dominated the run time).
template <typename T>
constexpr int kLanes = 64 / static_cast<int>(sizeof(T));

template <typename T>
SSMK_INLINE T tree_sum(T* SSMK_RESTRICT part) {
  constexpr int W = kLanes<T>;
#pragma GCC unroll 8
  for (int w = W / 2; w > 0; w /= 2) {
#pragma omp simd
    for (int j = 0; j < w; ++j) part[j] += part[j + w];
  }
  return part[0];
}

template <typename T>
SSMK_INLINE void zero_lanes(T* SSMK_RESTRICT part) {
#pragma omp simd
  for (int j = 0; j < kLanes<T>; ++j) part[j] = T(0);
}

struct Shapes {
  int64_t batch, dim, len, nstate;  // nstate: padded to a multiple of kLanes
  int64_t nreal;                    // the caller's N
  int64_t gB, gC;        // groups of B / C when input-dependent (0 = time-invariant (D, N))
  int64_t nchunks;
};

template <typename T>
struct Ptrs {
  const T* u;
  const T* delta;
  const T* A;
  const T* As;  // A * kAScale<T> (the exponent's factor of the state step)
  const T* B;  // (D, N) or transposed (Bt, G, L, N)
  const T* C;
  const T* Dv;
  const T* z;
  const T* bias;
  const T* h0;
  bool use_softplus;
};

// Pointer to B_t / C_t for row (b, d) at time 0 and the stride between time steps.
template <typename T>
SSMK_INLINE const T* bc_row(const T* base, int64_t groups, const Shapes& s, int64_t b, int64_t d, int64_t* stride) {
  if (groups == 0) {
    *stride = 0;
    return base + d * s.nstate;
  }
  const int64_t g = d / (s.dim / groups);
  *stride = s.nstate;
  return base + (b * groups + g) * s.len * s.nstate;
}

// exp(dt A) is taken as 2^(dt A') with A' = A * kAScale (log2(e) where the AVX2 step uses exp2_avx2, else 1).
template <typename T>
constexpr T kAScale = T(1);

// One step of the state for one row: a_n = exp(dt A_n), h_n = a_n hp_n + dtu B_n (written to hn, which may be hp;
// a to `a` when it is not null), returns C . h over the real states (padded lanes add nothing: 0 * h would be NaN
// once a non-finite dt or u reached their h). As = A' (see kAScale), N a multiple of kLanes.
template <typename T>
SSMK_INLINE T state_step(const T* SSMK_RESTRICT As, const T* hp, T* hn, T* SSMK_RESTRICT a, T dt, T dtu,
                         const T* SSMK_RESTRICT Bt, const T* SSMK_RESTRICT Ct, int64_t N, int64_t nreal) {
  alignas(64) T part[kLanes<T>];
  zero_lanes(part);
  for (int64_t n0 = 0; n0 < N; n0 += kLanes<T>) {
#pragma omp simd
    for (int j = 0; j < kLanes<T>; ++j) {
      const int64_t n = n0 + j;
      const T an = exp_vec(dt * As[n]);
      if (a) a[n] = an;
      const T hv = an * hp[n] + dtu * Bt[n];
      hn[n] = hv;
      part[j] += n < nreal ? Ct[n] * hv : T(0);
    }
  }
  return tree_sum(part);
}

#ifdef SSMK_HAVE_AVX2
// The sum of 8 lanes as a fixed tree (deterministic, and the same order in every step function).
SSMK_INLINE float hsum8(__m256 v) {
  alignas(32) float part[8];
  _mm256_store_ps(part, v);
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

template <>
constexpr float kAScale<float> = 1.44269504088896341f;

// The float step in AVX2 intrinsics with exp2_avx2 (GCC turns exp_vec's clamps inside the `omp simd` loop above
// into blend chains: this is about 2x faster per state update); vectors of 8 states, two per iteration.
template <>
SSMK_INLINE float state_step<float>(const float* SSMK_RESTRICT As, const float* hp, float* hn, float* SSMK_RESTRICT a,
                                    float dt, float dtu, const float* SSMK_RESTRICT Bt,
                                    const float* SSMK_RESTRICT Ct, int64_t N, int64_t nreal) {
  const __m256 vdt = _mm256_set1_ps(dt), vdtu = _mm256_set1_ps(dtu);
  const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), vreal = _mm256_set1_ps(static_cast<float>(nreal));
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  auto one = [&](int64_t n, __m256& acc) {
    const __m256 e = ssmk::exp2_avx2(_mm256_mul_ps(vdt, _mm256_loadu_ps(As + n)));
    if (a) _mm256_storeu_ps(a + n, e);
    const __m256 h = _mm256_fmadd_ps(e, _mm256_loadu_ps(hp + n), _mm256_mul_ps(vdtu, _mm256_loadu_ps(Bt + n)));
    _mm256_storeu_ps(hn + n, h);
    __m256 ch = _mm256_mul_ps(_mm256_loadu_ps(Ct + n), h);
    if (n + 8 > nreal)
      ch = _mm256_and_ps(ch, _mm256_cmp_ps(_mm256_add_ps(iota, _mm256_set1_ps(static_cast<float>(n))), vreal,
                                           _CMP_LT_OQ));
    acc = _mm256_add_ps(acc, ch);
  };
  for (int64_t n = 0; n < N; n += 16) {
    one(n, acc0);
    one(n + 8, acc1);
  }
  return hsum8(_mm256_add_ps(acc0, acc1));
}
#endif

// One step of the adjoint recurrence for one row (walking time backwards): with g the gradient of the state after
// this step, gn = g + dy C_t is the gradient of h_t; accumulates dA, dB_t, dC_t, sets g to the gradient of h_{t-1}
// (gn a) and returns the step's gradients of dt (before softplus) and of dt u through B in *ddt, *duB. Padded
// lanes add nothing to the two sums (as in state_step).
template <typename T>
SSMK_INLINE void adjoint_step(const T* SSMK_RESTRICT A, const T* SSMK_RESTRICT Bt, const T* SSMK_RESTRICT Ct,
                              const T* SSMK_RESTRICT hp, const T* SSMK_RESTRICT hc, const T* SSMK_RESTRICT a,
                              T* SSMK_RESTRICT g, T* SSMK_RESTRICT dA, T* SSMK_RESTRICT dBt, T* SSMK_RESTRICT dCt,
                              T dt, T ut, T dy, int64_t N, int64_t nreal, T* ddt, T* duB) {
  const T dtu = dt * ut;
  alignas(64) T pddt[kLanes<T>];
  alignas(64) T pduB[kLanes<T>];
  zero_lanes(pddt);
  zero_lanes(pduB);
  for (int64_t n0 = 0; n0 < N; n0 += kLanes<T>) {
#pragma omp simd
    for (int j = 0; j < kLanes<T>; ++j) {
      const int64_t n = n0 + j;
      const T gn = g[n] + dy * Ct[n];
      const T ha = hp[n] * a[n];
      pddt[j] += n < nreal ? gn * (ha * A[n] + Bt[n] * ut) : T(0);
      dA[n] += gn * ha * dt;
      pduB[j] += n < nreal ? gn * Bt[n] : T(0);
      dBt[n] += gn * dtu;
      dCt[n] += dy * hc[n];
      g[n] = gn * a[n];
    }
  }
  *ddt = tree_sum(pddt);
  *duB = tree_sum(pduB);
}

#ifdef SSMK_HAVE_AVX2
// The float adjoint step in AVX2 intrinsics: the sums stay in registers and the padded-lane mask is applied only
// to the vector that holds padded lanes.
template <>
SSMK_INLINE void adjoint_step<float>(const float* SSMK_RESTRICT A, const float* SSMK_RESTRICT Bt,
                                     const float* SSMK_RESTRICT Ct, const float* SSMK_RESTRICT hp,
                                     const float* SSMK_RESTRICT hc, const float* SSMK_RESTRICT a,
                                     float* SSMK_RESTRICT g, float* SSMK_RESTRICT dA, float* SSMK_RESTRICT dBt,
                                     float* SSMK_RESTRICT dCt, float dt, float ut, float dy, int64_t N, int64_t nreal,
                                     float* ddt, float* duB) {
  const __m256 vdt = _mm256_set1_ps(dt), vut = _mm256_set1_ps(ut), vdy = _mm256_set1_ps(dy);
  const __m256 vdtu = _mm256_set1_ps(dt * ut);
  const __m256 iota = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), vreal = _mm256_set1_ps(static_cast<float>(nreal));
  __m256 sddt = _mm256_setzero_ps(), sduB = _mm256_setzero_ps();
  for (int64_t n = 0; n < N; n += 8) {
    const __m256 Bn = _mm256_loadu_ps(Bt + n), an = _mm256_loadu_ps(a + n);
    const __m256 gn = _mm256_fmadd_ps(vdy, _mm256_loadu_ps(Ct + n), _mm256_loadu_ps(g + n));
    const __m256 ha = _mm256_mul_ps(_mm256_loadu_ps(hp + n), an);
    __m256 t_ddt = _mm256_mul_ps(gn, _mm256_fmadd_ps(ha, _mm256_loadu_ps(A + n), _mm256_mul_ps(Bn, vut)));
    __m256 t_duB = _mm256_mul_ps(gn, Bn);
    if (n + 8 > nreal) {
      const __m256 real = _mm256_cmp_ps(_mm256_add_ps(iota, _mm256_set1_ps(static_cast<float>(n))), vreal,
                                        _CMP_LT_OQ);
      t_ddt = _mm256_and_ps(t_ddt, real);
      t_duB = _mm256_and_ps(t_duB, real);
    }
    sddt = _mm256_add_ps(sddt, t_ddt);
    sduB = _mm256_add_ps(sduB, t_duB);
    _mm256_storeu_ps(dA + n, _mm256_fmadd_ps(_mm256_mul_ps(gn, ha), vdt, _mm256_loadu_ps(dA + n)));
    _mm256_storeu_ps(dBt + n, _mm256_fmadd_ps(gn, vdtu, _mm256_loadu_ps(dBt + n)));
    _mm256_storeu_ps(dCt + n, _mm256_fmadd_ps(vdy, _mm256_loadu_ps(hc + n), _mm256_loadu_ps(dCt + n)));
    _mm256_storeu_ps(g + n, _mm256_mul_ps(gn, an));
  }
  *ddt = hsum8(sddt);
  *duB = hsum8(sduB);
}
#endif

// dt_i = softplus?(delta_i + bias) for one chunk, vectorised.
template <typename T>
SSMK_INLINE void chunk_dt(const T* SSMK_RESTRICT delta, T bias, bool use_softplus, int64_t len, T* SSMK_RESTRICT raw,
                         T* SSMK_RESTRICT dt) {
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) raw[i] = delta[i] + bias;
  if (use_softplus) {
#pragma omp simd
    for (int64_t i = 0; i < len; ++i) dt[i] = softplus(raw[i]);
  } else {
    std::copy(raw, raw + len, dt);
  }
}

template <typename T>
void forward_rows(const Ptrs<T>& p, const Shapes& s, T* out, T* last, T* states, int64_t row_begin,
                  int64_t row_end) {
  const int64_t N = s.nstate, L = s.len, K = kChunk, nreal = s.nreal;
  std::vector<T> hbuf(N), raw_v(K), dt_v(K), y_v(K);
  T* SSMK_RESTRICT h = hbuf.data();
  T* SSMK_RESTRICT rawb = raw_v.data();
  T* SSMK_RESTRICT dtb = dt_v.data();
  T* SSMK_RESTRICT yb = y_v.data();
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t b = row / s.dim, d = row % s.dim;
    const T* SSMK_RESTRICT u = p.u + row * L;
    const T* SSMK_RESTRICT delta = p.delta + row * L;
    const T* SSMK_RESTRICT z = p.z ? p.z + row * L : nullptr;
    const T* SSMK_RESTRICT As = p.As + d * N;
    int64_t sB, sC;
    const T* Bbase = bc_row(p.B, s.gB, s, b, d, &sB);
    const T* Cbase = bc_row(p.C, s.gC, s, b, d, &sC);
    const T Dd = p.Dv ? p.Dv[d] : T(0);
    const T bias = p.bias ? p.bias[d] : T(0);
    T* SSMK_RESTRICT o = out + row * L;
    if (p.h0) {
      std::copy(p.h0 + row * N, p.h0 + (row + 1) * N, h);
    } else {
      std::fill(h, h + N, T(0));
    }
    T* st = states ? states + row * (s.nchunks - 1) * N : nullptr;
    for (int64_t t0 = 0; t0 < L; t0 += K) {
      const int64_t len = std::min(K, L - t0);
      if (st && t0 > 0) std::copy(h, h + N, st + (t0 / K - 1) * N);
      chunk_dt(delta + t0, bias, p.use_softplus, len, rawb, dtb);
      for (int64_t i = 0; i < len; ++i) {
        const int64_t t = t0 + i;
        const T dt = dtb[i];
        const T dtu = dt * u[t];
        yb[i] = state_step<T>(As, h, h, nullptr, dt, dtu, Bbase + t * sB, Cbase + t * sC, N, nreal);
      }
      if (z) {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) {
          const T zt = z[t0 + i];
          o[t0 + i] = (yb[i] + Dd * u[t0 + i]) * (zt * sigmoid(zt));
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < len; ++i) o[t0 + i] = yb[i] + Dd * u[t0 + i];
      }
    }
    if (last) std::copy(h, h + N, last + row * N);
  }
}

template <typename T>
SSMK_INLINE void add_to(T* SSMK_RESTRICT acc, const T* SSMK_RESTRICT x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
}

template <typename T>
struct Grads {
  const T* dout;
  const T* dlast;   // may be null
  T* du;
  T* ddelta;
  T* dz;            // null when no z
  T* dA_part;       // (nblk, D, N), zeroed: one partial sum per block of batch rows
  T* dD_part;       // (nblk, D), zeroed
  T* dbias_part;    // (nblk, D), zeroed
  T* dh0;           // (Bt, D, N), or null when no initial state needs a gradient
  T* dB;            // (nblk, D, N) zeroed partials when B invariant, else (Bt, S, L, N) slabs
  T* dC;
  int64_t nseg;     // S
  int64_t bblock;   // batch rows per block
};

template <typename T>
void backward_tasks(const Ptrs<T>& p, const Shapes& s, const T* states, const Grads<T>& gr, int64_t task_begin,
                    int64_t task_end) {
  const int64_t N = s.nstate, L = s.len, K = kChunk, nreal = s.nreal;
  const int64_t seg = s.dim / gr.nseg;
  std::vector<T> hbuf_v((K + 1) * N), abuf_v(K * N), g_v(N), dA_v(N), dBi_v(N), dCi_v(N);
  std::vector<T> raw_v(K), dt_v(K), y_v(K), dy_v(K), ddt_v(K), duB_v(K);
  T* SSMK_RESTRICT hbuf = hbuf_v.data();
  T* SSMK_RESTRICT abuf = abuf_v.data();
  T* SSMK_RESTRICT g = g_v.data();
  T* SSMK_RESTRICT dA = dA_v.data();
  T* SSMK_RESTRICT dBi = dBi_v.data();
  T* SSMK_RESTRICT dCi = dCi_v.data();
  T* SSMK_RESTRICT rawb = raw_v.data();
  T* SSMK_RESTRICT dtb = dt_v.data();
  T* SSMK_RESTRICT yb = y_v.data();
  T* SSMK_RESTRICT dyb = dy_v.data();
  T* SSMK_RESTRICT ddtb = ddt_v.data();
  T* SSMK_RESTRICT duBb = duB_v.data();
  for (int64_t task = task_begin; task < task_end; ++task) {
    const int64_t blk = task / gr.nseg, sg = task % gr.nseg;
    for (int64_t b = blk * gr.bblock; b < std::min(s.batch, (blk + 1) * gr.bblock); ++b) {
    T* slabB = s.gB ? gr.dB + (b * gr.nseg + sg) * L * N : nullptr;
    T* slabC = s.gC ? gr.dC + (b * gr.nseg + sg) * L * N : nullptr;
    for (int64_t d = sg * seg; d < (sg + 1) * seg; ++d) {
      const int64_t row = b * s.dim + d;
      const T* SSMK_RESTRICT u = p.u + row * L;
      const T* SSMK_RESTRICT delta = p.delta + row * L;
      const T* SSMK_RESTRICT z = p.z ? p.z + row * L : nullptr;
      const T* SSMK_RESTRICT A = p.A + d * N;
      const T* SSMK_RESTRICT As = p.As + d * N;
      int64_t sB, sC;
      const T* Bbase = bc_row(p.B, s.gB, s, b, d, &sB);
      const T* Cbase = bc_row(p.C, s.gC, s, b, d, &sC);
      const T Dd = p.Dv ? p.Dv[d] : T(0);
      const T bias = p.bias ? p.bias[d] : T(0);
      const T* SSMK_RESTRICT dout = gr.dout + row * L;
      T* SSMK_RESTRICT du = gr.du + row * L;
      T* SSMK_RESTRICT ddelta = gr.ddelta + row * L;
      T* SSMK_RESTRICT dz = gr.dz ? gr.dz + row * L : nullptr;
      const T* st = states + row * (s.nchunks - 1) * N;  // start states of chunks 1, 2, ...
      if (gr.dlast) {
        std::copy(gr.dlast + row * N, gr.dlast + (row + 1) * N, g);
      } else {
        std::fill(g, g + N, T(0));
      }
      std::fill(dA, dA + N, T(0));
      std::fill(dBi, dBi + N, T(0));
      std::fill(dCi, dCi + N, T(0));
      T dD_acc = T(0), dbias_acc = T(0);
      for (int64_t k = s.nchunks - 1; k >= 0; --k) {
        const int64_t t0 = k * K, len = std::min(K, L - t0);
        chunk_dt(delta + t0, bias, p.use_softplus, len, rawb, dtb);
        // Recompute the chunk from its start state: decays a (row i), states h (row i+1 = h at t0+i), C.h.
        if (k > 0) {
          std::copy(st + (k - 1) * N, st + k * N, hbuf);
        } else if (p.h0) {
          std::copy(p.h0 + row * N, p.h0 + (row + 1) * N, hbuf);
        } else {
          std::fill(hbuf, hbuf + N, T(0));
        }
        for (int64_t i = 0; i < len; ++i) {
          const int64_t t = t0 + i;
          const T dt = dtb[i];
          const T dtu = dt * u[t];
          yb[i] = state_step<T>(As, hbuf + i * N, hbuf + (i + 1) * N, abuf + i * N, dt, dtu, Bbase + t * sB,
                                Cbase + t * sC, N, nreal);
        }
        // Gradient of the pre-gate output y (and of z).
        if (z) {
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) {
            const T zt = z[t0 + i], go = dout[t0 + i];
            const T sz = sigmoid(zt);
            dz[t0 + i] = go * (yb[i] + Dd * u[t0 + i]) * sz * (T(1) + zt * (T(1) - sz));
            dyb[i] = go * zt * sz;
          }
        } else {
          std::copy(dout + t0, dout + t0 + len, dyb);
        }
        // Adjoint recurrence backwards through the chunk.
        for (int64_t i = len - 1; i >= 0; --i) {
          const int64_t t = t0 + i;
          const T ut = u[t], dt = dtb[i], dy = dyb[i];
          const T* SSMK_RESTRICT Bt = Bbase + t * sB;
          const T* SSMK_RESTRICT Ct = Cbase + t * sC;
          const T* SSMK_RESTRICT hp = hbuf + i * N;
          const T* SSMK_RESTRICT hc = hbuf + (i + 1) * N;
          const T* SSMK_RESTRICT a = abuf + i * N;
          T* SSMK_RESTRICT dBt = slabB ? slabB + t * N : dBi;
          T* SSMK_RESTRICT dCt = slabC ? slabC + t * N : dCi;
          adjoint_step<T>(A, Bt, Ct, hp, hc, a, g, dA, dBt, dCt, dt, ut, dy, N, nreal, ddtb + i, duBb + i);
        }
        if (p.use_softplus) {
#pragma omp simd
          for (int64_t i = 0; i < len; ++i) ddtb[i] *= softplus_grad(rawb[i]);
        }
#pragma omp simd reduction(+ : dD_acc, dbias_acc)
        for (int64_t i = 0; i < len; ++i) {
          const T ut = u[t0 + i];
          du[t0 + i] = dyb[i] * Dd + duBb[i] * dtb[i];
          ddelta[t0 + i] = ddtb[i];
          dD_acc += dyb[i] * ut;
          dbias_acc += ddtb[i];
        }
      }
      if (gr.dh0) std::copy(g, g + N, gr.dh0 + row * N);
      const int64_t part = (blk * s.dim + d) * N;
      add_to(gr.dA_part + part, dA, N);
      if (!s.gB) add_to(gr.dB + part, dBi, N);
      if (!s.gC) add_to(gr.dC + part, dCi, N);
      gr.dD_part[blk * s.dim + d] += dD_acc;
      gr.dbias_part[blk * s.dim + d] += dbias_acc;
    }
    }
  }
}

void check_input(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

int64_t padded_nstate(const torch::Tensor& u, int64_t nstate) {
  const int64_t lanes = 64 / u.element_size();
  return (nstate + lanes - 1) / lanes * lanes;
}

// X with its last axis zero-padded to np, contiguous.
torch::Tensor pad_last(const torch::Tensor& X, int64_t np) {
  const int64_t n = X.size(-1);
  if (n == np) return X.contiguous();
  return at::constant_pad_nd(X, {0, np - n}, 0).contiguous();
}

// Returns (groups, tensor) for B/C given as (D, N) or (Bt, G, N, L): (D, Np) or transposed (Bt, G, L, Np).
std::pair<int64_t, torch::Tensor> prep_bc(const torch::Tensor& X, const char* name, const torch::Tensor& u,
                                          int64_t dim, int64_t nstate) {
  TORCH_CHECK(X.scalar_type() == u.scalar_type(), name, " must have dtype ", u.scalar_type());
  const int64_t np = padded_nstate(u, nstate);
  if (X.dim() == 2) {
    TORCH_CHECK(X.size(0) == dim && X.size(1) == nstate, name, " must be (D, N)");
    return {0, pad_last(X, np)};
  }
  TORCH_CHECK(X.dim() == 4, name, " must be (D, N) or (batch, G, N, L)");
  TORCH_CHECK(X.size(0) == u.size(0) && X.size(2) == nstate && X.size(3) == u.size(2), name,
              " must be (batch, G, N, L)");
  const int64_t G = X.size(1);
  TORCH_CHECK(G >= 1 && dim % G == 0, name, ": groups must divide dim");
  return {G, pad_last(X.transpose(2, 3), np)};
}

Shapes make_shapes(const torch::Tensor& u, const torch::Tensor& A, int64_t gB, int64_t gC) {
  Shapes s;
  s.batch = u.size(0);
  s.dim = u.size(1);
  s.len = u.size(2);
  s.nreal = A.size(1);
  s.nstate = padded_nstate(u, s.nreal);
  s.gB = gB;
  s.gC = gC;
  s.nchunks = (s.len + kChunk - 1) / kChunk;
  return s;
}

template <typename T>
Ptrs<T> make_ptrs(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A, const torch::Tensor& Bc,
                  const torch::Tensor& Cc, const c10::optional<torch::Tensor>& Dv,
                  const c10::optional<torch::Tensor>& z, const c10::optional<torch::Tensor>& bias,
                  const c10::optional<torch::Tensor>& h0, bool sp) {
  Ptrs<T> p;
  p.u = u.data_ptr<T>();
  p.delta = delta.data_ptr<T>();
  p.A = A.data_ptr<T>();
  p.As = A.data_ptr<T>();
  p.B = Bc.data_ptr<T>();
  p.C = Cc.data_ptr<T>();
  p.Dv = Dv.has_value() ? Dv->data_ptr<T>() : nullptr;
  p.z = z.has_value() ? z->data_ptr<T>() : nullptr;
  p.bias = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  p.h0 = h0.has_value() ? h0->data_ptr<T>() : nullptr;
  p.use_softplus = sp;
  return p;
}

// A * kAScale<T>, the state step's exponent factor (A itself when the factor is 1).
template <typename T>
torch::Tensor scaled_A(const torch::Tensor& Ap) {
  return kAScale<T> == T(1) ? Ap : (Ap * kAScale<T>).contiguous();
}

void check_all(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
               const c10::optional<torch::Tensor>& Dv, const c10::optional<torch::Tensor>& z,
               const c10::optional<torch::Tensor>& bias, const c10::optional<torch::Tensor>& h0) {
  TORCH_CHECK(u.dim() == 3, "u must be (batch, dim, L)");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "u must be float32 or float64");
  check_input(u, "u", u);
  check_input(delta, "delta", u);
  TORCH_CHECK(delta.sizes() == u.sizes(), "delta must have u's shape");
  check_input(A, "A", u);
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "A must be (D, N)");
  if (Dv.has_value()) {
    check_input(*Dv, "D", u);
    TORCH_CHECK(Dv->numel() == u.size(1), "D must be (dim,)");
  }
  if (z.has_value()) {
    check_input(*z, "z", u);
    TORCH_CHECK(z->sizes() == u.sizes(), "z must have u's shape");
  }
  if (bias.has_value()) {
    check_input(*bias, "delta_bias", u);
    TORCH_CHECK(bias->numel() == u.size(1), "delta_bias must be (dim,)");
  }
  if (h0.has_value()) {
    check_input(*h0, "initial_state", u);
    TORCH_CHECK(h0->dim() == 3 && h0->size(0) == u.size(0) && h0->size(1) == u.size(1) && h0->size(2) == A.size(1),
                "initial_state must be (batch, dim, N)");
  }
}

// Returns {out, last_state, chunk_states}: last_state is empty unless want_last, chunk_states (the start states of
// chunks 1, 2, ...: chunk 0 starts from initial_state) empty unless save_states. Nothing of size (Bt, D, N) is
// allocated that the caller does not need: at short L these state-sized buffers cost more than the scan.
std::vector<torch::Tensor> scan_fwd(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                                    const torch::Tensor& B, const torch::Tensor& C,
                                    const c10::optional<torch::Tensor>& Dv, const c10::optional<torch::Tensor>& z,
                                    const c10::optional<torch::Tensor>& bias, bool delta_softplus,
                                    const c10::optional<torch::Tensor>& h0, bool save_states, bool want_last) {
  check_all(u, delta, A, Dv, z, bias, h0);
  const int64_t dim = u.size(1), nstate = A.size(1);
  auto [gB, Bc] = prep_bc(B, "B", u, dim, nstate);
  auto [gC, Cc] = prep_bc(C, "C", u, dim, nstate);
  const Shapes s = make_shapes(u, A, gB, gC);
  const torch::Tensor Ap = pad_last(A, s.nstate);
  const c10::optional<torch::Tensor> h0p =
      h0.has_value() ? c10::optional<torch::Tensor>(pad_last(*h0, s.nstate)) : c10::nullopt;
  auto out = torch::empty_like(u);
  auto last = want_last ? torch::empty({s.batch, s.dim, s.nstate}, u.options()) : torch::empty({0}, u.options());
  auto states = save_states ? torch::empty({s.batch, s.dim, s.nchunks - 1, s.nstate}, u.options())
                            : torch::empty({0}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ssmkit_selective_scan_fwd", [&] {
    Ptrs<scalar_t> p = make_ptrs<scalar_t>(u, delta, Ap, Bc, Cc, Dv, z, bias, h0p, delta_softplus);
    const torch::Tensor As = scaled_A<scalar_t>(Ap);
    p.As = As.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* l = want_last ? last.data_ptr<scalar_t>() : nullptr;
    scalar_t* st = save_states ? states.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, s.batch * s.dim, 1, [&](int64_t begin, int64_t end) {
      forward_rows<scalar_t>(p, s, o, l, st, begin, end);
    });
  });
  return {out, want_last ? last.narrow(2, 0, s.nreal).contiguous() : last, states};
}

// Number of channel segments per batch row for the backward: a multiple of lcm(groups of B, groups of C) that
// divides dim, about 64 tasks in all; depends on the shapes only.
int64_t choose_segments(int64_t batch, int64_t dim, int64_t gB, int64_t gC) {
  const int64_t a = std::max<int64_t>(gB, 1), b = std::max<int64_t>(gC, 1);
  const int64_t base = std::lcm(a, b);
  const int64_t target = std::max<int64_t>(1, (64 + batch - 1) / batch);
  int64_t best = base;
  for (int64_t k = 1; base * k <= dim; ++k) {
    if (dim % (base * k) == 0 && base * k <= std::max(target, base)) best = base * k;
  }
  return best;
}

// Rows of the batch per block of the backward's partial sums (dA, dD, ddelta_bias and invariant dB / dC are
// summed per block, then over blocks): about 64 blocks; depends on the shapes only, so results are deterministic.
int64_t choose_batch_block(int64_t batch) { return std::max<int64_t>(1, batch / 64); }

// Returns {du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state} in the layouts of the inputs
// (dB/dC as (D, N) or (batch, G, N, L)); dD / dz / ddelta_bias are empty when their input is absent, and
// dinitial_state unless want_dh0. h0 is the forward's initial state (chunk 0's start; zero when absent).
std::vector<torch::Tensor> scan_bwd(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
                                    const torch::Tensor& B, const torch::Tensor& C,
                                    const c10::optional<torch::Tensor>& Dv, const c10::optional<torch::Tensor>& z,
                                    const c10::optional<torch::Tensor>& bias, bool delta_softplus,
                                    const c10::optional<torch::Tensor>& h0, const torch::Tensor& states,
                                    const torch::Tensor& dout, const c10::optional<torch::Tensor>& dlast,
                                    bool want_dh0) {
  check_all(u, delta, A, Dv, z, bias, h0);
  const int64_t dim = u.size(1), nstate = A.size(1);
  auto [gB, Bc] = prep_bc(B, "B", u, dim, nstate);
  auto [gC, Cc] = prep_bc(C, "C", u, dim, nstate);
  const Shapes s = make_shapes(u, A, gB, gC);
  const torch::Tensor Ap = pad_last(A, s.nstate);
  check_input(states, "chunk states", u);
  TORCH_CHECK(states.numel() == s.batch * s.dim * (s.nchunks - 1) * s.nstate,
              "chunk states have the wrong shape");
  check_input(dout, "grad of output", u);
  TORCH_CHECK(dout.sizes() == u.sizes(), "grad of output must have u's shape");
  if (dlast.has_value()) {
    check_input(*dlast, "grad of last_state", u);
    TORCH_CHECK(dlast->numel() == s.batch * s.dim * s.nreal, "grad of last_state must be (batch, dim, N)");
  }
  const c10::optional<torch::Tensor> dlastp =
      dlast.has_value() ? c10::optional<torch::Tensor>(pad_last(dlast->view({s.batch, s.dim, s.nreal}), s.nstate))
                        : c10::nullopt;
  const c10::optional<torch::Tensor> h0p =
      h0.has_value() ? c10::optional<torch::Tensor>(pad_last(*h0, s.nstate)) : c10::nullopt;
  const int64_t S = choose_segments(s.batch, s.dim, gB, gC);
  const int64_t bblock = choose_batch_block(s.batch), nblk = (s.batch + bblock - 1) / bblock;
  auto du = torch::empty_like(u);
  auto ddelta = torch::empty_like(u);
  auto dz = z.has_value() ? torch::empty_like(u) : torch::empty({0}, u.options());
  auto dA_part = torch::zeros({nblk, s.dim, s.nstate}, u.options());
  auto dD_part = torch::zeros({nblk, s.dim}, u.options());
  auto dbias_part = torch::zeros({nblk, s.dim}, u.options());
  auto dh0 = want_dh0 ? torch::empty({s.batch, s.dim, s.nstate}, u.options()) : torch::empty({0}, u.options());
  auto dBbuf = gB ? torch::zeros({s.batch, S, s.len, s.nstate}, u.options())
                  : torch::zeros({nblk, s.dim, s.nstate}, u.options());
  auto dCbuf = gC ? torch::zeros({s.batch, S, s.len, s.nstate}, u.options())
                  : torch::zeros({nblk, s.dim, s.nstate}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ssmkit_selective_scan_bwd", [&] {
    Ptrs<scalar_t> p = make_ptrs<scalar_t>(u, delta, Ap, Bc, Cc, Dv, z, bias, h0p, delta_softplus);
    const torch::Tensor As = scaled_A<scalar_t>(Ap);
    p.As = As.data_ptr<scalar_t>();
    Grads<scalar_t> gr;
    gr.dout = dout.data_ptr<scalar_t>();
    gr.dlast = dlastp.has_value() ? dlastp->data_ptr<scalar_t>() : nullptr;
    gr.du = du.data_ptr<scalar_t>();
    gr.ddelta = ddelta.data_ptr<scalar_t>();
    gr.dz = z.has_value() ? dz.data_ptr<scalar_t>() : nullptr;
    gr.dA_part = dA_part.data_ptr<scalar_t>();
    gr.dD_part = dD_part.data_ptr<scalar_t>();
    gr.dbias_part = dbias_part.data_ptr<scalar_t>();
    gr.dh0 = want_dh0 ? dh0.data_ptr<scalar_t>() : nullptr;
    gr.dB = dBbuf.data_ptr<scalar_t>();
    gr.dC = dCbuf.data_ptr<scalar_t>();
    gr.nseg = S;
    gr.bblock = bblock;
    const scalar_t* st = states.data_ptr<scalar_t>();
    at::parallel_for(0, nblk * S, 1, [&](int64_t begin, int64_t end) {
      backward_tasks<scalar_t>(p, s, st, gr, begin, end);
    });
  });
  auto reduce_bc = [&](const torch::Tensor& buf, int64_t G) {
    if (!G) return buf.narrow(2, 0, s.nreal).sum(0);  // (D, N)
    return buf.narrow(3, 0, s.nreal).reshape({s.batch, G, S / G, s.len, s.nreal}).sum(2).transpose(2, 3);
  };
  auto dB = reduce_bc(dBbuf, gB);
  auto dC = reduce_bc(dCbuf, gC);
  auto empty = torch::empty({0}, u.options());
  return {du,
          ddelta,
          dA_part.narrow(2, 0, s.nreal).sum(0),
          dB,
          dC,
          Dv.has_value() ? dD_part.sum(0) : empty,
          dz,
          bias.has_value() ? dbias_part.sum(0) : empty,
          want_dh0 ? dh0.narrow(2, 0, s.nreal) : dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmkit CPU selective scan (forward and backward)";
  m.def("fwd", &scan_fwd, "selective scan forward");
  m.def("bwd", &scan_bwd, "selective scan backward");
  m.attr("CHUNK") = kChunk;
}
