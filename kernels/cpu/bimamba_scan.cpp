// Fused bidirectional selective scan of Vim's bimamba-v2 mixer, inference only (no autograd).
//
// For each row (b, d) both directions run in one task over the same inputs, the backward one from the last step
// to the first, so nothing is flipped or copied:
//   forward  h_t = exp(dt_t A_f) h_{t-1} + dt_t u_t B_t        yf_t = C_t . h_t + D_f u_t      t = 0 .. L-1
//   backward g_t = exp(et_t A_b) g_{t+1} + et_t v_t B'_t       yb_t = C'_t . g_t + D_b v_t     t = L-1 .. 0
//   y_t = (yf_t + yb_t) * silu(z_t) * scale
// with dt = softplus(dt_raw + bias) (optional softplus). Layouts are the ones the mixer's linear layers produce:
//   u, v                   (Bt, D, L) contiguous (the two directions' conv outputs, both in time order)
//   dt_raw, et_raw         (Bt, L, D) contiguous (dt_proj outputs, bias not added)
//   bc_f, bc_b             (Bt, L, R + 2N) contiguous (x_proj outputs: dt rank R, then B, then C)
//   A_f, A_b               (D, N); D_f, D_b, bias_f, bias_b (D,)
//   z                      (Bt, L, D) with any row stride (a view of in_proj's output)
//   y (returned)           (Bt, L, D) contiguous, ready for out_proj
// float runs in float with a vectorisable exp; double in double with std::exp.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp(x) for float in a form GCC vectorises inside `omp simd`: x = k ln2 + r (Cody-Waite, two constants),
// exp(r) by Cephes' degree-6 expf polynomial, 2^k through the exponent bits. Inputs are clamped to [-87, 88];
// a NaN fails both comparisons and stays NaN through the polynomial.
inline float vexp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}
inline double vexp(double x) { return std::exp(x); }

template <typename T>
inline T softplus(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }

template <typename T>
struct Direction {
  const T* u;     // (Bt, D, L)
  const T* dt;    // (Bt, L, D)
  const T* bc;    // (Bt, L, S)
  const T* A;     // (D, N)
  const T* Dv;    // (D,)
  const T* bias;  // (D,)
};

// One direction of one row: out[t] (+)= C_t . h_t + D u_t, walking t forward or backward.
template <typename T>
inline void scan_row(const Direction<T>& p, int64_t b, int64_t d, int64_t L, int64_t Dm, int64_t N, int64_t S,
                     int64_t R, bool use_softplus, bool backward, T* h, T* out) {
  const T* u = p.u + (b * Dm + d) * L;
  const T* A = p.A + d * N;
  const T Dd = p.Dv[d], bias = p.bias[d];
  for (int64_t n = 0; n < N; ++n) h[n] = T(0);
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = backward ? L - 1 - i : i;
    T dt = p.dt[(b * L + t) * Dm + d] + bias;
    if (use_softplus) dt = softplus(dt);
    const T du = dt * u[t];
    const T* Bt = p.bc + (b * L + t) * S + R;
    const T* Ct = Bt + N;
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const T hn = vexp(dt * A[n]) * h[n] + du * Bt[n];
      h[n] = hn;
      acc += hn * Ct[n];
    }
    const T yt = acc + Dd * u[t];
    out[t] = backward ? out[t] + yt : yt;
  }
}

template <typename T>
void run(const Direction<T>& f, const Direction<T>& bw, const T* z, int64_t z_row, T* y, int64_t Bt, int64_t Dm,
         int64_t L, int64_t N, int64_t S, int64_t R, bool use_softplus, T scale) {
  at::parallel_for(0, Bt * Dm, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(N), acc(L);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Dm, d = row % Dm;
      scan_row(f, b, d, L, Dm, N, S, R, use_softplus, false, h.data(), acc.data());
      scan_row(bw, b, d, L, Dm, N, S, R, use_softplus, true, h.data(), acc.data());
      for (int64_t t = 0; t < L; ++t) {
        const T zt = z[(b * L + t) * z_row + d];
        y[(b * L + t) * Dm + d] = acc[t] * (zt / (T(1) + std::exp(-zt))) * scale;
      }
    }
  });
}

void check(const torch::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
}

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
  TORCH_CHECK(z.sizes() == at::IntArrayRef({Bt, L, Dm}) && z.stride(2) == 1 && z.stride(0) == L * z.stride(1),
              "z must be (Bt, L, D) with unit channel stride and uniform rows");
  auto c = [](const torch::Tensor& t) { return t.contiguous(); };
  u_f = c(u_f), u_b = c(u_b), dt_f = c(dt_f), dt_b = c(dt_b), bc_f = c(bc_f), bc_b = c(bc_b);
  A_f = c(A_f), A_b = c(A_b), D_f = c(D_f), D_b = c(D_b), bias_f = c(bias_f), bias_b = c(bias_b);
  auto y = torch::empty({Bt, L, Dm}, u_f.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "bimamba_scan", [&] {
    using T = scalar_t;
    Direction<T> f{u_f.data_ptr<T>(), dt_f.data_ptr<T>(), bc_f.data_ptr<T>(), A_f.data_ptr<T>(), D_f.data_ptr<T>(),
                   bias_f.data_ptr<T>()};
    Direction<T> b{u_b.data_ptr<T>(), dt_b.data_ptr<T>(), bc_b.data_ptr<T>(), A_b.data_ptr<T>(), D_b.data_ptr<T>(),
                   bias_b.data_ptr<T>()};
    run<T>(f, b, z.data_ptr<T>(), z.stride(1), y.data_ptr<T>(), Bt, Dm, L, N, S, dt_rank, use_softplus,
           static_cast<T>(scale));
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("fwd", &fwd, "fused bidirectional selective scan (inference)");
}
