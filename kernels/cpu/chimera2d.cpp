// ssmkit CPU 2-D selective scan (Chimera), forward and backward.
//
// The recurrence of ssmkit.core.ops.chimera2d, per batch b, channel d and state n, over the (time t, variate v) grid:
//   e1 = expm1(dt1 A1), e4 = expm1(dt2 A4)   (dt = softplus?(delta + delta_bias))
//   h1[t, v] = (1 + e1) h1[t-1, v] - e1 rho2 h2[t-1, v] + e1 B1 u / A1
//   h2[t, v] = (1 + e4) h2[t, v-1] - e4 rho3 h1[t, v-1] + e4 B2 u / A4
//   y[t, v]  = sum_n C1 h1 + C2 h2  + D u                      (zero states outside the grid)
//
// Layout contract (the Python wrapper prepares it): u, delta1, delta2 (Bt, L, V, D); A, rho (2, D, N);
// B1, B2, C1, C2 (Bt, L, V, N); Dv (D,); bias (2, D); all contiguous, compute dtype T (float or double).
//
// Forward: cells in raster order (t outer, v inner), all D x N states of a cell at once, into a per-thread buffer
// of one batch row's grid (L, V, D, N), or, when the caller asks to save them (a size budget is the wrapper's
// choice), into a (Bt, 2, L, V, D, N) tensor of states h1, h2. The backward uses those, or recomputes them one
// batch row at a time, recomputes the decays e1, e4 of each cell (two vector expm1 per state: cheaper than storing
// and streaming them back from memory, which was a third of the backward's time and most of the forward's page
// faults), then runs the adjoint recurrence in reverse raster order,
//   g1[t, v] = dy C1 + (1 + e1[t+1, v]) g1[t+1, v] - e4[t, v+1] rho3 g2[t, v+1]
//   g2[t, v] = dy C2 - e1[t+1, v] rho2 g1[t+1, v] + (1 + e4[t, v+1]) g2[t, v+1],
// with the messages from the cell below (one row, (V, D, N)) and from the right neighbour (D, N) carried in
// buffers. Parallel over the batch; gradients of the (D, N)-shaped parameters go to per-batch slabs that are summed
// afterwards (deterministic for any number of threads).

#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "vec_math.h"

namespace {

using ssmk::expm1_vec;
using ssmk::softplus;
using ssmk::softplus_grad;

struct Dims {
  int64_t Bt, L, V, D, N;
};

template <typename T>
struct Inputs {
  const T* u;
  const T* d1;
  const T* d2;
  const T* B1;
  const T* B2;
  const T* C1;
  const T* C2;
  const T* Dv;    // may be null
  const T* bias;  // (2, D), may be null
  bool use_softplus;
  // per (d, n), D * N each: the decays A1, A4, their reciprocals and the negated couplings
  const T* A1;
  const T* A4;
  const T* iA1;
  const T* iA4;
  const T* r2;
  const T* r3;
};

// dt of every channel of one cell: raw = delta + bias, dt = softplus(raw) or raw.
template <typename T>
SSMK_INLINE void cell_dt(const T* SSMK_RESTRICT delta, const T* bias, bool use_softplus, int64_t D,
                         T* SSMK_RESTRICT raw, T* SSMK_RESTRICT dt) {
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) raw[d] = delta[d] + (bias ? bias[d] : T(0));
  if (use_softplus) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) dt[d] = softplus(raw[d]);
  } else {
    std::copy(raw, raw + D, dt);
  }
}

