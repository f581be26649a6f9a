// Causal grouped-query attention on the CPU, one (query row, head) at a time
// with the scores of that row in a scratch buffer (no T×T matrix).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

namespace {

float Dot(const float* a, const float* b, int64_t d) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < d; ++i) s += a[i] * b[i];
  return s;
}

// out[0..d) = Σ_j softmax(scale·q·k_j)·v_j over nkeys keys at k + j·stride
// (and v likewise); returns the log-sum-exp of the scaled scores.
float AttendRow(const float* q, const float* k, const float* v, int64_t stride,
                int64_t nkeys, int64_t d, float scale, float* out,
                std::vector<float>& scores) {
  scores.resize(static_cast<size_t>(nkeys));
  float mx = -INFINITY;
  for (int64_t j = 0; j < nkeys; ++j) {
    scores[j] = Dot(q, k + j * stride, d) * scale;
    mx = std::max(mx, scores[j]);
  }
  float sum = 0;
  for (int64_t j = 0; j < nkeys; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  std::fill(out, out + d, 0.0f);
  for (int64_t j = 0; j < nkeys; ++j) {
    const float p = scores[j];
    const float* vj = v + j * stride;
    for (int64_t i = 0; i < d; ++i) out[i] += p * vj[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < d; ++i) out[i] *= inv;
  return mx + std::log(sum);
}

// row_start[i] = first row of the sequence that row i belongs to.
std::vector<int64_t> RowStarts(std::span<const int32_t> seq_starts, int64_t n) {
  std::vector<int64_t> start(static_cast<size_t>(n));
  for (size_t s = 0; s + 1 < seq_starts.size(); ++s)
    for (int64_t i = seq_starts[s]; i < seq_starts[s + 1]; ++i) start[i] = seq_starts[s];
  return start;
}

// row_end[i] = one past the last row of row i's sequence.
std::vector<int64_t> RowEnds(std::span<const int32_t> seq_starts, int64_t n) {
  std::vector<int64_t> end(static_cast<size_t>(n));
  for (size_t s = 0; s + 1 < seq_starts.size(); ++s)
    for (int64_t i = seq_starts[s]; i < seq_starts[s + 1]; ++i) end[i] = seq_starts[s + 1];
  return end;
}

}  // namespace

Status CpuBackend::AttentionForwardImpl(const Tensor& out, const Tensor* lse,
                                        const Tensor& q, const Tensor& k,
                                        const Tensor& v,
                                        std::span<const int32_t> seq_starts) {
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const int64_t hkv = k.shape()[1], group = hq / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const std::vector<int64_t> start = RowStarts(seq_starts, n);
  const float* qp = F32(q);
  const float* kp = F32(k);
  const float* vp = F32(v);
  float* op = F32(out);
  float* lp = lse != nullptr ? F32(*lse) : nullptr;
  pool_->ParallelFor(n * hq, 4, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item / hq, h = item % hq, g = h / group;
      const int64_t s0 = start[i];
      const float l = AttendRow(qp + item * d, kp + (s0 * hkv + g) * d,
                                vp + (s0 * hkv + g) * d, hkv * d, i - s0 + 1, d, scale,
                                op + item * d, scores);
      if (lp != nullptr) lp[item] = l;
    }
  });
  return Status::Ok();
}

