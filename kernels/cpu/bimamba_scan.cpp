// Fused bidirectional selective scan of Vim's bimamba-v2 mixer, inference only (no autograd).
//
// For each batch row b both directions run in one task over the same inputs, the backward one from the last step
// to the first, so nothing is flipped or copied:
//   forward  h_t = exp(dt_t A_f) h_{t-1} + dt_t u_t B_t        yf_t = C_t . h_t + D_f u_t      t = 0 .. L-1
//   backward g_t = exp(et_t A_b) g_{t+1} + et_t v_t B'_t       yb_t = C'_t . g_t + D_b v_t     t = L-1 .. 0
//   y_t = (yf_t + yb_t) * silu(z_t) * scale
// with dt = softplus(dt_raw + bias) (optional softplus). Layouts are the ones the mixer's layers produce:
//   u, v                   (Bt, D, L) with any strides (the mixer passes channel-contiguous (Bt, L, D) memory)
//   dt_raw, et_raw, z      (Bt, L, D) with unit channel stride and any row strides (z: a view of in_proj's output)
//   bc_f, bc_b             (Bt, L, R + 2N) with unit last stride (x_proj outputs: dt rank R, then B, then C)
//   A_f, A_b               (D, N); D_f, D_b, bias_f, bias_b (D,)
//   y (returned)           (Bt, L, D) contiguous, ready for out_proj
//
// Vectorised across channels: a task is (b, a block of kBlock consecutive channels). Per step the block's
// softplus(dt + bias) is one vector op, B_t[n] and C_t[n] are broadcast scalars, and the state is kept as
// (N, kBlock), so  h[n][:] = exp(dt[:] A[n][:]) h[n][:] + dt[:] u[:] B_t[n],  acc[:] += h[n][:] C_t[n]  has no
// horizontal reduction. The last block of a channel count that is not a multiple of kBlock runs on zero-padded
// lanes (A = 0, u = 0: their state stays 0 unless B / C are non-finite) whose results are dropped.
// float uses ssmk's vectorisable exp / softplus; double uses std::exp / std::log1p (the fp64 oracle's math).
//
// `conv` computes the scan's u and v from the mixer's x (Bt, D, L, any strides) in one pass:
//   u_t = silu(b_f + sum_k w_f[k] x_{t-W+1+k})     the forward branch's causal depthwise conv
//   v_t = silu(b_b + sum_k w_b[k] x_{t+W-1-k})     the backward branch's causal conv of the reversed sequence,
//                                                  read in time order (x is zero outside 0 .. L-1)
// both returned as (Bt, D, L) views of channel-contiguous (Bt, L, D) memory: x_proj and the scan read them so.
#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace {

constexpr int64_t kBlock = 16;  // channels per task: two AVX2 float vectors (measured faster than 8)

template <typename T>
struct Direction {
  const T* u;     // (Bt, D, L) with strides su_b, su_d, su_l
  int64_t su_b, su_d, su_l;
  const T* dt;    // (Bt, L, D) rows strided by sdt_b, sdt_l
  int64_t sdt_b, sdt_l;
  const T* bc;    // (Bt, L, S) rows strided by sbc_b, sbc_l
  int64_t sbc_b, sbc_l;
  const T* A;     // (D, N) contiguous
  const T* Dv;    // (D,)
  const T* bias;  // (D,)
};

// One step of the block's states: h[n][:] = exp(dt[:] A[n][:]) h[n][:] + du[:] B[n],  acc[:] = sum_n h[n][:] C[n].
template <typename T>
SSMK_INLINE void state_step(const T* SSMK_RESTRICT A, T* SSMK_RESTRICT h, const T* SSMK_RESTRICT dt,
                            const T* SSMK_RESTRICT du, const T* Bt, const T* Ct, int64_t N, T* SSMK_RESTRICT acc) {
#pragma omp simd
  for (int64_t j = 0; j < kBlock; ++j) acc[j] = T(0);
  for (int64_t n = 0; n < N; ++n) {
    const T Bn = Bt[n], Cn = Ct[n];
    T* SSMK_RESTRICT hn = h + n * kBlock;
    const T* SSMK_RESTRICT An = A + n * kBlock;
#pragma omp simd
    for (int64_t j = 0; j < kBlock; ++j) {
      const T v = ssmk::exp_vec(dt[j] * An[j]) * hn[j] + du[j] * Bn;
      hn[j] = v;
      acc[j] += v * Cn;
    }
  }
}