// out[d] = sum_n p[d * N + n] for d < D. The per-channel sums over the states are taken after a cell's channel loop
// from a (D, N) buffer instead of inside it: a reduction inside the loop became a chain of N dependent scalar adds
// per channel. For float and N = 8 (one AVX2 vector per channel), eight channels at a time by a transposing hadd tree.
template <typename T, int kN>
SSMK_INLINE void row_sums(const T* SSMK_RESTRICT p, int64_t D, int64_t N, T* SSMK_RESTRICT out) {
  int64_t d = 0;
#if defined(SSMK_HAVE_AVX2)
  if constexpr (std::is_same<T, float>::value && kN == 8) {
    for (; d + 8 <= D; d += 8) {
      const float* q = p + d * 8;
      const __m256 t0 = _mm256_hadd_ps(_mm256_loadu_ps(q), _mm256_loadu_ps(q + 8));
      const __m256 t1 = _mm256_hadd_ps(_mm256_loadu_ps(q + 16), _mm256_loadu_ps(q + 24));
      const __m256 t2 = _mm256_hadd_ps(_mm256_loadu_ps(q + 32), _mm256_loadu_ps(q + 40));
      const __m256 t3 = _mm256_hadd_ps(_mm256_loadu_ps(q + 48), _mm256_loadu_ps(q + 56));
      const __m256 u0 = _mm256_hadd_ps(t0, t1);   // lanes 0-3 of channels d..d+3 | lanes 4-7 of the same
      const __m256 u1 = _mm256_hadd_ps(t2, t3);   // the same for channels d+4..d+7
      _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                                              _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
  }
#endif
  for (; d < D; ++d) {
    T acc = T(0);
    for (int64_t n = 0; n < N; ++n) acc += p[d * N + n];
    out[d] = acc;
  }
}

// Forward of batch row b into buffers of the batch row's grid (L, V, D, N): the states H1, H2.
// `y` (L, V, D) may be null (the backward's recompute).
// kN > 0: the state size as a compile-time constant (common sizes get fully unrolled state loops); 0: s.N.
template <typename T, int kN>
void forward_batch(const Inputs<T>& in, const Dims& s, int64_t b, T* H1, T* H2, T* y, const T* zeros,
                   T* raw1, T* dt1, T* raw2, T* dt2, T* scratch) {
  const int64_t L = s.L, V = s.V, D = s.D, N = kN > 0 ? kN : s.N, DN = D * N;
  T* SSMK_RESTRICT py = scratch;        // (D, N): the terms of y's sum over the states
  T* SSMK_RESTRICT ysum = scratch + DN;  // (D,)
  for (int64_t t = 0; t < L; ++t) {
    T* cur1 = H1 + t * V * DN;
    T* cur2 = H2 + t * V * DN;
    const T* prev1 = t > 0 ? cur1 - V * DN : nullptr;
    const T* prev2 = t > 0 ? cur2 - V * DN : nullptr;
    for (int64_t v = 0; v < V; ++v) {
      const int64_t cell = (b * L + t) * V + v;
      const T* u = in.u + cell * D;
      cell_dt(in.d1 + cell * D, in.bias, in.use_softplus, D, raw1, dt1);
      cell_dt(in.d2 + cell * D, in.bias ? in.bias + D : nullptr, in.use_softplus, D, raw2, dt2);
      const T* b1 = in.B1 + cell * N;
      const T* b2 = in.B2 + cell * N;
      const T* c1 = in.C1 + cell * N;
      const T* c2 = in.C2 + cell * N;
      // zero states outside the grid: h[-1, v] (first row of a full buffer) and h[t, -1]
      const T* p1 = prev1 ? prev1 + v * DN : zeros;
      const T* p2 = prev2 ? prev2 + v * DN : zeros;
      const T* l1 = v > 0 ? cur1 + (v - 1) * DN : zeros;
      const T* l2 = v > 0 ? cur2 + (v - 1) * DN : zeros;
      T* h1 = cur1 + v * DN;
      T* h2 = cur2 + v * DN;
      for (int64_t d = 0; d < D; ++d) {
        const T ud = u[d], s1 = dt1[d], s2 = dt2[d];
        const int64_t o = d * N;
        // per-channel pointers, so that the state loop is plain unit-stride vector code
        const T* SSMK_RESTRICT A1 = in.A1 + o;
        const T* SSMK_RESTRICT A4 = in.A4 + o;
        const T* SSMK_RESTRICT i1 = in.iA1 + o;
        const T* SSMK_RESTRICT i4 = in.iA4 + o;
        const T* SSMK_RESTRICT r2 = in.r2 + o;
        const T* SSMK_RESTRICT r3 = in.r3 + o;
        const T* SSMK_RESTRICT q1 = p1 + o;
        const T* SSMK_RESTRICT q2 = p2 + o;
        const T* SSMK_RESTRICT k1 = l1 + o;
        const T* SSMK_RESTRICT k2 = l2 + o;
        T* SSMK_RESTRICT h1o = h1 + o;
        T* SSMK_RESTRICT h2o = h2 + o;
        T* SSMK_RESTRICT pyo = py + o;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const T e1 = expm1_vec(s1 * A1[n]);
          const T e4 = expm1_vec(s2 * A4[n]);
          const T n1 = (e1 + T(1)) * q1[n] + e1 * r2[n] * q2[n] + e1 * (b1[n] * (ud * i1[n]));
          const T n2 = (e4 + T(1)) * k2[n] + e4 * r3[n] * k1[n] + e4 * (b2[n] * (ud * i4[n]));
          h1o[n] = n1;
          h2o[n] = n2;
          pyo[n] = c1[n] * n1 + c2[n] * n2;
        }
      }
      if (y) {
        row_sums<T, kN>(py, D, N, ysum);
        T* SSMK_RESTRICT yc = y + (t * V + v) * D;
        if (in.Dv) {
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) yc[d] = ysum[d] + in.Dv[d] * u[d];
        } else {
          std::copy(ysum, ysum + D, yc);
        }
      }
    }
  }
}

