// Vectorised row kernels with exp: softmax rows, cross-entropy rows, SwiGLU.
//
// libm's expf is a call per element with an errno path for underflow (in a
// profile of a LoRA step, expf and its error handling were 12% of the time).
// ExpF below is branch-free, so the loops over it vectorise; each kernel is
// built for AVX-512, AVX2 and baseline x86-64 and picked at load time.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "tasks/backend/cpu/cpu_internal.h"
#include "tasks/backend/host_math.h"

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

namespace pcfarm {

double SumExpShifted(std::span<const float> x, float shift) {
  constexpr size_t kChunk = 512;
  double sum = 0;
  for (size_t i = 0; i < x.size(); i += kChunk)
    sum += cpu::RowSumExp(x.data() + i, int64_t(std::min(kChunk, x.size() - i)), shift);
  return sum;
}

int64_t FirstLargest(std::span<const float> x) {
  const size_t n = x.size();
  const float* v = x.data();
  float mx = v[0];
  int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
  for (size_t i = 0; i < n; ++i) {
    mx = v[i] > mx ? v[i] : mx;
    nan |= v[i] != v[i];
  }
  if (nan != 0) return std::max_element(x.begin(), x.end()) - x.begin();
  // The first value equal to it (-0 == +0: the first zero, as max_element).
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    int hit = 0;
    for (size_t j = 0; j < 16; ++j) hit |= v[i + j] == mx;
    if (hit != 0) break;
  }
  while (v[i] != mx) ++i;
  return int64_t(i);
}

}  // namespace pcfarm

namespace pcfarm::cpu {

// ---- decode attention ---------------------------------------------------------

namespace {

// 8 floats; aligned(4) so that a load or store of one may start anywhere.
typedef float F8 __attribute__((vector_size(32), aligned(4)));

[[gnu::always_inline]] inline float Sum8(F8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// Keys prefetched this many rows ahead (a prefetch past the cache's end is
// harmless: it does not fault).
constexpr int64_t kAhead = 8;

// scores[i] = exp(scores[i] − max) in place; returns max + log Σ of them
// and their sum in *sum.
[[gnu::always_inline]] inline float SoftmaxScores(float* scores, int64_t n, float* sum) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < n; ++i) mx = scores[i] > mx ? scores[i] : mx;
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    scores[i] = ExpF(scores[i] - mx);
    s += scores[i];
  }
  *sum = s;
  return mx + std::log(s);
}

// AttendRow's body for head size 8·NV: q and the output accumulate in
// NV registers (8 for d = 64), the scores four keys at a time (four
// independent sums per load of q).
template <int NV>
[[gnu::always_inline]] inline float AttendRowN(const float* q, const float* k, const float* v,
                                                int64_t stride, int64_t nkeys, float scale,
                                                float* out, float* scores) {
  F8 qv[NV];
  for (int c = 0; c < NV; ++c) qv[c] = *reinterpret_cast<const F8*>(q + 8 * c);
  int64_t j = 0;
  for (; j + 4 <= nkeys; j += 4) {
    const float* k0 = k + j * stride;
    const float *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
    for (int r = 0; r < 4; ++r) {
      const char* ahead = reinterpret_cast<const char*>(k0 + (kAhead + r) * stride);
      for (int l = 0; l < NV * 32; l += 64) __builtin_prefetch(ahead + l);
    }
    F8 a0 = qv[0] * *reinterpret_cast<const F8*>(k0), a1 = qv[0] * *reinterpret_cast<const F8*>(k1),
       a2 = qv[0] * *reinterpret_cast<const F8*>(k2), a3 = qv[0] * *reinterpret_cast<const F8*>(k3);
    for (int c = 1; c < NV; ++c) {
      a0 += qv[c] * *reinterpret_cast<const F8*>(k0 + 8 * c);
      a1 += qv[c] * *reinterpret_cast<const F8*>(k1 + 8 * c);
      a2 += qv[c] * *reinterpret_cast<const F8*>(k2 + 8 * c);
      a3 += qv[c] * *reinterpret_cast<const F8*>(k3 + 8 * c);
    }
    scores[j] = Sum8(a0) * scale;
    scores[j + 1] = Sum8(a1) * scale;
    scores[j + 2] = Sum8(a2) * scale;
    scores[j + 3] = Sum8(a3) * scale;
  }
  for (; j < nkeys; ++j) {
    const float* kj = k + j * stride;
    F8 a = qv[0] * *reinterpret_cast<const F8*>(kj);
    for (int c = 1; c < NV; ++c) a += qv[c] * *reinterpret_cast<const F8*>(kj + 8 * c);
    scores[j] = Sum8(a) * scale;
  }
  float sum;
  const float lse = SoftmaxScores(scores, nkeys, &sum);
  F8 o[NV];
  for (int c = 0; c < NV; ++c) o[c] = F8{};
  for (j = 0; j < nkeys; ++j) {
    const float p = scores[j];
    const float* vj = v + j * stride;
    const char* ahead = reinterpret_cast<const char*>(vj + kAhead * stride);
    for (int l = 0; l < NV * 32; l += 64) __builtin_prefetch(ahead + l);
    for (int c = 0; c < NV; ++c) o[c] += p * *reinterpret_cast<const F8*>(vj + 8 * c);
  }
  const float inv = 1.0f / sum;
  for (int c = 0; c < NV; ++c) *reinterpret_cast<F8*>(out + 8 * c) = o[c] * inv;
  return lse;
}

}  // namespace

PCFARM_VEC_CLONES float AttendRow(const float* q, const float* k, const float* v,
                                  int64_t stride, int64_t nkeys, int64_t d, float scale,
                                  float* out, float* scores) {
  switch (d) {
    case 64: return AttendRowN<8>(q, k, v, stride, nkeys, scale, out, scores);
    case 128: return AttendRowN<16>(q, k, v, stride, nkeys, scale, out, scores);
    default: break;
  }
  for (int64_t j = 0; j < nkeys; ++j) {
    const float* kj = k + j * stride;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < d; ++i) s += q[i] * kj[i];
    scores[j] = s * scale;
  }
  float sum;
  const float lse = SoftmaxScores(scores, nkeys, &sum);
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < nkeys; ++j) {
    const float p = scores[j];
    const float* vj = v + j * stride;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) out[i] += p * vj[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < d; ++i) out[i] *= inv;
  return lse;
}

}  // namespace pcfarm::cpu
