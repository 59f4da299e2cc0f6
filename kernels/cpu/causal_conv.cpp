// ssmkit CPU depthwise causal conv1d (Mamba's short conv), forward and backward, for training.
//
// Per row (batch b, channel d), with W taps and the W - 1 inputs before the start taken from h0 (or zero):
//   s_t = bias_d + sum_k w[d, k] x_{t - W + 1 + k},   y_t = silu(s_t) or s_t
// The backward recomputes s from x (nothing but the inputs is saved) and, with g_t = dy_t act'(s_t), gives
//   dx_t = sum_k w[d, k] g_{t + W - 1 - k},   dw[d, k] = sum_{b, t} g_t x_{t - W + 1 + k},   dbias_d = sum_{b, t} g_t,
// and dh0 the same as dx for the W - 1 positions before the start.
// Why not F.conv1d: at the short sequences of a recommender batch (L of 2-50, thousands of rows) its backward
// cost about 15x its forward and a tenth of a Mamba4Rec training step; a row here is a few contiguous loops.
//
// x may be any strided (Bt, D, L) view (the mixer's is a transpose of in_proj's output): each row is gathered once
// into a zero-padded buffer. y, dx are (Bt, D, L) contiguous. Rows run in blocks of batch rows (at::parallel_for);
// dw / dbias are summed per block and then over blocks, so results do not depend on the number of threads.

#include "torch_ext.h"
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vec_math.h"

namespace {

using ssmk::sigmoid;

struct View {
  int64_t sb, sd, sl;  // strides of a (Bt, D, L) tensor
};

View view_of(const torch::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2)}; }

// Row (b, d) of x into xp[W - 1 ..], and before it row (b, d) of h0 (Bt, D, W - 1) contiguous, or zeros.
template <typename T>
SSMK_INLINE void gather_row(const T* x, const View& v, const T* h0, int64_t b, int64_t d, int64_t D, int64_t L,
                            int64_t W, T* xp) {
  if (h0) {
    std::copy(h0 + (b * D + d) * (W - 1), h0 + (b * D + d + 1) * (W - 1), xp);
  } else {
    std::fill(xp, xp + W - 1, T(0));
  }
  const T* row = x + b * v.sb + d * v.sd;
  if (v.sl == 1) {
    std::copy(row, row + L, xp + W - 1);
  } else {
    for (int64_t t = 0; t < L; ++t) xp[W - 1 + t] = row[t * v.sl];
  }
}

// s_t = bias + sum_k w_k xp[t + k] for t < L.
template <typename T>
SSMK_INLINE void preact(const T* SSMK_RESTRICT xp, const T* SSMK_RESTRICT w, T bias, int64_t L, int64_t W,
                        T* SSMK_RESTRICT s) {
#pragma omp simd
  for (int64_t t = 0; t < L; ++t) s[t] = bias;
  for (int64_t k = 0; k < W; ++k) {
    const T wk = w[k];
#pragma omp simd
    for (int64_t t = 0; t < L; ++t) s[t] += wk * xp[t + k];
  }
}

int64_t batch_block(int64_t batch) { return std::max<int64_t>(1, batch / 64); }

template <typename T>
void forward(const T* x, View xv, const T* h0, const T* w, const T* bias, bool silu, T* y, int64_t Bt, int64_t D,
             int64_t L, int64_t W) {
  at::parallel_for(0, Bt, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> xp_v(L + W - 1), s_v(L);
    T* SSMK_RESTRICT xp = xp_v.data();
    T* SSMK_RESTRICT s = s_v.data();
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t d = 0; d < D; ++d) {
        gather_row(x, xv, h0, b, d, D, L, W, xp);
        preact(xp, w + d * W, bias ? bias[d] : T(0), L, W, s);
        T* SSMK_RESTRICT out = y + (b * D + d) * L;
        if (silu) {
#pragma omp simd
          for (int64_t t = 0; t < L; ++t) out[t] = s[t] * sigmoid(s[t]);
        } else {
          std::copy(s, s + L, out);
        }
      }
  });
}

template <typename T>
void backward(const T* x, View xv, const T* h0, const T* w, const T* bias, bool silu, const T* dy, View dv, T* dx,
              T* dh0, T* dw_part, T* db_part, int64_t Bt, int64_t D, int64_t L, int64_t W) {
  const int64_t bb = batch_block(Bt), nblk = (Bt + bb - 1) / bb;
  at::parallel_for(0, nblk, 1, [&](int64_t k0, int64_t k1) {
    std::vector<T> xp_v(L + W - 1), s_v(L), gp_v(L + 2 * (W - 1)), dxp_v(L + W - 1);
    T* SSMK_RESTRICT xp = xp_v.data();
    T* SSMK_RESTRICT s = s_v.data();
    T* SSMK_RESTRICT gp = gp_v.data();  // W - 1 zeros, g, W - 1 zeros
    T* SSMK_RESTRICT dxp = dxp_v.data();  // gradient of xp: h0's W - 1 inputs, then x's L
    for (int64_t blk = k0; blk < k1; ++blk)
      for (int64_t b = blk * bb; b < std::min(Bt, (blk + 1) * bb); ++b)
        for (int64_t d = 0; d < D; ++d) {
          const T* SSMK_RESTRICT wd = w + d * W;
          gather_row(x, xv, h0, b, d, D, L, W, xp);
          const T* dyr = dy + b * dv.sb + d * dv.sd;
          T* SSMK_RESTRICT g = gp + (W - 1);
          std::fill(gp, g, T(0));
          if (silu) {
            preact(xp, wd, bias ? bias[d] : T(0), L, W, s);
#pragma omp simd
            for (int64_t t = 0; t < L; ++t) {
              const T sg = sigmoid(s[t]);
              g[t] = dyr[t * dv.sl] * sg * (T(1) + s[t] * (T(1) - sg));
            }
          } else {
            for (int64_t t = 0; t < L; ++t) g[t] = dyr[t * dv.sl];
          }
          std::fill(g + L, g + L + W - 1, T(0));
          // xp[j] (j < L + W - 1) feeds s_t through tap k = j - t: dxp_j = sum_k w_k g_{j - k}
          const int64_t M = L + W - 1;
#pragma omp simd
          for (int64_t j = 0; j < M; ++j) dxp[j] = T(0);
          T gsum = T(0);
#pragma omp simd reduction(+ : gsum)
          for (int64_t t = 0; t < L; ++t) gsum += g[t];
          db_part[blk * D + d] += gsum;
          T* SSMK_RESTRICT dwd = dw_part + (blk * D + d) * W;
          for (int64_t k = 0; k < W; ++k) {
            const T wk = wd[k];
            const T* SSMK_RESTRICT gk = gp + (W - 1 - k);  // gk[j] = g_{j - k}, zero outside 0..L-1
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < M; ++j) {
              dxp[j] += wk * gk[j];
              acc += gk[j] * xp[j];
            }
            dwd[k] += acc;
          }
          std::copy(dxp + W - 1, dxp + M, dx + (b * D + d) * L);
          if (dh0) std::copy(dxp, dxp + W - 1, dh0 + (b * D + d) * (W - 1));
        }
  });
}

