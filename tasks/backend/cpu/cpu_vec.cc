// Vectorised row kernels with exp: softmax rows, cross-entropy rows, SwiGLU.
//
// libm's expf is a call per element with an errno path for underflow (in a
// profile of a LoRA step, expf and its error handling were 12% of the time).
// ExpF below is branch-free, so the loops over it vectorise; each kernel is
// built for AVX-512, AVX2 and baseline x86-64 and picked at load time.
#include <bit>
#include <cmath>
#include <cstdint>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

namespace {

// exp(x) in f32: 2^n·p(r) with n = round(x·log2 e), r = x − n·ln 2 (ln 2 in
// two parts) and p Cephes's degree-6 polynomial; relative error below
// 2e-7 (checked against double exp by backend_ops_test). Saturates at
// exp(88) ≈ 1.65e38 above 88; 0 below −87.3 (where f32 turns subnormal).
[[gnu::always_inline]] inline float ExpF(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5·2^23: adding it rounds to an integer
  // Ternaries, not fmin/fmax (libm calls); a NaN passes through both.
  float xc = x < -87.33654f ? -87.33654f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  const float n = (xc * kLog2e + kRound) - kRound;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < -87.33654f ? 0.0f : p * scale;
}

#define PCFARM_VEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

}  // namespace

PCFARM_VEC_CLONES float VecExpF(float x) { return ExpF(x); }

PCFARM_VEC_CLONES float RowMax(const float* x, int64_t n) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < n; ++j) mx = x[j] > mx ? x[j] : mx;
  return mx;
}

PCFARM_VEC_CLONES float RowSumExp(const float* x, int64_t n, float shift) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) sum += ExpF(x[j] - shift);
  return sum;
}

PCFARM_VEC_CLONES float RowExpInPlace(float* x, int64_t n, float shift) {
  float sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; ++j) {
    x[j] = ExpF(x[j] - shift);
    sum += x[j];
  }
  return sum;
}

PCFARM_VEC_CLONES void RowAddScaledExp(float* d, const float* x, int64_t n, float shift,
                                       float k) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) d[j] += k * ExpF(x[j] - shift);
}

PCFARM_VEC_CLONES void RowSoftmaxGrad(float* p, float* ds, int64_t n, float lse, float delta,
                                      float scale) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    p[j] = ExpF(p[j] - lse);
    ds[j] = p[j] * (ds[j] - delta) * scale;
  }
}

PCFARM_VEC_CLONES void SwiGluSpan(float* o, const float* g, const float* u, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] / (1.0f + ExpF(-g[i])) * u[i];
}

PCFARM_VEC_CLONES void SwiGluGradSpan(float* dg, float* du, const float* dy, const float* g,
                                      const float* u, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float s = 1.0f / (1.0f + ExpF(-g[i]));
    dg[i] += dy[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    du[i] += dy[i] * g[i] * s;
  }
}

}  // namespace pcfarm::cpu
