// Fused single-token steps for decoding and streaming, inference only (no autograd). One call does what the
// eager PyTorch step does in 20-40 small ops, whose per-op dispatch cost dominates at batch 1.
//
// mamba_step       the Mamba mixer: in_proj -> conv step -> silu -> x_proj -> dt_proj -> softplus -> state update
//                  -> C . h + D u -> * silu(z) -> out_proj
// time_ssd_step    TiM4Rec's time-aware SSD mixer (TiSSD): as Mamba-2's step, with the step size scaled by a per-head
//                  time signal tau (time MLP -> two depthwise causal time convs with Hardswish), a gated RMSNorm and
//                  the next layer's time feature T' = lerp(tau, T, sigmoid(W_g T + b_g))
// postnorm_ffn     per row: h = LN1(y (+ x)); out = LN2(h + W2 act(W1 h + b1) + b2)   (act: gelu, hardswish, relu)
//
// Every tensor has the input's dtype (float or double: float runs in float with vec_math.h's exp, double in double
// with the C library), rows of the batch are independent. States come in (B, ...) and the new states are returned as
// new tensors: a step never writes into the state it was given. NaN / inf propagate as in the eager ops.
#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace {

using torch::Tensor;
using OptTensor = c10::optional<Tensor>;

// y[o] = W[o, :] . x (+ b[o]), W (out, in) row-major.
template <typename T>
SSMK_INLINE void matvec(const T* SSMK_RESTRICT W, const T* SSMK_RESTRICT x, const T* SSMK_RESTRICT b,
                        T* SSMK_RESTRICT y, int64_t out, int64_t in) {
  for (int64_t o = 0; o < out; ++o) {
    const T* w = W + o * in;
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < in; ++i) acc += w[i] * x[i];
    y[o] = b ? acc + b[o] : acc;
  }
}

template <typename T>
SSMK_INLINE T silu(T x) { return x / (T(1) + ssmk::exp_vec(-x)); }

using ssmk::sigmoid;

// x * relu6(x + 3) / 6; the clamps keep NaN.
template <typename T>
SSMK_INLINE T hardswish(T x) {
  T t = x + T(3);
  t = t < T(0) ? T(0) : t;
  t = t > T(6) ? T(6) : t;
  return x * t / T(6);
}

// One position of a depthwise causal conv over `C` channels of width W: y[c] = bias[c] + sum_k w[c, k] win_k with
// the window = (past[c, 0 .. W-2], x[c]); writes the new past (past[c, 1 ..], x[c]) to `next`.
template <typename T>
SSMK_INLINE void conv_step(const T* x, const T* past, const T* w, const T* bias, T* y, T* next, int64_t C, int64_t W) {
  for (int64_t c = 0; c < C; ++c) {
    const T* p = past + c * (W - 1);
    const T* wc = w + c * W;
    T acc = T(0);
    for (int64_t k = 0; k < W - 1; ++k) acc += p[k] * wc[k];
    acc += x[c] * wc[W - 1];
    y[c] = bias ? acc + bias[c] : acc;
    T* n = next + c * (W - 1);
    for (int64_t k = 0; k + 1 < W - 1; ++k) n[k] = p[k + 1];
    if (W > 1) n[W - 2] = x[c];
  }
}

template <typename T>
const T* ptr(const OptTensor& t) { return t.has_value() ? t->data_ptr<T>() : nullptr; }

// Checks a tensor's device, dtype and rank, and makes it contiguous (a no-op when it is).
void check_dtype(Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
  t = t.contiguous();
}

