// ssmkit CPU Krylov sequences of SpaceTime's companion matrices, forward and backward.
//
// For each of H kernels with vectors a, b, k (d,) and a start vector v (d,):
//   open loop   (closed = false): x_{l+1} = A x_l = shift_down(x_l) + a x_l[d-1]                 (A = S + a e_d^T)
//   closed loop (closed = true):  x_{l+1} = M x_l = shift_up(x_l) + e_d (a . x_l) + k (b . x_l)   (M = (A + b k^T)^T)
// with x_0 = v, l < L. The backward runs the adjoint lambda_l = G_l + A^T lambda_{l+1} (or M^T) from l = L-1 down,
//   A^T y = shift_up(y) + e_d (a . y),   M^T y = shift_down(y) + a y[d-1] + b (k . y),
// and accumulates the parameter gradients from the saved columns x_l.
//
// Layouts (the Python wrapper prepares them): a, b, k (H, d); v (M, H, d) (M: the flattened leading dims of v);
// columns X (M, H, L, d); all contiguous, float or double. Parallel over the H kernels: a task owns its kernel's
// parameter gradients and sums over M itself (deterministic).

#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace {

template <typename T>
SSMK_INLINE T dot(const T* SSMK_RESTRICT x, const T* SSMK_RESTRICT y, int64_t d) {
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < d; ++i) acc += x[i] * y[i];
  return acc;
}

template <typename T>
void forward_kernel(const T* a, const T* b, const T* k, const T* v, T* X, int64_t M, int64_t H, int64_t L,
                    int64_t d, bool closed, int64_t h) {
  const T* SSMK_RESTRICT ah = a + h * d;
  const T* SSMK_RESTRICT bh = closed ? b + h * d : nullptr;
  const T* SSMK_RESTRICT kh = closed ? k + h * d : nullptr;
  for (int64_t m = 0; m < M; ++m) {
    T* SSMK_RESTRICT x = X + (m * H + h) * L * d;
    if (L > 0) std::copy(v + (m * H + h) * d, v + (m * H + h + 1) * d, x);
    for (int64_t l = 1; l < L; ++l) {
      const T* SSMK_RESTRICT p = x + (l - 1) * d;
      T* SSMK_RESTRICT c = x + l * d;
      if (closed) {
        const T alpha = dot(ah, p, d), beta = dot(bh, p, d);
#pragma omp simd
        for (int64_t i = 0; i < d - 1; ++i) c[i] = p[i + 1] + kh[i] * beta;
        c[d - 1] = alpha + kh[d - 1] * beta;
      } else {
        const T last = p[d - 1];
        c[0] = ah[0] * last;
#pragma omp simd
        for (int64_t i = 1; i < d; ++i) c[i] = p[i - 1] + ah[i] * last;
      }
    }
  }
}

template <typename T>
void backward_kernel(const T* a, const T* b, const T* k, const T* X, const T* G, T* dv, T* da, T* db, T* dk,
                     int64_t M, int64_t H, int64_t L, int64_t d, bool closed, int64_t h, T* lam, T* nxt) {
  const T* SSMK_RESTRICT ah = a + h * d;
  const T* SSMK_RESTRICT bh = closed ? b + h * d : nullptr;
  const T* SSMK_RESTRICT kh = closed ? k + h * d : nullptr;
  T* SSMK_RESTRICT gA = da + h * d;
  T* SSMK_RESTRICT gB = closed ? db + h * d : nullptr;
  T* SSMK_RESTRICT gK = closed ? dk + h * d : nullptr;
  std::fill(gA, gA + d, T(0));
  if (closed) {
    std::fill(gB, gB + d, T(0));
    std::fill(gK, gK + d, T(0));
  }
  for (int64_t m = 0; m < M; ++m) {
    const T* SSMK_RESTRICT x = X + (m * H + h) * L * d;
    const T* SSMK_RESTRICT g = G + (m * H + h) * L * d;
    T* SSMK_RESTRICT out = dv + (m * H + h) * d;
    if (L == 0) {
      std::fill(out, out + d, T(0));
      continue;
    }
    std::copy(g + (L - 1) * d, g + L * d, lam);
    for (int64_t l = L - 2; l >= 0; --l) {  // lam = lambda_{l+1}; x_l's part of the step x_{l+1} = F(x_l)
      const T* SSMK_RESTRICT xl = x + l * d;
      const T* SSMK_RESTRICT gl = g + l * d;
      if (closed) {
        const T s = lam[d - 1], kl = dot(kh, lam, d), bx = dot(bh, xl, d);
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) {
          gA[i] += xl[i] * s;
          gB[i] += xl[i] * kl;
          gK[i] += lam[i] * bx;
        }
        nxt[0] = gl[0] + ah[0] * s + bh[0] * kl;
#pragma omp simd
        for (int64_t i = 1; i < d; ++i) nxt[i] = gl[i] + lam[i - 1] + ah[i] * s + bh[i] * kl;
      } else {
        const T last = xl[d - 1], al = dot(ah, lam, d);
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) gA[i] += lam[i] * last;
#pragma omp simd
        for (int64_t i = 0; i < d - 1; ++i) nxt[i] = gl[i] + lam[i + 1];
        nxt[d - 1] = gl[d - 1] + al;
      }
      std::swap(lam, nxt);
    }
    std::copy(lam, lam + d, out);
  }
}