void check(const torch::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims, got ", t.dim());
}

void check_all(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
               const c10::optional<torch::Tensor>& h0) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "x must be float32 or float64, got ", dtype);
  check(x, "x", dtype, 3);
  check(weight, "weight", dtype, 2);
  TORCH_CHECK(weight.size(0) == x.size(1) && weight.size(1) >= 1, "weight must be (D, W)");
  if (bias.has_value()) {
    check(*bias, "bias", dtype, 1);
    TORCH_CHECK(bias->size(0) == x.size(1), "bias must be (D,)");
  }
  if (h0.has_value()) {
    check(*h0, "initial_state", dtype, 3);
    TORCH_CHECK(h0->size(0) == x.size(0) && h0->size(1) == x.size(1) && h0->size(2) == weight.size(1) - 1,
                "initial_state must be (batch, D, W - 1)");
  }
}

torch::Tensor conv_fwd(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
                       const c10::optional<torch::Tensor>& h0, bool silu) {
  check_all(x, weight, bias, h0);
  const int64_t Bt = x.size(0), D = x.size(1), L = x.size(2), W = weight.size(1);
  auto w = weight.contiguous();
  auto bc = bias.has_value() ? bias->contiguous() : torch::Tensor();
  auto h0c = h0.has_value() ? h0->contiguous() : torch::Tensor();
  auto y = torch::empty({Bt, D, L}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssmkit_causal_conv1d_fwd", [&] {
    forward<scalar_t>(x.data_ptr<scalar_t>(), view_of(x), h0.has_value() ? h0c.data_ptr<scalar_t>() : nullptr,
                      w.data_ptr<scalar_t>(),
                      bias.has_value() ? bc.data_ptr<scalar_t>() : nullptr, silu, y.data_ptr<scalar_t>(), Bt, D, L,
                      W);
  });
  return y;
}

// Returns {dx (Bt, D, L), dweight (D, W), dbias (D,) or empty, dinitial_state (Bt, D, W - 1) or empty}.
std::vector<torch::Tensor> conv_bwd(const torch::Tensor& x, const torch::Tensor& weight,
                                    const c10::optional<torch::Tensor>& bias, const c10::optional<torch::Tensor>& h0,
                                    const torch::Tensor& dy, bool silu, bool want_dh0) {
  check_all(x, weight, bias, h0);
  check(dy, "grad of y", x.scalar_type(), 3);
  TORCH_CHECK(dy.sizes() == x.sizes(), "grad of y must have x's shape");
  const int64_t Bt = x.size(0), D = x.size(1), L = x.size(2), W = weight.size(1);
  const int64_t nblk = (Bt + batch_block(Bt) - 1) / batch_block(Bt);
  auto w = weight.contiguous();
  auto bc = bias.has_value() ? bias->contiguous() : torch::Tensor();
  auto h0c = h0.has_value() ? h0->contiguous() : torch::Tensor();
  auto dx = torch::empty({Bt, D, L}, x.options());
  auto dh0 = want_dh0 ? torch::empty({Bt, D, W - 1}, x.options()) : torch::empty({0}, x.options());
  auto dw_part = torch::zeros({nblk, D, W}, x.options());
  auto db_part = torch::zeros({nblk, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ssmkit_causal_conv1d_bwd", [&] {
    backward<scalar_t>(x.data_ptr<scalar_t>(), view_of(x), h0.has_value() ? h0c.data_ptr<scalar_t>() : nullptr,
                       w.data_ptr<scalar_t>(), bias.has_value() ? bc.data_ptr<scalar_t>() : nullptr, silu,
                       dy.data_ptr<scalar_t>(), view_of(dy), dx.data_ptr<scalar_t>(),
                       want_dh0 ? dh0.data_ptr<scalar_t>() : nullptr, dw_part.data_ptr<scalar_t>(),
                       db_part.data_ptr<scalar_t>(), Bt, D, L, W);
  });
  return {dx, dw_part.sum(0), bias.has_value() ? db_part.sum(0) : torch::empty({0}, x.options()), dh0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ssmkit CPU depthwise causal conv1d (forward and backward)";
  m.def("fwd", &conv_fwd, "causal depthwise conv1d (+ SiLU)");
  m.def("bwd", &conv_bwd, "its backward: dx, dweight, dbias");
}