template <typename T>
struct Grads {
  const T* dy;
  T* du;
  T* dd1;
  T* dd2;
  T* dB1;
  T* dB2;
  T* dC1;
  T* dC2;
  T* dA;     // (Bt, 2, D, N) slabs
  T* drho;   // (Bt, 2, D, N)
  T* dDv;    // (Bt, D)
  T* dbias;  // (Bt, 2, D)
};

template <typename T, int kN>
void backward_batch(const Inputs<T>& in, const Dims& s, int64_t b, const Grads<T>& g, T* H1, T* H2,
                    T* m1row, T* m2row, T* m1l, T* m2l, const T* zeros, T* raw1, T* dt1, T* raw2, T* dt2, T* scratch,
                    bool recompute) {
  const int64_t L = s.L, V = s.V, D = s.D, N = kN > 0 ? kN : s.N, DN = D * N;
  if (recompute) forward_batch<T, kN>(in, s, b, H1, H2, nullptr, zeros, raw1, dt1, raw2, dt2, scratch);
  // (D, N) buffers of the terms of du's and the two steps' gradients' sums over the states, and the sums (D,)
  T* SSMK_RESTRICT pu = scratch;
  T* SSMK_RESTRICT pd1 = pu + DN;
  T* SSMK_RESTRICT pd2 = pd1 + DN;
  T* SSMK_RESTRICT su = pd2 + DN;
  T* SSMK_RESTRICT sd1 = su + D;
  T* SSMK_RESTRICT sd2 = sd1 + D;
  std::fill(m1row, m1row + V * DN, T(0));
  std::fill(m2row, m2row + V * DN, T(0));
  T* SSMK_RESTRICT dA1 = g.dA + b * 2 * DN;
  T* SSMK_RESTRICT dA4 = dA1 + DN;
  T* SSMK_RESTRICT dr2 = g.drho + b * 2 * DN;
  T* SSMK_RESTRICT dr3 = dr2 + DN;
  T* SSMK_RESTRICT dDv = g.dDv + b * D;
  T* SSMK_RESTRICT db1 = g.dbias + b * 2 * D;
  T* SSMK_RESTRICT db2 = db1 + D;
  for (int64_t t = L - 1; t >= 0; --t) {
    std::fill(m1l, m1l + DN, T(0));
    std::fill(m2l, m2l + DN, T(0));
    for (int64_t v = V - 1; v >= 0; --v) {
      const int64_t cell = (b * L + t) * V + v;
      const int64_t local = (t * V + v) * DN;
      const T* u = in.u + cell * D;
      const T* dy = g.dy + cell * D;
      cell_dt(in.d1 + cell * D, in.bias, in.use_softplus, D, raw1, dt1);
      cell_dt(in.d2 + cell * D, in.bias ? in.bias + D : nullptr, in.use_softplus, D, raw2, dt2);
      const T* SSMK_RESTRICT b1 = in.B1 + cell * N;
      const T* SSMK_RESTRICT b2 = in.B2 + cell * N;
      const T* SSMK_RESTRICT c1 = in.C1 + cell * N;
      const T* SSMK_RESTRICT c2 = in.C2 + cell * N;
      // the states of row t-1 two cells ahead in reverse raster order come from memory (the saved states are
      // far larger than the caches, and the hardware prefetchers miss the descending cells): fetch them now
      if (local - (V + 2) * DN >= 0) {
        for (int64_t i = 0; i < DN; i += 64 / static_cast<int64_t>(sizeof(T))) {
          __builtin_prefetch(H1 + local - (V + 2) * DN + i);
          __builtin_prefetch(H2 + local - (V + 2) * DN + i);
        }
      }
      const T* SSMK_RESTRICT h1p = t > 0 ? H1 + local - V * DN : zeros;   // h[t-1, v]
      const T* SSMK_RESTRICT h2p = t > 0 ? H2 + local - V * DN : zeros;
      const T* SSMK_RESTRICT h1l = v > 0 ? H1 + local - DN : zeros;       // h[t, v-1]
      const T* SSMK_RESTRICT h2l = v > 0 ? H2 + local - DN : zeros;
      const T* SSMK_RESTRICT h1c = H1 + local;
      const T* SSMK_RESTRICT h2c = H2 + local;
      T* SSMK_RESTRICT mr1 = m1row + v * DN;
      T* SSMK_RESTRICT mr2 = m2row + v * DN;
      T* SSMK_RESTRICT gB1 = g.dB1 + cell * N;
      T* SSMK_RESTRICT gB2 = g.dB2 + cell * N;
      T* SSMK_RESTRICT gC1 = g.dC1 + cell * N;
      T* SSMK_RESTRICT gC2 = g.dC2 + cell * N;
      std::fill(gB1, gB1 + N, T(0));
      std::fill(gB2, gB2 + N, T(0));
      std::fill(gC1, gC1 + N, T(0));
      std::fill(gC2, gC2 + N, T(0));
      for (int64_t d = 0; d < D; ++d) {
        const T ud = u[d], gy = dy[d], s1 = dt1[d], s2 = dt2[d];
        const int64_t o = d * N;
        const T* SSMK_RESTRICT A1 = in.A1 + o;
        const T* SSMK_RESTRICT A4 = in.A4 + o;
        const T* SSMK_RESTRICT i1 = in.iA1 + o;
        const T* SSMK_RESTRICT i4 = in.iA4 + o;
        const T* SSMK_RESTRICT r2 = in.r2 + o;
        const T* SSMK_RESTRICT r3 = in.r3 + o;
        const T* SSMK_RESTRICT x1p = h1p + o;
        const T* SSMK_RESTRICT x2p = h2p + o;
        const T* SSMK_RESTRICT x1l = h1l + o;
        const T* SSMK_RESTRICT x2l = h2l + o;
        const T* SSMK_RESTRICT x1c = h1c + o;
        const T* SSMK_RESTRICT x2c = h2c + o;
        T* SSMK_RESTRICT n1r = mr1 + o;
        T* SSMK_RESTRICT n2r = mr2 + o;
        T* SSMK_RESTRICT n1l = m1l + o;
        T* SSMK_RESTRICT n2l = m2l + o;
        T* SSMK_RESTRICT gA1 = dA1 + o;
        T* SSMK_RESTRICT gA4 = dA4 + o;
        T* SSMK_RESTRICT gr2 = dr2 + o;
        T* SSMK_RESTRICT gr3 = dr3 + o;
        T* SSMK_RESTRICT pud = pu + o;
        T* SSMK_RESTRICT p1d = pd1 + o;
        T* SSMK_RESTRICT p2d = pd2 + o;
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const T g1 = gy * c1[n] + n1r[n] + n1l[n];
          const T g2 = gy * c2[n] + n2r[n] + n2l[n];
          gC1[n] += gy * x1c[n];
          gC2[n] += gy * x2c[n];
          const T e1 = expm1_vec(s1 * A1[n]), e4 = expm1_vec(s2 * A4[n]);   // as the forward computed them
          const T a1 = e1 + T(1), a4 = e4 + T(1);
          // messages to h[t-1, v] (from h1's time step) and to h[t, v-1] (from h2's variate step)
          n1r[n] = a1 * g1;
          n2r[n] = r2[n] * e1 * g1;
          n1l[n] = r3[n] * e4 * g2;
          n2l[n] = a4 * g2;
          const T q1 = b1[n] * (ud * i1[n]), q2 = b2[n] * (ud * i4[n]);   // input terms are e * q
          const T ge1 = g1 * e1, ge4 = g2 * e4;
          gr2[n] -= ge1 * x2p[n];
          gr3[n] -= ge4 * x1l[n];
          gB1[n] += ge1 * ud * i1[n];
          gB2[n] += ge4 * ud * i4[n];
          pud[n] = ge1 * b1[n] * i1[n] + ge4 * b2[n] * i4[n];
          const T dz1 = g1 * (x1p[n] + r2[n] * x2p[n] + q1) * a1;   // d/d(dt A) of expm1 is exp = a
          const T dz4 = g2 * (x2l[n] + r3[n] * x1l[n] + q2) * a4;
          gA1[n] += dz1 * s1 - ge1 * q1 * i1[n];                     // and q's 1/A
          gA4[n] += dz4 * s2 - ge4 * q2 * i4[n];
          p1d[n] = dz1 * A1[n];
          p2d[n] = dz4 * A4[n];
        }
      }
      // the per-channel sums over the states, then the per-channel terms, vectorised over the channels
      row_sums<T, kN>(pu, D, N, su);
      row_sums<T, kN>(pd1, D, N, sd1);
      row_sums<T, kN>(pd2, D, N, sd2);
      T* SSMK_RESTRICT gu = g.du + cell * D;
      T* SSMK_RESTRICT o1 = g.dd1 + cell * D;
      T* SSMK_RESTRICT o2 = g.dd2 + cell * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        gu[d] = su[d] + (in.Dv ? in.Dv[d] * dy[d] : T(0));
        dDv[d] += dy[d] * u[d];
      }
      if (in.use_softplus) {
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) {
          o1[d] = sd1[d] * softplus_grad(raw1[d]);
          o2[d] = sd2[d] * softplus_grad(raw2[d]);
        }
      } else {
        std::copy(sd1, sd1 + D, o1);
        std::copy(sd2, sd2 + D, o2);
      }
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        db1[d] += o1[d];
        db2[d] += o2[d];
      }
    }
  }
}