// The factor the block's A is stored with: log2(e) where the step takes exp(dt A) as 2^(dt A log2(e)).
template <typename T>
constexpr T kAScale = T(1);

#ifdef SSMK_HAVE_AVX2
template <>
constexpr float kAScale<float> = 1.44269504088896341f;

// The same for float in AVX2 intrinsics (two vectors of 8 channels), the kernel's hot loop; A is A log2(e).
template <>
SSMK_INLINE void state_step<float>(const float* SSMK_RESTRICT A, float* SSMK_RESTRICT h,
                                   const float* SSMK_RESTRICT dt, const float* SSMK_RESTRICT du, const float* Bt,
                                   const float* Ct, int64_t N, float* SSMK_RESTRICT acc) {
  static_assert(kBlock == 16, "the AVX2 step handles two vectors of 8 channels");
  const __m256 dt0 = _mm256_loadu_ps(dt), dt1 = _mm256_loadu_ps(dt + 8);
  const __m256 du0 = _mm256_loadu_ps(du), du1 = _mm256_loadu_ps(du + 8);
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  // state n's two vectors of channels; two states per iteration give the out-of-order core four independent
  // exp chains to interleave (one state's chain is longer than the scheduler looks ahead)
  auto one = [&](int64_t n, __m256& a0, __m256& a1) {
    const __m256 Bn = _mm256_set1_ps(Bt[n]), Cn = _mm256_set1_ps(Ct[n]);
    float* hn = h + n * kBlock;
    const float* An = A + n * kBlock;
    const __m256 e0 = ssmk::exp2_avx2(_mm256_mul_ps(dt0, _mm256_load_ps(An)));  // A holds A log2(e)
    const __m256 e1 = ssmk::exp2_avx2(_mm256_mul_ps(dt1, _mm256_load_ps(An + 8)));
    const __m256 h0 = _mm256_fmadd_ps(e0, _mm256_load_ps(hn), _mm256_mul_ps(du0, Bn));
    const __m256 h1 = _mm256_fmadd_ps(e1, _mm256_load_ps(hn + 8), _mm256_mul_ps(du1, Bn));
    _mm256_store_ps(hn, h0);
    _mm256_store_ps(hn + 8, h1);
    a0 = _mm256_fmadd_ps(h0, Cn, a0);
    a1 = _mm256_fmadd_ps(h1, Cn, a1);
  };
  __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  int64_t n = 0;
  for (; n + 1 < N; n += 2) {
    one(n, acc0, acc1);
    one(n + 1, acc2, acc3);
  }
  if (n < N) one(n, acc0, acc1);
  acc0 = _mm256_add_ps(acc0, acc2);
  acc1 = _mm256_add_ps(acc1, acc3);
  _mm256_store_ps(acc, acc0);
  _mm256_store_ps(acc + 8, acc1);
}
#endif