void check_shape(Tensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  check_dtype(t, name, dtype, static_cast<int64_t>(shape.size()));
  TORCH_CHECK(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

void check_opt(OptTensor& t, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  if (t.has_value()) check_shape(*t, name, dtype, shape);
}

// ---------------------------------------------------------------------------------------------------------------
// Mamba

template <typename T>
void mamba_rows(const T* x, const T* conv, const T* ssm, const T* in_w, const T* in_b, const T* conv_w,
                const T* conv_b, const T* xp_w, const T* dt_w, const T* dt_b, const T* A_log, const T* Dv,
                const T* out_w, const T* out_b, T* y, T* conv_next, T* ssm_next, int64_t Bt, int64_t Dm, int64_t Di,
                int64_t W, int64_t N, int64_t R) {
  at::parallel_for(0, Bt, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(2 * Di + Di + (R + 2 * N) + Di + Di);
    T* xz = buf.data();          // (2 Di): xs then z
    T* u = xz + 2 * Di;          // (Di) conv output after silu
    T* xdbl = u + Di;            // (R + 2N): dt rank, B, C
    T* dt = xdbl + R + 2 * N;    // (Di)
    T* yi = dt + Di;             // (Di) gated SSM output
    for (int64_t b = begin; b < end; ++b) {
      matvec(in_w, x + b * Dm, in_b, xz, 2 * Di, Dm);
      conv_step(xz, conv + b * Di * (W - 1), conv_w, conv_b, u, conv_next + b * Di * (W - 1), Di, W);
      for (int64_t d = 0; d < Di; ++d) u[d] = silu(u[d]);
      matvec(xp_w, u, static_cast<const T*>(nullptr), xdbl, R + 2 * N, Di);
      matvec(dt_w, xdbl, static_cast<const T*>(nullptr), dt, Di, R);
      const T* Bv = xdbl + R;
      const T* Cv = Bv + N;
      const T* h0 = ssm + b * Di * N;
      T* h1 = ssm_next + b * Di * N;
      for (int64_t d = 0; d < Di; ++d) {
        const T delta = ssmk::softplus(dt[d] + dt_b[d]);
        const T du = delta * u[d];
        const T* Al = A_log + d * N;
        const T* hp = h0 + d * N;
        T* hn = h1 + d * N;
        T acc = T(0);
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const T h = ssmk::exp_vec(-delta * ssmk::exp_vec(Al[n])) * hp[n] + du * Bv[n];
          hn[n] = h;
          acc += h * Cv[n];
        }
        yi[d] = (acc + Dv[d] * u[d]) * silu(xz[Di + d]);
      }
      matvec(out_w, yi, out_b, y + b * Dm, Dm, Di);
    }
  });
}