// Calls f(std::integral_constant<int, N>) for the common state sizes, f(integral_constant<int, 0>) otherwise.
template <typename F>
void with_state_size(int64_t N, F&& f) {
  switch (N) {
    case 4: f(std::integral_constant<int, 4>()); break;
    case 8: f(std::integral_constant<int, 8>()); break;
    case 16: f(std::integral_constant<int, 16>()); break;
    default: f(std::integral_constant<int, 0>()); break;
  }
}

void check_input(const torch::Tensor& t, const char* name, const torch::Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type(), ", got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

Dims check_all(const torch::Tensor& u, const torch::Tensor& d1, const torch::Tensor& d2, const torch::Tensor& A,
               const torch::Tensor& rho, const torch::Tensor& B1, const torch::Tensor& B2, const torch::Tensor& C1,
               const torch::Tensor& C2, const c10::optional<torch::Tensor>& Dv,
               const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(u.dim() == 4, "u must be (batch, L, V, D)");
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "u must be float32 or float64");
  TORCH_CHECK(A.dim() == 3, "A must be (2, D, N)");
  Dims s{u.size(0), u.size(1), u.size(2), u.size(3), A.size(2)};
  check_input(u, "u", u, u.sizes());
  check_input(d1, "delta1", u, u.sizes());
  check_input(d2, "delta2", u, u.sizes());
  check_input(A, "A", u, {2, s.D, s.N});
  check_input(rho, "couplings", u, {2, s.D, s.N});
  const std::vector<int64_t> bc{s.Bt, s.L, s.V, s.N};
  check_input(B1, "B1", u, bc);
  check_input(B2, "B2", u, bc);
  check_input(C1, "C1", u, bc);
  check_input(C2, "C2", u, bc);
  if (Dv.has_value()) check_input(*Dv, "D", u, {s.D});
  if (bias.has_value()) check_input(*bias, "delta_bias", u, {2, s.D});
  return s;
}