// One direction of one block: out[t][:] (+)= C_t . h_t + D u_t for the block's channels [d0, d0 + nv).
// A first pass writes dt, dt u and D u of every step into `work` (3 (L, kBlock) slabs): the softplus of a step is
// a long dependency chain, which the out-of-order core overlaps when the steps come one after another but not
// inside the state loop (measured: about 40% of the kernel's time at N = 16 before it was hoisted).
template <typename T>
void scan_block(const Direction<T>& p, int64_t b, int64_t d0, int64_t nv, int64_t L, int64_t N, int64_t R,
                bool use_softplus, bool backward, T* SSMK_RESTRICT out, T* SSMK_RESTRICT work) {
  alignas(64) T A[64 * kBlock];  // (N, kBlock), N <= 64 checked by the caller
  alignas(64) T h[64 * kBlock];
  alignas(64) T Dv[kBlock], bias[kBlock], u[kBlock], acc[kBlock];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < kBlock; ++j) {
      A[n * kBlock + j] = j < nv ? p.A[(d0 + j) * N + n] * kAScale<T> : T(0);
      h[n * kBlock + j] = T(0);
    }
  for (int64_t j = 0; j < kBlock; ++j) {
    Dv[j] = j < nv ? p.Dv[d0 + j] : T(0);
    bias[j] = j < nv ? p.bias[d0 + j] : T(0);
    u[j] = T(0);
  }
  T* SSMK_RESTRICT dts = work;                 // (L, kBlock) dt
  T* SSMK_RESTRICT dus = work + L * kBlock;    // (L, kBlock) dt u
  T* SSMK_RESTRICT Dus = dus + L * kBlock;     // (L, kBlock) D u
  const bool full = nv == kBlock;
  const T* ub = p.u + b * p.su_b + d0 * p.su_d;
  for (int64_t t = 0; t < L; ++t) {
    const T* dtr = p.dt + b * p.sdt_b + t * p.sdt_l + d0;
    const T* ur = ub + t * p.su_l;
    T* dt = dts + t * kBlock;
    if (full && p.su_d == 1) {
#pragma omp simd
      for (int64_t j = 0; j < kBlock; ++j) u[j] = ur[j];
    } else {
      for (int64_t j = 0; j < nv; ++j) u[j] = ur[j * p.su_d];
    }
    if (full) {
#pragma omp simd
      for (int64_t j = 0; j < kBlock; ++j) dt[j] = dtr[j];
    } else {
      for (int64_t j = 0; j < kBlock; ++j) dt[j] = j < nv ? dtr[j] : T(0);
    }
#pragma omp simd
    for (int64_t j = 0; j < kBlock; ++j) {
      const T x = dt[j] + bias[j];
      const T d = use_softplus ? ssmk::softplus(x) : x;
      dt[j] = d;
      dus[t * kBlock + j] = d * u[j];
      Dus[t * kBlock + j] = Dv[j] * u[j];
    }
  }
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = backward ? L - 1 - i : i;
    const T* Bt = p.bc + b * p.sbc_b + t * p.sbc_l + R;
    state_step(A, h, dts + t * kBlock, dus + t * kBlock, Bt, Bt + N, N, acc);
    T* o = out + t * kBlock;
    const T* Du = Dus + t * kBlock;
#pragma omp simd
    for (int64_t j = 0; j < kBlock; ++j) {
      const T yt = acc[j] + Du[j];
      o[j] = backward ? o[j] + yt : yt;
    }
  }
}

template <typename T>
SSMK_INLINE T silu(T x) { return x / (T(1) + ssmk::exp_vec(-x)); }

template <typename T>
void run(const Direction<T>& f, const Direction<T>& bw, const T* z, int64_t sz_b, int64_t sz_l, T* y, int64_t Bt,
         int64_t Dm, int64_t L, int64_t N, int64_t R, bool use_softplus, T scale) {
  const int64_t blocks = (Dm + kBlock - 1) / kBlock;
  at::parallel_for(0, Bt * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> acc(L * kBlock);       // (L, kBlock): both directions' outputs of one block
    std::vector<T> work(3 * L * kBlock);  // scan_block's per-step dt, dt u, D u
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, d0 = (task % blocks) * kBlock, nv = std::min(kBlock, Dm - d0);
      scan_block(f, b, d0, nv, L, N, R, use_softplus, false, acc.data(), work.data());
      scan_block(bw, b, d0, nv, L, N, R, use_softplus, true, acc.data(), work.data());
      for (int64_t t = 0; t < L; ++t) {
        const T* zt = z + b * sz_b + t * sz_l + d0;
        const T* a = acc.data() + t * kBlock;
        T* yt = y + (b * L + t) * Dm + d0;
        if (nv == kBlock) {
#pragma omp simd
          for (int64_t j = 0; j < kBlock; ++j) yt[j] = a[j] * silu(zt[j]) * scale;
        } else {
          for (int64_t j = 0; j < nv; ++j) yt[j] = a[j] * silu(zt[j]) * scale;
        }
      }
    }
  });
}