void check(const torch::Tensor& t, const char* name, const torch::Tensor& like, at::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " must have dtype ", like.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

// v (M, H, d) -> columns (M, H, L, d). b and k are used (and checked) only when `closed`.
torch::Tensor krylov_fwd(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& k,
                         const torch::Tensor& v, int64_t L, bool closed) {
  TORCH_CHECK(a.dim() == 2 && v.dim() == 3, "a must be (H, d) and v (M, H, d)");
  TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble, "a must be float32 or float64");
  const int64_t H = a.size(0), d = a.size(1), M = v.size(0);
  TORCH_CHECK(d >= 1 && L >= 0, "need d >= 1 and L >= 0");
  check(a, "a", a, {H, d});
  check(v, "v", a, {M, H, d});
  if (closed) {
    check(b, "b", a, {H, d});
    check(k, "k", a, {H, d});
  }
  auto X = torch::empty({M, H, L, d}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ssmkit_krylov_fwd", [&] {
    const scalar_t* bp = closed ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* kp = closed ? k.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        forward_kernel<scalar_t>(a.data_ptr<scalar_t>(), bp, kp, v.data_ptr<scalar_t>(), X.data_ptr<scalar_t>(), M,
                                 H, L, d, closed, h);
      }
    });
  });
  return X;
}

// Returns {dv (M, H, d), da (H, d), db, dk} (db, dk empty unless `closed`) from the columns X and their gradient G.
std::vector<torch::Tensor> krylov_bwd(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& k,
                                      const torch::Tensor& X, const torch::Tensor& G, bool closed) {
  TORCH_CHECK(a.dim() == 2 && X.dim() == 4, "a must be (H, d) and X (M, H, L, d)");
  const int64_t H = a.size(0), d = a.size(1), M = X.size(0), L = X.size(2);
  check(a, "a", a, {H, d});
  check(X, "columns", a, {M, H, L, d});
  check(G, "grad of columns", a, {M, H, L, d});
  if (closed) {
    check(b, "b", a, {H, d});
    check(k, "k", a, {H, d});
  }
  auto dv = torch::empty({M, H, d}, a.options());
  auto da = torch::empty({H, d}, a.options());
  auto db = closed ? torch::empty({H, d}, a.options()) : torch::empty({0}, a.options());
  auto dk = closed ? torch::empty({H, d}, a.options()) : torch::empty({0}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ssmkit_krylov_bwd", [&] {
    const scalar_t* bp = closed ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* kp = closed ? k.data_ptr<scalar_t>() : nullptr;
    scalar_t* dbp = closed ? db.data_ptr<scalar_t>() : nullptr;
    scalar_t* dkp = closed ? dk.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(2 * d);
      for (int64_t h = begin; h < end; ++h) {
        backward_kernel<scalar_t>(a.data_ptr<scalar_t>(), bp, kp, X.data_ptr<scalar_t>(), G.data_ptr<scalar_t>(),
                                  dv.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), dbp, dkp, M, H, L, d, closed, h,
                                  buf.data(), buf.data() + d);
      }
    });
  });
  return {dv, da, db, dk};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmkit CPU Krylov sequences of companion matrices (open and closed loop), forward and backward";
  m.def("fwd", &krylov_fwd, "Krylov columns forward");
  m.def("bwd", &krylov_bwd, "Krylov columns backward");
}