// The per-(d, n) constants, in one (6, D, N) tensor: A1, A4, 1/A1, 1/A4, -rho2, -rho3.
torch::Tensor constants(const torch::Tensor& A, const torch::Tensor& rho) {
  return torch::stack({A[0], A[1], A[0].reciprocal(), A[1].reciprocal(), -rho[0], -rho[1]}).contiguous();
}

template <typename T>
Inputs<T> make_inputs(const torch::Tensor& u, const torch::Tensor& d1, const torch::Tensor& d2,
                      const torch::Tensor& B1, const torch::Tensor& B2, const torch::Tensor& C1,
                      const torch::Tensor& C2, const c10::optional<torch::Tensor>& Dv,
                      const c10::optional<torch::Tensor>& bias, bool use_softplus, const torch::Tensor& consts,
                      const Dims& s) {
  Inputs<T> in;
  in.u = u.data_ptr<T>();
  in.d1 = d1.data_ptr<T>();
  in.d2 = d2.data_ptr<T>();
  in.B1 = B1.data_ptr<T>();
  in.B2 = B2.data_ptr<T>();
  in.C1 = C1.data_ptr<T>();
  in.C2 = C2.data_ptr<T>();
  in.Dv = Dv.has_value() ? Dv->data_ptr<T>() : nullptr;
  in.bias = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  in.use_softplus = use_softplus;
  const T* c = consts.data_ptr<T>();
  const int64_t DN = s.D * s.N;
  in.A1 = c;
  in.A4 = c + DN;
  in.iA1 = c + 2 * DN;
  in.iA4 = c + 3 * DN;
  in.r2 = c + 4 * DN;
  in.r3 = c + 5 * DN;
  return in;
}

