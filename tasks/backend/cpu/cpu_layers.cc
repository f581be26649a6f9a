// Row-wise layers on the CPU: RMSNorm, RoPE, SwiGLU, cross-entropy, logprobs.
// Each parallel loop owns whole rows (or, for weight gradients, whole
// columns), so no two threads write the same float.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

namespace {

// 1 / sqrt(mean(x²) + eps) of one row.
float RowRstd(const float* x, int64_t c, float eps) {
  float ss = 0;
#pragma omp simd reduction(+ : ss)
  for (int64_t j = 0; j < c; ++j) ss += x[j] * x[j];
  return 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
}

// log Σ exp(x) of one row, max-shifted.
float RowLogSumExp(const float* x, int64_t v) {
  const float mx = RowMax(x, v);
  return mx + std::log(RowSumExp(x, v, mx));
}

}  // namespace

Status CpuBackend::RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                                      const Tensor& weight, float eps) {
  const int64_t c = weight.numel(), rows = inp.numel() / c;
  std::vector<float> w_scratch;
  const float* w = AsF32(weight, w_scratch);
  const float* x = F32(inp);
  float* o = F32(out);
  ParallelRows(rows, c, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * c;
      float* orow = o + r * c;
      const float rstd = RowRstd(xr, c, eps);
      for (int64_t j = 0; j < c; ++j) orow[j] = xr[j] * rstd * w[j];
    }
  });
  return Status::Ok();
}

Status CpuBackend::RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                                       const Tensor& dout, const Tensor& inp,
                                       const Tensor& weight, float eps) {
  const int64_t c = weight.numel(), rows = inp.numel() / c;
  std::vector<float> w_scratch;
  const float* w = AsF32(weight, w_scratch);
  const float* x = F32(inp);
  const float* dy = F32(dout);
  float* dx = F32(dinp);
  std::vector<float> rstd(static_cast<size_t>(rows));
  // y = x·r·w with r = (mean(x²)+eps)^-1/2:
  // dx_j += r·w_j·dy_j − x_j·r³/C · Σ_i dy_i·w_i·x_i.
  ParallelRows(rows, c, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x + r * c;
      const float* dyr = dy + r * c;
      float* dxr = dx + r * c;
      const float rs = RowRstd(xr, c, eps);
      rstd[static_cast<size_t>(r)] = rs;
      float dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < c; ++j) dot += dyr[j] * w[j] * xr[j];
      const float k = dot * rs * rs * rs / static_cast<float>(c);
      for (int64_t j = 0; j < c; ++j) dxr[j] += rs * w[j] * dyr[j] - xr[j] * k;
    }
  });
  if (dweight != nullptr) {
    float* dw = F32(*dweight);
    pool_->ParallelFor(c, 64, [&](int64_t b, int64_t e) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * c;
        const float* dyr = dy + r * c;
        const float rs = rstd[static_cast<size_t>(r)];
        for (int64_t j = b; j < e; ++j) dw[j] += dyr[j] * xr[j] * rs;
      }
    });
  }
  return Status::Ok();
}