std::vector<Tensor> mamba_step(Tensor x, Tensor conv_state, Tensor ssm_state, Tensor in_w, OptTensor in_b,
                               Tensor conv_w, OptTensor conv_b, Tensor xp_w, Tensor dt_w, Tensor dt_b, Tensor A_log,
                               Tensor D, Tensor out_w, OptTensor out_b) {
  const auto f = x.scalar_type();
  TORCH_CHECK(f == at::kFloat || f == at::kDouble, "x must be float32 or float64, got ", f);
  check_dtype(x, "x", f, 2);
  check_dtype(conv_w, "conv_weight", f, 2);
  check_dtype(A_log, "A_log", f, 2);
  const int64_t Bt = x.size(0), Dm = x.size(1), Di = conv_w.size(0), W = conv_w.size(1), N = A_log.size(1);
  const int64_t R = dt_w.dim() == 2 ? dt_w.size(1) : 0;
  check_shape(conv_state, "conv_state", f, {Bt, Di, W - 1});
  check_shape(ssm_state, "ssm_state", f, {Bt, Di, N});
  check_shape(in_w, "in_proj_weight", f, {2 * Di, Dm});
  check_opt(in_b, "in_proj_bias", f, {2 * Di});
  check_opt(conv_b, "conv_bias", f, {Di});
  check_shape(xp_w, "x_proj_weight", f, {R + 2 * N, Di});
  check_shape(dt_w, "dt_proj_weight", f, {Di, R});
  check_shape(dt_b, "dt_proj_bias", f, {Di});
  check_shape(A_log, "A_log", f, {Di, N});
  check_shape(D, "D", f, {Di});
  check_shape(out_w, "out_proj_weight", f, {Dm, Di});
  check_opt(out_b, "out_proj_bias", f, {Dm});
  auto y = torch::empty({Bt, Dm}, x.options());
  auto conv_next = torch::empty({Bt, Di, W - 1}, x.options());
  auto ssm_next = torch::empty({Bt, Di, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(f, "mamba_step", [&] {
    using T = scalar_t;
    mamba_rows<T>(x.data_ptr<T>(), conv_state.data_ptr<T>(), ssm_state.data_ptr<T>(), in_w.data_ptr<T>(),
                  ptr<T>(in_b), conv_w.data_ptr<T>(), ptr<T>(conv_b), xp_w.data_ptr<T>(), dt_w.data_ptr<T>(),
                  dt_b.data_ptr<T>(), A_log.data_ptr<T>(), D.data_ptr<T>(), out_w.data_ptr<T>(), ptr<T>(out_b),
                  y.data_ptr<T>(), conv_next.data_ptr<T>(), ssm_next.data_ptr<T>(), Bt, Dm, Di, W, N, R);
  });
  return {y, conv_next, ssm_next};
}

// ---------------------------------------------------------------------------------------------------------------
// TiSSD (time-aware SSD)

template <typename T>
struct TiWeights {
  const T *in_w, *conv_w, *conv_b, *mlp1_w, *mlp1_b, *mlp2_w, *mlp2_b, *tc1_w, *tc1_b, *tc2_w, *tc2_b, *gate_w,
      *gate_b, *dt_bias, *A_log, *D, *norm_w, *out_w;
};

template <typename T>
void time_ssd_rows(const TiWeights<T>& p, const T* x, const T* Tt, const T* conv, const T* time1, const T* time2,
                   const T* ssm, T* y, T* T_next, T* conv_next, T* time1_next, T* time2_next, T* ssm_next, int64_t Bt,
                   int64_t Dm, int64_t H, int64_t P, int64_t N, int64_t W, T eps) {
  const int64_t Di = H * P, Cd = Di + 2 * N, Z = Di + Cd + H;
  at::parallel_for(0, Bt, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(Z + Cd + 5 * H + Di);
    T* zxbcdt = buf.data();      // (Z): z, xBC, dt
    T* xbc = zxbcdt + Z;         // (Cd) after the conv and silu: x, B, C
    T* s = xbc + Cd;             // (H) time MLP hidden, then the time conv input
    T* v = s + H;                // (H)
    T* tau = v + H;              // (H)
    T* delta = tau + H;          // (H)
    T* g = delta + H;            // (H)
    T* yi = g + H;               // (Di)
    for (int64_t b = begin; b < end; ++b) {
      const T* Tb = Tt + b * H;
      matvec(p.in_w, x + b * Dm, static_cast<const T*>(nullptr), zxbcdt, Z, Dm);
      conv_step(zxbcdt + Di, conv + b * Cd * (W - 1), p.conv_w, p.conv_b, xbc, conv_next + b * Cd * (W - 1), Cd, W);
      for (int64_t c = 0; c < Cd; ++c) xbc[c] = silu(xbc[c]);
      // time signal: s = silu(W1 T + b1); v = T * (W2 s + b2); tau = hs(conv2(hs(conv1(v))))
      matvec(p.mlp1_w, Tb, p.mlp1_b, s, H, H);
      for (int64_t h = 0; h < H; ++h) s[h] = silu(s[h]);
      matvec(p.mlp2_w, s, p.mlp2_b, v, H, H);
      for (int64_t h = 0; h < H; ++h) v[h] *= Tb[h];
      conv_step(v, time1 + b * H * (W - 1), p.tc1_w, p.tc1_b, s, time1_next + b * H * (W - 1), H, W);
      for (int64_t h = 0; h < H; ++h) s[h] = hardswish(s[h]);
      conv_step(s, time2 + b * H * (W - 1), p.tc2_w, p.tc2_b, tau, time2_next + b * H * (W - 1), H, W);
      const T* dt = zxbcdt + Di + Cd;
      for (int64_t h = 0; h < H; ++h) {
        tau[h] = hardswish(tau[h]);
        delta[h] = ssmk::softplus(dt[h] * tau[h] + p.dt_bias[h]);
      }
      const T* Bv = xbc + Di;
      const T* Cv = Bv + N;
      for (int64_t h = 0; h < H; ++h) {
        const T decay = ssmk::exp_vec(-delta[h] * ssmk::exp_vec(p.A_log[h]));
        for (int64_t q = 0; q < P; ++q) {
          const int64_t d = h * P + q;
          const T dx = delta[h] * xbc[d];
          const T* hp = ssm + (b * Di + d) * N;
          T* hn = ssm_next + (b * Di + d) * N;
          T acc = T(0);
#pragma omp simd reduction(+ : acc)
          for (int64_t n = 0; n < N; ++n) {
            const T st = decay * hp[n] + dx * Bv[n];
            hn[n] = st;
            acc += st * Cv[n];
          }
          yi[d] = (acc + xbc[d] * p.D[h]) * silu(zxbcdt[d]);
        }
      }
      T ss = T(0);
      for (int64_t d = 0; d < Di; ++d) ss += yi[d] * yi[d];
      const T inv = T(1) / std::sqrt(ss / static_cast<T>(Di) + eps);
      for (int64_t d = 0; d < Di; ++d) yi[d] = yi[d] * inv * p.norm_w[d];
      matvec(p.out_w, yi, static_cast<const T*>(nullptr), y + b * Dm, Dm, Di);
      matvec(p.gate_w, Tb, p.gate_b, g, H, H);
      for (int64_t h = 0; h < H; ++h) T_next[b * H + h] = tau[h] + sigmoid(g[h]) * (Tb[h] - tau[h]);
    }
  });
}

std::vector<Tensor> time_ssd_step(Tensor x, Tensor Tt, Tensor conv, Tensor time1, Tensor time2, Tensor ssm,
                                  Tensor in_w, Tensor conv_w, Tensor conv_b, Tensor mlp1_w, Tensor mlp1_b,
                                  Tensor mlp2_w, Tensor mlp2_b, Tensor tc1_w, Tensor tc1_b, Tensor tc2_w, Tensor tc2_b,
                                  Tensor gate_w, Tensor gate_b, Tensor dt_bias, Tensor A_log, Tensor D, Tensor norm_w,
                                  double eps, Tensor out_w) {
  const auto f = x.scalar_type();
  TORCH_CHECK(f == at::kFloat || f == at::kDouble, "x must be float32 or float64, got ", f);
  check_dtype(x, "x", f, 2);
  check_dtype(ssm, "ssm_state", f, 4);
  check_dtype(conv_w, "conv_weight", f, 2);
  const int64_t Bt = x.size(0), Dm = x.size(1), H = ssm.size(1), P = ssm.size(2), N = ssm.size(3);
  const int64_t W = conv_w.size(1), Di = H * P, Cd = Di + 2 * N;
  check_shape(ssm, "ssm_state", f, {Bt, H, P, N});
  check_shape(Tt, "T", f, {Bt, H});
  check_shape(conv, "conv_state", f, {Bt, Cd, W - 1});
  check_shape(time1, "time1_state", f, {Bt, H, W - 1});
  check_shape(time2, "time2_state", f, {Bt, H, W - 1});
  check_shape(in_w, "in_proj_weight", f, {2 * Di + 2 * N + H, Dm});
  check_shape(conv_w, "conv_weight", f, {Cd, W});
  check_shape(conv_b, "conv_bias", f, {Cd});
  for (auto* t : {&mlp1_w, &mlp2_w, &gate_w}) check_shape(*t, "time weight", f, {H, H});
  for (auto* t : {&tc1_w, &tc2_w}) check_shape(*t, "time conv weight", f, {H, W});
  for (auto* t : {&mlp1_b, &mlp2_b, &tc1_b, &tc2_b, &gate_b, &dt_bias, &A_log, &D}) check_shape(*t, "head vector", f, {H});
  check_shape(norm_w, "norm_weight", f, {Di});
  check_shape(out_w, "out_proj_weight", f, {Dm, Di});
  auto y = torch::empty({Bt, Dm}, x.options());
  auto T_next = torch::empty({Bt, H}, x.options());
  auto conv_next = torch::empty({Bt, Cd, W - 1}, x.options());
  auto time1_next = torch::empty({Bt, H, W - 1}, x.options());
  auto time2_next = torch::empty({Bt, H, W - 1}, x.options());
  auto ssm_next = torch::empty({Bt, H, P, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(f, "time_ssd_step", [&] {
    using T = scalar_t;
    TiWeights<T> p{in_w.data_ptr<T>(),   conv_w.data_ptr<T>(), conv_b.data_ptr<T>(), mlp1_w.data_ptr<T>(),
                   mlp1_b.data_ptr<T>(), mlp2_w.data_ptr<T>(), mlp2_b.data_ptr<T>(), tc1_w.data_ptr<T>(),
                   tc1_b.data_ptr<T>(),  tc2_w.data_ptr<T>(),  tc2_b.data_ptr<T>(),  gate_w.data_ptr<T>(),
                   gate_b.data_ptr<T>(), dt_bias.data_ptr<T>(), A_log.data_ptr<T>(), D.data_ptr<T>(),
                   norm_w.data_ptr<T>(), out_w.data_ptr<T>()};
    time_ssd_rows<T>(p, x.data_ptr<T>(), Tt.data_ptr<T>(), conv.data_ptr<T>(), time1.data_ptr<T>(),
                     time2.data_ptr<T>(), ssm.data_ptr<T>(), y.data_ptr<T>(), T_next.data_ptr<T>(),
                     conv_next.data_ptr<T>(), time1_next.data_ptr<T>(), time2_next.data_ptr<T>(),
                     ssm_next.data_ptr<T>(), Bt, Dm, H, P, N, W, static_cast<T>(eps));
  });
  return {y, T_next, conv_next, time1_next, time2_next, ssm_next};
}

// ---------------------------------------------------------------------------------------------------------------
// post-norm feed-forward

// out = (v - mean) / sqrt(var + eps) * w + b over n values (biased variance, two passes as torch.layer_norm).
template <typename T>
SSMK_INLINE void layer_norm(const T* v, const T* w, const T* b, T eps, T* out, int64_t n) {
  T mean = T(0);
  for (int64_t i = 0; i < n; ++i) mean += v[i];
  mean /= static_cast<T>(n);
  T var = T(0);
  for (int64_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
  const T inv = T(1) / std::sqrt(var / static_cast<T>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (v[i] - mean) * inv * w[i] + b[i];
}

template <typename T>
void ffn_rows(const T* yin, const T* xin, const T* ln1_w, const T* ln1_b, const T* w1, const T* b1, const T* w2,
              const T* b2, const T* ln2_w, const T* ln2_b, T eps1, T eps2, int64_t act, T* out, int64_t rows,
              int64_t Dm, int64_t I) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(3 * Dm + I);
    T* s = buf.data();   // (Dm) the residual sum
    T* h = s + Dm;       // (Dm) LN1 output
    T* o = h + Dm;       // (Dm)
    T* a = o + Dm;       // (I)
    for (int64_t r = begin; r < end; ++r) {
      for (int64_t i = 0; i < Dm; ++i) s[i] = xin ? yin[r * Dm + i] + xin[r * Dm + i] : yin[r * Dm + i];
      layer_norm(s, ln1_w, ln1_b, eps1, h, Dm);
      matvec(w1, h, b1, a, I, Dm);
      for (int64_t i = 0; i < I; ++i) {
        const T v = a[i];
        a[i] = act == 0 ? T(0.5) * v * (T(1) + std::erf(v * T(0.70710678118654752440)))
               : act == 1 ? hardswish(v)
                          : (v < T(0) ? T(0) : v);
      }
      matvec(w2, a, b2, o, Dm, I);
      for (int64_t i = 0; i < Dm; ++i) o[i] += h[i];
      layer_norm(o, ln2_w, ln2_b, eps2, out + r * Dm, Dm);
    }
  });
}

Tensor postnorm_ffn(Tensor y, OptTensor x, Tensor ln1_w, Tensor ln1_b, Tensor w1, Tensor b1, Tensor w2, Tensor b2,
                    Tensor ln2_w, Tensor ln2_b, double eps1, double eps2, int64_t act) {
  const auto f = y.scalar_type();
  TORCH_CHECK(f == at::kFloat || f == at::kDouble, "y must be float32 or float64, got ", f);
  TORCH_CHECK(act >= 0 && act <= 2, "activation code must be 0 (gelu), 1 (hardswish) or 2 (relu), got ", act);
  check_dtype(y, "y", f, 2);
  check_dtype(w1, "w1", f, 2);
  const int64_t rows = y.size(0), Dm = y.size(1), I = w1.size(0);
  check_opt(x, "x", f, {rows, Dm});
  for (auto* t : {&ln1_w, &ln1_b, &b2, &ln2_w, &ln2_b}) check_shape(*t, "norm weight / bias", f, {Dm});
  check_shape(w1, "w1", f, {I, Dm});
  check_shape(b1, "b1", f, {I});
  check_shape(w2, "w2", f, {Dm, I});
  auto out = torch::empty({rows, Dm}, y.options());
  AT_DISPATCH_FLOATING_TYPES(f, "postnorm_ffn", [&] {
    using T = scalar_t;
    ffn_rows<T>(y.data_ptr<T>(), ptr<T>(x), ln1_w.data_ptr<T>(), ln1_b.data_ptr<T>(), w1.data_ptr<T>(),
                b1.data_ptr<T>(), w2.data_ptr<T>(), b2.data_ptr<T>(), ln2_w.data_ptr<T>(), ln2_b.data_ptr<T>(),
                static_cast<T>(eps1), static_cast<T>(eps2), act, out.data_ptr<T>(), rows, Dm, I);
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("mamba_step", &mamba_step, "fused Mamba mixer step (inference)");
  m.def("time_ssd_step", &time_ssd_step, "fused TiSSD mixer step (inference)");
  m.def("postnorm_ffn", &postnorm_ffn, "fused residual + LayerNorm + FFN + residual + LayerNorm (inference)");
}