// Returns {y, states}: with `save`, states (Bt, 2, L, V, D, N) = (h1, h2) for the backward; else empty.
std::vector<torch::Tensor> scan2d_fwd(const torch::Tensor& u, const torch::Tensor& d1, const torch::Tensor& d2,
                                      const torch::Tensor& A, const torch::Tensor& rho, const torch::Tensor& B1,
                                      const torch::Tensor& B2, const torch::Tensor& C1, const torch::Tensor& C2,
                                      const c10::optional<torch::Tensor>& Dv,
                                      const c10::optional<torch::Tensor>& bias, bool use_softplus, bool save) {
  const Dims s = check_all(u, d1, d2, A, rho, B1, B2, C1, C2, Dv, bias);
  auto y = torch::empty_like(u);
  auto states = save ? torch::empty({s.Bt, 2, s.L, s.V, s.D, s.N}, u.options()) : torch::empty({0}, u.options());
  const torch::Tensor consts = constants(A, rho);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ssmkit_scan2d_fwd", [&] {
    const Inputs<scalar_t> in = make_inputs<scalar_t>(u, d1, d2, B1, B2, C1, C2, Dv, bias, use_softplus, consts, s);
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, s.Bt, 1, [&](int64_t begin, int64_t end) {
      const int64_t DN = s.D * s.N;
      const int64_t grid = s.L * s.V * DN;
      std::vector<scalar_t> work(save ? 0 : 2 * grid), zeros(DN, scalar_t(0)), dt(4 * s.D + DN + s.D);
      for (int64_t b = begin; b < end; ++b) {
        scalar_t* H = save ? states.data_ptr<scalar_t>() + b * 2 * grid : work.data();
        auto run = [&](auto kN) {
          forward_batch<scalar_t, decltype(kN)::value>(in, s, b, H, H + grid, yp + b * s.L * s.V * s.D,
                                                       zeros.data(), dt.data(), dt.data() + s.D,
                                                       dt.data() + 2 * s.D, dt.data() + 3 * s.D, dt.data() + 4 * s.D);
        };
        with_state_size(s.N, run);
      }
    });
  });
  return {y, states};
}