Status CpuBackend::RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                            std::span<const int32_t> positions, bool backward) {
  const int64_t n = inp.shape()[0], h = inp.shape()[1], d = inp.shape()[2];
  const int64_t half = d / 2;
  const float* x = F32(inp);
  const float* freq = F32(inv_freq);
  float* o = F32(out);
  // The angles are those of the last call when its frequencies and
  // positions were these (a decode step computed 64 double cosines and
  // sines per call, 24 calls a step, for one position). Compared bit for
  // bit: -0 and +0 give sines of different signs.
  const bool fresh =
      rope_.freq.size() != size_t(half) || rope_.positions.size() != positions.size() ||
      std::memcmp(rope_.freq.data(), freq, sizeof(float) * size_t(half)) != 0 ||
      (!positions.empty() &&
       std::memcmp(rope_.positions.data(), positions.data(), positions.size_bytes()) != 0);
  if (fresh) {
    rope_.freq.assign(freq, freq + half);
    rope_.positions.assign(positions.begin(), positions.end());
    rope_.cos.resize(static_cast<size_t>(n * half));
    rope_.sin.resize(static_cast<size_t>(n * half));
  }
  float* cos_all = rope_.cos.data();
  float* sin_all = rope_.sin.data();
  ParallelRows(n, h * d, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* cs = cos_all + t * half;
      float* sn = sin_all + t * half;
      if (fresh) {
        // The angle is an f32 product, as in Hugging Face's rotary embedding.
        for (int64_t j = 0; j < half; ++j) {
          const float angle = static_cast<float>(positions[t]) * freq[j];
          cs[j] = static_cast<float>(std::cos(double{angle}));
          sn[j] = static_cast<float>(std::sin(double{angle}));
        }
      }
      for (int64_t hh = 0; hh < h; ++hh) {
        const float* x1 = x + (t * h + hh) * d;
        const float* x2 = x1 + half;
        float* o1 = o + (t * h + hh) * d;
        float* o2 = o1 + half;
        if (!backward) {
          for (int64_t j = 0; j < half; ++j) {
            const float a = x1[j], bb = x2[j];  // read both before writing (in place)
            o1[j] = a * cs[j] - bb * sn[j];
            o2[j] = bb * cs[j] + a * sn[j];
          }
        } else {  // transpose of the rotation, accumulated
          for (int64_t j = 0; j < half; ++j) {
            o1[j] += x1[j] * cs[j] + x2[j] * sn[j];
            o2[j] += x2[j] * cs[j] - x1[j] * sn[j];
          }
        }
      }
    }
  });
  return Status::Ok();
}

Status CpuBackend::SwiGluForwardImpl(const Tensor& out, const Tensor& gate,
                                     const Tensor& up) {
  const float* g = F32(gate);
  const float* u = F32(up);
  float* o = F32(out);
  pool_->ParallelFor(out.numel(), 1 << 13, [&](int64_t b, int64_t e) {
    SwiGluSpan(o + b, g + b, u + b, e - b);
  });
  return Status::Ok();
}

Status CpuBackend::SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                                      const Tensor& dout, const Tensor& gate,
                                      const Tensor& up) {
  const float* g = F32(gate);
  const float* u = F32(up);
  const float* dy = F32(dout);
  float* dg = F32(dgate);
  float* du = F32(dup);
  pool_->ParallelFor(gate.numel(), 1 << 13, [&](int64_t b, int64_t e) {
    SwiGluGradSpan(dg + b, du + b, dy + b, g + b, u + b, e - b);
  });
  return Status::Ok();
}

Result<CrossEntropySums> CpuBackend::CrossEntropyForwardImpl(
    const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
    std::span<const float> weights) {
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  const float* x = F32(logits);
  std::vector<float> row_loss(static_cast<size_t>(n), 0.0f);
  ParallelRows(n, v, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (weights[i] == 0) continue;
      const float* xr = x + i * v;
      row_loss[static_cast<size_t>(i)] = RowLogSumExp(xr, v) - xr[targets[i]];
    }
  });
  CrossEntropySums sums;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] == 0) continue;
    sums.weighted_loss += double{weights[i]} * row_loss[static_cast<size_t>(i)];
    sums.weight += weights[i];
    ++sums.counted;
  }
  if (losses != nullptr) std::copy(row_loss.begin(), row_loss.end(), F32(*losses));
  return sums;
}

Status CpuBackend::CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                            std::span<const int32_t> targets,
                                            std::span<const float> weights,
                                            float grad_scale) {
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  const float* x = F32(logits);
  float* dx = F32(dlogits);
  ParallelRows(n, v, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (weights[i] == 0) continue;
      const float* xr = x + i * v;
      float* dr = dx + i * v;
      const float lse = RowLogSumExp(xr, v);
      const float k = grad_scale * weights[i];
      RowAddScaledExp(dr, xr, v, lse, k);
      dr[targets[i]] -= k;
    }
  });
  return Status::Ok();
}

Status CpuBackend::LogProbsImpl(const Tensor& out, const Tensor& logits,
                                std::span<const int32_t> targets) {
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  const float* x = F32(logits);
  float* o = F32(out);
  ParallelRows(n, v, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      o[i] = x[i * v + targets[i]] - RowLogSumExp(x + i * v, v);
  });
  return Status::Ok();
}

}  // namespace pcfarm::cpu
