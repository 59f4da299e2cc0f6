// Vectorisable elementwise math for the ssmkit CPU kernels (float: polynomial forms GCC vectorises inside
// `omp simd` loops; double: the C library, as the oracles are fp64).
//
// exp_vec: exp(x) = 2^k p(r), k = round(x / ln 2), r = x - k ln 2 (two-constant Cody-Waite), p the Cephes expf
//   polynomial, about 1 ulp; x < -87 flushes to 0, x > ln(FLT_MAX) gives inf, NaN passes through.
// expm1_vec: exp(x) - 1 from the same reduction without the cancellation near 0, about 1 ulp.
// softplus / softplus_grad: torch.nn.functional.softplus (beta 1, threshold 20) and its derivative; sigmoid.
// Clamps are written `x > c ? c : x` so that a NaN x (every comparison false) stays NaN.
// exp2_avx2: 2^t on 8 floats in AVX2 + FMA intrinsics, for hot loops GCC does not vectorise well (about half of
//   exp_vec's instructions inside an `omp simd` loop, whose clamps become blend chains).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SSMK_HAVE_AVX2 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SSMK_INLINE inline __attribute__((always_inline))
#define SSMK_RESTRICT __restrict__
#else
#define SSMK_INLINE inline
#define SSMK_RESTRICT
#endif

namespace ssmk {

// exp(x) = 2^k p(r) as `scale` = 2^k and `pm1` = p(r) - 1 = r + r^2 q(r) (no cancellation); x is clamped to
// [-87, ln(FLT_MAX)], the callers handle the ends.
SSMK_INLINE void exp_parts(float x, float* scale, float* pm1) {
  const float kLo = -87.0f;
  const float kHi = 88.72283935546875f;
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float kf = std::floor(xc * 1.44269504088896341f + 0.5f);  // vectorises with -fno-trapping-math
  float r = xc - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  *pm1 = p * r2 + r;
  const int32_t bits = (static_cast<int32_t>(kf) - 1 + 127) << 23;  // 2^(k-1): normal for k in [-125, 128]
  float half;
  std::memcpy(&half, &bits, sizeof(float));
  *scale = half * 2.0f;
}

SSMK_INLINE float exp_vec(float x) {
  float scale, pm1;
  exp_parts(x, &scale, &pm1);
  float res = (pm1 + 1.0f) * scale;
  res = x < -87.0f ? 0.0f : res;
  res = x > 88.72283935546875f ? std::numeric_limits<float>::infinity() : res;
  return res;
}

SSMK_INLINE double exp_vec(double x) { return std::exp(x); }

#ifdef SSMK_HAVE_AVX2
// 2^t on 8 floats, to about 1 ulp: 2^k 2^f with k = round(t), f = t - k in [-1/2, 1/2] exact, and
// 2^f = 1 + f P(f) (Cephes' exp2f polynomial). exp(x) is exp2_avx2(x log2(e)); a caller whose x is a product
// (dt * A) folds log2(e) into a factor and saves the multiply. t < -125.5 (x < -87) gives 0, t >= 127.5 inf (2^128
// overflows; exp_vec does the same), NaN stays NaN (the max/min operand order passes it, the unordered compare
// keeps it).
SSMK_INLINE __m256 exp2_avx2(__m256 t) {
  const __m256 tc = _mm256_min_ps(_mm256_set1_ps(128.0f), _mm256_max_ps(_mm256_set1_ps(-125.5f), t));
  const __m256 kf = _mm256_round_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(tc, kf);
  __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));  // 2^f
  const __m256i k = _mm256_cvtps_epi32(kf);  // a NaN t: k is garbage, p NaN
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
  return _mm256_and_ps(_mm256_mul_ps(p, scale), _mm256_cmp_ps(t, _mm256_set1_ps(-125.5f), _CMP_NLT_UQ));
}
#endif

// expm1(x) = 2^k (p(r) - 1) + (2^k - 1): exact cancellation-free for k = 0 (|x| < ln 2 / 2), and no cancellation
// problem for k != 0; about 1 ulp (checked against double expm1 over [-88, 88]).
SSMK_INLINE float expm1_vec(float x) {
  float scale, pm1;
  exp_parts(x, &scale, &pm1);
  float res = scale * pm1 + (scale - 1.0f);
  res = x < -87.0f ? -1.0f : res;
  res = x > 88.72283935546875f ? std::numeric_limits<float>::infinity() : res;
  return res;
}

SSMK_INLINE double expm1_vec(double x) { return std::expm1(x); }

// Natural log for finite x >= 1: x = m 2^e, m in [sqrt(1/2), sqrt(2)), log(1 + f) by the Cephes logf polynomial.
SSMK_INLINE float log_ge1(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(float));
  int32_t e = ((bits >> 23) & 0xff) - 126;
  const int32_t mbits = (bits & 0x007fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &mbits, sizeof(float));
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1 : e;
  const float f = small ? m + m - 1.0f : m - 1.0f;
  const float ef = static_cast<float>(e);
  const float f2 = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * f2 * p;
  y = y + ef * -2.12194440e-4f;
  y = y - 0.5f * f2;
  return f + y + ef * 0.693359375f;
}

// log1p(w) as log(1 + w) * w / ((1 + w) - 1), which cancels the rounding of 1 + w (Goldberg).
SSMK_INLINE float softplus(float x) {
  const float w = exp_vec(x > 20.0f ? 20.0f : x);
  const float v = 1.0f + w;
  const float l1p = v == 1.0f ? w : log_ge1(v) * (w / (v - 1.0f));
  return x > 20.0f ? x : l1p;
}

SSMK_INLINE double softplus(double x) { return x > 20.0 ? x : std::log1p(std::exp(x)); }

template <typename T>
SSMK_INLINE T softplus_grad(T x) {
  const T e = exp_vec(x > T(20) ? T(20) : x);
  return x > T(20) ? T(1) : e / (e + T(1));
}

template <typename T>
SSMK_INLINE T sigmoid(T x) {
  return T(1) / (T(1) + exp_vec(-x));
}

}  // namespace ssmk