// Returns {du, ddelta1, ddelta2, dA, dcouplings, dB1, dB2, dC1, dC2, dD, ddelta_bias} (dD / ddelta_bias empty when
// their input is absent). `states`: the forward's saved states, or empty to recompute them per batch row.
std::vector<torch::Tensor> scan2d_bwd(const torch::Tensor& u, const torch::Tensor& d1, const torch::Tensor& d2,
                                      const torch::Tensor& A, const torch::Tensor& rho, const torch::Tensor& B1,
                                      const torch::Tensor& B2, const torch::Tensor& C1, const torch::Tensor& C2,
                                      const c10::optional<torch::Tensor>& Dv,
                                      const c10::optional<torch::Tensor>& bias, bool use_softplus,
                                      const torch::Tensor& states, const torch::Tensor& dy) {
  const Dims s = check_all(u, d1, d2, A, rho, B1, B2, C1, C2, Dv, bias);
  check_input(dy, "grad of y", u, u.sizes());
  const bool saved = states.numel() > 0;
  if (saved) check_input(states, "states", u, {s.Bt, 2, s.L, s.V, s.D, s.N});
  const torch::Tensor consts = constants(A, rho);
  auto du = torch::empty_like(u), dd1 = torch::empty_like(u), dd2 = torch::empty_like(u);
  auto dB1 = torch::empty_like(B1), dB2 = torch::empty_like(B1), dC1 = torch::empty_like(B1),
       dC2 = torch::empty_like(B1);
  auto dA = torch::zeros({s.Bt, 2, s.D, s.N}, u.options()), drho = torch::zeros({s.Bt, 2, s.D, s.N}, u.options());
  auto dDv = torch::zeros({s.Bt, s.D}, u.options()), dbias = torch::zeros({s.Bt, 2, s.D}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "ssmkit_scan2d_bwd", [&] {
    const Inputs<scalar_t> in = make_inputs<scalar_t>(u, d1, d2, B1, B2, C1, C2, Dv, bias, use_softplus, consts, s);
    Grads<scalar_t> g{dy.data_ptr<scalar_t>(), du.data_ptr<scalar_t>(), dd1.data_ptr<scalar_t>(),
                      dd2.data_ptr<scalar_t>(), dB1.data_ptr<scalar_t>(), dB2.data_ptr<scalar_t>(),
                      dC1.data_ptr<scalar_t>(), dC2.data_ptr<scalar_t>(), dA.data_ptr<scalar_t>(),
                      drho.data_ptr<scalar_t>(), dDv.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>()};
    at::parallel_for(0, s.Bt, 1, [&](int64_t begin, int64_t end) {
      const int64_t DN = s.D * s.N, grid = s.L * s.V * DN;
      std::vector<scalar_t> work(saved ? 0 : 2 * grid), msg(2 * s.V * DN + 2 * DN), zeros(DN, scalar_t(0)),
          dt(4 * s.D + 3 * DN + 3 * s.D);
      scalar_t* m = msg.data();
      for (int64_t b = begin; b < end; ++b) {
        scalar_t* H = saved ? const_cast<scalar_t*>(states.data_ptr<scalar_t>()) + b * 2 * grid : work.data();
        auto run = [&](auto kN) {
          backward_batch<scalar_t, decltype(kN)::value>(in, s, b, g, H, H + grid, m,
                                                        m + s.V * DN, m + 2 * s.V * DN, m + 2 * s.V * DN + DN,
                                                        zeros.data(), dt.data(), dt.data() + s.D,
                                                        dt.data() + 2 * s.D, dt.data() + 3 * s.D,
                                                        dt.data() + 4 * s.D, !saved);
        };
        with_state_size(s.N, run);
      }
    });
  });
  auto empty = torch::empty({0}, u.options());
  return {du, dd1, dd2, dA.sum(0), drho.sum(0), dB1, dB2, dC1, dC2,
          Dv.has_value() ? dDv.sum(0) : empty, bias.has_value() ? dbias.sum(0) : empty};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmkit CPU 2-D selective scan of Chimera (forward and backward)";
  m.def("fwd", &scan2d_fwd, "2-D selective scan forward");
  m.def("bwd", &scan2d_bwd, "2-D selective scan backward");
}