void check(const torch::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
}

// A (Bt, L, X) tensor with unit last stride, as is or copied.
torch::Tensor rows(const torch::Tensor& t) { return t.stride(2) == 1 ? t : t.contiguous(); }

torch::Tensor fwd(torch::Tensor u_f, torch::Tensor u_b, torch::Tensor dt_f, torch::Tensor dt_b, torch::Tensor bc_f,
                  torch::Tensor bc_b, torch::Tensor A_f, torch::Tensor A_b, torch::Tensor D_f, torch::Tensor D_b,
                  torch::Tensor bias_f, torch::Tensor bias_b, torch::Tensor z, int64_t dt_rank, bool use_softplus,
                  double scale) {
  const auto dtype = u_f.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "u_f must be float32 or float64, got ", dtype);
  for (auto* t : {&u_f, &u_b}) check(*t, "u", dtype, 3);
  for (auto* t : {&dt_f, &dt_b, &bc_f, &bc_b, &z}) check(*t, "dt / bc / z", dtype, 3);
  for (auto* t : {&A_f, &A_b}) check(*t, "A", dtype, 2);
  for (auto* t : {&D_f, &D_b, &bias_f, &bias_b}) check(*t, "D / bias", dtype, 1);
  const int64_t Bt = u_f.size(0), Dm = u_f.size(1), L = u_f.size(2), N = A_f.size(1), S = bc_f.size(2);
  TORCH_CHECK(u_b.sizes() == u_f.sizes(), "u_b must have the shape of u_f");
  TORCH_CHECK(dt_f.sizes() == at::IntArrayRef({Bt, L, Dm}) && dt_b.sizes() == dt_f.sizes(), "dt must be (Bt, L, D)");
  TORCH_CHECK(S == dt_rank + 2 * N && bc_b.sizes() == bc_f.sizes() && bc_f.size(0) == Bt && bc_f.size(1) == L,
              "bc must be (Bt, L, dt_rank + 2N)");
  TORCH_CHECK(A_f.size(0) == Dm && A_b.sizes() == A_f.sizes(), "A must be (D, N)");
  TORCH_CHECK(N <= 64, "d_state must be at most 64, got ", N);
  TORCH_CHECK(z.sizes() == at::IntArrayRef({Bt, L, Dm}), "z must be (Bt, L, D)");
  dt_f = rows(dt_f), dt_b = rows(dt_b), bc_f = rows(bc_f), bc_b = rows(bc_b), z = rows(z);
  auto c = [](const torch::Tensor& t) { return t.contiguous(); };
  A_f = c(A_f), A_b = c(A_b), D_f = c(D_f), D_b = c(D_b), bias_f = c(bias_f), bias_b = c(bias_b);
  auto y = torch::empty({Bt, L, Dm}, u_f.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "bimamba_scan", [&] {
    using T = scalar_t;
    auto dir = [](const torch::Tensor& u, const torch::Tensor& dt, const torch::Tensor& bc, const torch::Tensor& A,
                  const torch::Tensor& Dv, const torch::Tensor& bias) {
      return Direction<T>{u.data_ptr<T>(),  u.stride(0),       u.stride(1),        u.stride(2),
                          dt.data_ptr<T>(), dt.stride(0),      dt.stride(1),       bc.data_ptr<T>(),
                          bc.stride(0),     bc.stride(1),      A.data_ptr<T>(),    Dv.data_ptr<T>(),
                          bias.data_ptr<T>()};
    };
    run<T>(dir(u_f, dt_f, bc_f, A_f, D_f, bias_f), dir(u_b, dt_b, bc_b, A_b, D_b, bias_b), z.data_ptr<T>(),
           z.stride(0), z.stride(1), y.data_ptr<T>(), Bt, Dm, L, N, dt_rank, use_softplus, static_cast<T>(scale));
  });
  return y;
}