Status CpuBackend::AttentionBackwardImpl(const Tensor& dq, const Tensor& dk,
                                         const Tensor& dv, const Tensor& dout,
                                         const Tensor& q, const Tensor& k,
                                         const Tensor& v, const Tensor& out,
                                         const Tensor& lse,
                                         std::span<const int32_t> seq_starts) {
  // With p_ij = exp(scale·q_i·k_j − lse_i), D_i = dout_i·out_i and
  // ds_ij = p_ij·(dout_i·v_j − D_i):
  //   dq_i += scale·Σ_j ds_ij·k_j,  dk_j += scale·Σ_i ds_ij·q_i,
  //   dv_j += Σ_i p_ij·dout_i.
  // Two passes so each thread owns what it writes: one over (query row,
  // head) for dq, one over (key row, kv head) for dk and dv; the scores are
  // recomputed in each.
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const int64_t hkv = k.shape()[1], group = hq / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const std::vector<int64_t> start = RowStarts(seq_starts, n);
  const std::vector<int64_t> end = RowEnds(seq_starts, n);
  const float* qp = F32(q);
  const float* kp = F32(k);
  const float* vp = F32(v);
  const float* op = F32(out);
  const float* dop = F32(dout);
  const float* lp = F32(lse);
  float* dqp = F32(dq);
  float* dkp = F32(dk);
  float* dvp = F32(dv);

  std::vector<float> delta(static_cast<size_t>(n * hq));
  pool_->ParallelFor(n * hq, 64, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item)
      delta[item] = Dot(dop + item * d, op + item * d, d);
  });

  pool_->ParallelFor(n * hq, 4, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item / hq, h = item % hq, g = h / group;
      const float* qi = qp + item * d;
      const float* doi = dop + item * d;
      float* dqi = dqp + item * d;
      for (int64_t j = start[i]; j <= i; ++j) {
        const float* kj = kp + (j * hkv + g) * d;
        const float* vj = vp + (j * hkv + g) * d;
        const float p = std::exp(Dot(qi, kj, d) * scale - lp[item]);
        const float ds = p * (Dot(doi, vj, d) - delta[item]) * scale;
        for (int64_t c = 0; c < d; ++c) dqi[c] += ds * kj[c];
      }
    }
  });

  pool_->ParallelFor(n * hkv, 4, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      const int64_t j = item / hkv, g = item % hkv;
      const float* kj = kp + item * d;
      const float* vj = vp + item * d;
      float* dkj = dkp + item * d;
      float* dvj = dvp + item * d;
      for (int64_t i = j; i < end[j]; ++i) {
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          const int64_t qi_item = i * hq + h;
          const float* qi = qp + qi_item * d;
          const float* doi = dop + qi_item * d;
          const float p = std::exp(Dot(qi, kj, d) * scale - lp[qi_item]);
          const float ds = p * (Dot(doi, vj, d) - delta[qi_item]) * scale;
          for (int64_t c = 0; c < d; ++c) {
            dkj[c] += ds * qi[c];
            dvj[c] += p * doi[c];
          }
        }
      }
    }
  });
  return Status::Ok();
}

Status CpuBackend::KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                                    std::span<const int32_t> slots,
                                    std::span<const int32_t> positions) {
  const int64_t t = cache.shape()[1];
  const int64_t row = src.shape()[1] * src.shape()[2];
  float* cp = F32(cache);
  const float* sp = F32(src);
  // In order, so that a repeated (slot, position) keeps the last row.
  for (size_t i = 0; i < slots.size(); ++i)
    std::memcpy(cp + (static_cast<int64_t>(slots[i]) * t + positions[i]) * row,
                sp + static_cast<int64_t>(i) * row, static_cast<size_t>(row) * 4);
  return Status::Ok();
}

Status CpuBackend::AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                                       const Tensor& k_cache, const Tensor& v_cache,
                                       std::span<const int32_t> slots,
                                       std::span<const int32_t> positions) {
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const int64_t t = k_cache.shape()[1], hkv = k_cache.shape()[2], group = hq / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float* qp = F32(q);
  const float* kp = F32(k_cache);
  const float* vp = F32(v_cache);
  float* op = F32(out);
  pool_->ParallelFor(n * hq, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    for (int64_t item = b; item < e; ++item) {
      const int64_t i = item / hq, h = item % hq, g = h / group;
      const int64_t base = (static_cast<int64_t>(slots[i]) * t * hkv + g) * d;
      AttendRow(qp + item * d, kp + base, vp + base, hkv * d, positions[i] + 1, d, scale,
                op + item * d, scores);
    }
  });
  return Status::Ok();
}

}  // namespace pcfarm::cpu