// x (Bt, D, L) with strides sb, 1, sl; wf, wb (W, D) (taps first); bf, bb (D,); u, v (Bt, L, D) contiguous.
template <typename T>
void conv_run(const T* x, int64_t sb, int64_t sl, const T* wf, const T* bf, const T* wb, const T* bb, T* u, T* v,
              int64_t Bt, int64_t Dm, int64_t L, int64_t W) {
  const std::vector<T> zeros(Dm, T(0));  // the rows outside the sequence (still multiplied, so that a non-finite
                                         // weight gives what the zero-padded reference gives)
  at::parallel_for(0, Bt * L, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / L, t = row % L;
      T* SSMK_RESTRICT ut = u + row * Dm;
      T* SSMK_RESTRICT vt = v + row * Dm;
#pragma omp simd
      for (int64_t d = 0; d < Dm; ++d) ut[d] = bf[d], vt[d] = bb[d];
      for (int64_t k = 0; k < W; ++k) {
        const int64_t sf = t - W + 1 + k, sb_ = t + W - 1 - k;  // the input rows under tap k of each direction
        const T* SSMK_RESTRICT xf = sf >= 0 ? x + b * sb + sf * sl : zeros.data();
        const T* SSMK_RESTRICT xb = sb_ < L ? x + b * sb + sb_ * sl : zeros.data();
        const T* SSMK_RESTRICT wfk = wf + k * Dm;
        const T* SSMK_RESTRICT wbk = wb + k * Dm;
#pragma omp simd
        for (int64_t d = 0; d < Dm; ++d) {
          ut[d] += wfk[d] * xf[d];
          vt[d] += wbk[d] * xb[d];
        }
      }
#pragma omp simd
      for (int64_t d = 0; d < Dm; ++d) {
        ut[d] = silu(ut[d]);
        vt[d] = silu(vt[d]);
      }
    }
  });
}

std::vector<torch::Tensor> conv(torch::Tensor x, torch::Tensor w_f, torch::Tensor b_f, torch::Tensor w_b,
                                torch::Tensor b_b) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "x must be float32 or float64, got ", dtype);
  check(x, "x", dtype, 3);
  for (auto* t : {&w_f, &w_b}) check(*t, "conv weight", dtype, 2);
  for (auto* t : {&b_f, &b_b}) check(*t, "conv bias", dtype, 1);
  const int64_t Bt = x.size(0), Dm = x.size(1), L = x.size(2), W = w_f.size(1);
  TORCH_CHECK(w_f.size(0) == Dm && w_b.sizes() == w_f.sizes(), "conv weights must be (D, W)");
  TORCH_CHECK(b_f.size(0) == Dm && b_b.size(0) == Dm, "conv biases must be (D,)");
  auto wf = w_f.t().contiguous(), wb = w_b.t().contiguous(), bf = b_f.contiguous(), bb = b_b.contiguous();
  if (x.stride(1) != 1) x = x.transpose(1, 2).contiguous().transpose(1, 2);  // channel-contiguous rows
  auto u = torch::empty({Bt, L, Dm}, x.options()), v = torch::empty({Bt, L, Dm}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "bimamba_conv", [&] {
    using T = scalar_t;
    conv_run<T>(x.data_ptr<T>(), x.stride(0), x.stride(2), wf.data_ptr<T>(), bf.data_ptr<T>(), wb.data_ptr<T>(),
                bb.data_ptr<T>(), u.data_ptr<T>(), v.data_ptr<T>(), Bt, Dm, L, W);
  });
  return {u.transpose(1, 2), v.transpose(1, 2)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd, "fused bidirectional scan (inference)");
  m.def("conv", &conv, "both directions' depthwise conv + SiLU (inference)");
}
