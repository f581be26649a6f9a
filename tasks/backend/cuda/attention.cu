// Causal grouped-query attention: a fused forward with online softmax (one
// pass over the keys, flash-style, no score matrix) shared by prefill and
// KV-cache decode, its backward, and the KV-cache write.
//
// Layout of the work: one warp per (query row, head) in the forward and the
// dq pass, one warp per (key row, kv head) in the dk/dv pass. Keys are taken
// 32 at a time, one per lane (each lane computes a whole dot product, so a
// tile needs only two warp reductions); the weighted sum over the tile's
// values then runs with lanes over the head dimension, reading the tile's
// probabilities from shared memory. Each warp keeps its vectors (q, the
// accumulators) in its own slice of shared memory, so any head dimension up
// to kMaxHeadDim works and warps never wait for each other.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

__device__ __forceinline__ float Dot(const float* a, const float* b, int64_t d) {
  float s = 0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// Shared floats per warp in AttendKernel: q, acc, the tile's 32 probabilities.
__host__ __device__ constexpr int64_t AttendWarpFloats(int64_t d) { return 2 * d + 32; }

__global__ void AttendKernel(float* out, float* lse, const float* q, const float* k,
                             const float* v, const int32_t* kv_first,
                             const int32_t* kv_count, int64_t n, int64_t hq, int64_t hkv,
                             int64_t d) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (item >= n * hq) return;  // whole warps only; no block barrier below
  const int64_t i = item / hq, h = item % hq, g = h / (hq / hkv);
  float* qs = smem + warp * AttendWarpFloats(d);
  float* acc = qs + d;
  float* ps = acc + d;
  for (int64_t c = lane; c < d; c += 32) {
    qs[c] = q[item * d + c];
    acc[c] = 0.0f;
  }
  __syncwarp();
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t stride = hkv * d, count = kv_count[i];
  const float* kb = k + (static_cast<int64_t>(kv_first[i]) * hkv + g) * d;
  const float* vb = v + (static_cast<int64_t>(kv_first[i]) * hkv + g) * d;
  float m = -INFINITY, l = 0.0f;  // running max and denominator (warp-uniform)
  for (int64_t j0 = 0; j0 < count; j0 += 32) {
    const int64_t j = j0 + lane;
    const float s = j < count ? Dot(qs, kb + j * stride, d) * scale : -INFINITY;
    const float m_new = fmaxf(m, WarpMax(s));  // finite: key j0 is valid
    const float corr = expf(m - m_new);       // 0 on the first tile
    const float p = j < count ? expf(s - m_new) : 0.0f;
    l = l * corr + WarpSum(p);
    m = m_new;
    ps[lane] = p;
    __syncwarp();
    const int64_t valid = count - j0 < 32 ? count - j0 : 32;
    for (int64_t c = lane; c < d; c += 32) {
      float a = acc[c] * corr;
      for (int64_t t = 0; t < valid; ++t) a += ps[t] * vb[(j0 + t) * stride + c];
      acc[c] = a;
    }
    __syncwarp();  // ps is rewritten by the next tile
  }
  const float inv = 1.0f / l;
  for (int64_t c = lane; c < d; c += 32) out[item * d + c] = acc[c] * inv;
  if (lse != nullptr && lane == 0) lse[item] = m + logf(l);
}

// delta[item] = dout[item, :]·out[item, :], one warp per (row, head).
__global__ void AttentionDeltaKernel(float* delta, const float* dout, const float* out,
                                     int64_t items, int64_t d) {
  const int lane = threadIdx.x & 31;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (item >= items) return;
  float s = 0;
  for (int64_t c = lane; c < d; c += 32) s += dout[item * d + c] * out[item * d + c];
  s = WarpSum(s);
  if (lane == 0) delta[item] = s;
}

// With p_ij = exp(scale·q_i·k_j − lse_i) and ds_ij = p_ij·(dout_i·v_j − delta_i):
//   dq_i += scale·Σ_j ds_ij·k_j. One warp per (row i, head h), keys
// start_i..i, 32 per step.
__host__ __device__ constexpr int64_t DqWarpFloats(int64_t d) { return 3 * d + 32; }

__global__ void AttentionDqKernel(float* dq, const float* dout, const float* q, const float* k,
                                  const float* v, const float* lse, const float* delta,
                                  const int32_t* row_start, int64_t n, int64_t hq,
                                  int64_t hkv, int64_t d) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (item >= n * hq) return;
  const int64_t i = item / hq, h = item % hq, g = h / (hq / hkv);
  float* qs = smem + warp * DqWarpFloats(d);
  float* dos = qs + d;
  float* acc = dos + d;
  float* dss = acc + d;
  for (int64_t c = lane; c < d; c += 32) {
    qs[c] = q[item * d + c];
    dos[c] = dout[item * d + c];
    acc[c] = 0.0f;
  }
  __syncwarp();
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t stride = hkv * d, first = row_start[i], count = i - first + 1;
  const float* kb = k + (first * hkv + g) * d;
  const float* vb = v + (first * hkv + g) * d;
  const float l = lse[item], dl = delta[item];
  for (int64_t j0 = 0; j0 < count; j0 += 32) {
    const int64_t j = j0 + lane;
    float ds = 0.0f;
    if (j < count) {
      const float p = expf(Dot(qs, kb + j * stride, d) * scale - l);
      ds = p * (Dot(dos, vb + j * stride, d) - dl) * scale;
    }
    dss[lane] = ds;
    __syncwarp();
    const int64_t valid = count - j0 < 32 ? count - j0 : 32;
    for (int64_t c = lane; c < d; c += 32) {
      float a = acc[c];
      for (int64_t t = 0; t < valid; ++t) a += dss[t] * kb[(j0 + t) * stride + c];
      acc[c] = a;
    }
    __syncwarp();
  }
  for (int64_t c = lane; c < d; c += 32) dq[item * d + c] += acc[c];
}

// dk_j += scale·Σ_i ds_ij·q_i and dv_j += Σ_i p_ij·dout_i over the query rows
// i in j..end_j − 1 and the query heads of kv head g. One warp per (row j,
// kv head g); 32 (row, head) pairs per step, one per lane.
__host__ __device__ constexpr int64_t DkvWarpFloats(int64_t d) { return 4 * d + 96; }

__global__ void AttentionDkvKernel(float* dk, float* dv, const float* dout, const float* q,
                                   const float* k, const float* v, const float* lse,
                                   const float* delta, const int32_t* row_end, int64_t n,
                                   int64_t hq, int64_t hkv, int64_t d) {
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (item >= n * hkv) return;
  const int64_t j = item / hkv, g = item % hkv, group = hq / hkv;
  float* ks = smem + warp * DkvWarpFloats(d);
  float* vs = ks + d;
  float* dka = vs + d;
  float* dva = dka + d;
  float* pss = dva + d;
  float* dss = pss + 32;
  int* qitems = reinterpret_cast<int*>(dss + 32);
  for (int64_t c = lane; c < d; c += 32) {
    ks[c] = k[item * d + c];
    vs[c] = v[item * d + c];
    dka[c] = 0.0f;
    dva[c] = 0.0f;
  }
  __syncwarp();
  const float scale = 1.0f / sqrtf(static_cast<float>(d));
  const int64_t count = (row_end[j] - j) * group;  // (query row, head) pairs
  for (int64_t t0 = 0; t0 < count; t0 += 32) {
    const int64_t t = t0 + lane;
    float p = 0.0f, ds = 0.0f;
    int64_t qi = 0;
    if (t < count) {
      qi = (j + t / group) * hq + g * group + t % group;
      p = expf(Dot(q + qi * d, ks, d) * scale - lse[qi]);
      ds = p * (Dot(dout + qi * d, vs, d) - delta[qi]) * scale;
    }
    pss[lane] = p;
    dss[lane] = ds;
    qitems[lane] = static_cast<int>(qi);
    __syncwarp();
    const int64_t valid = count - t0 < 32 ? count - t0 : 32;
    for (int64_t c = lane; c < d; c += 32) {
      float a = dka[c], b = dva[c];
      for (int64_t u = 0; u < valid; ++u) {
        const int64_t row = static_cast<int64_t>(qitems[u]) * d + c;
        a += dss[u] * q[row];
        b += pss[u] * dout[row];
      }
      dka[c] = a;
      dva[c] = b;
    }
    __syncwarp();
  }
  for (int64_t c = lane; c < d; c += 32) {
    dk[item * d + c] += dka[c];
    dv[item * d + c] += dva[c];
  }
}

__global__ void CopyRowsKernel(float* dst, const float* src, const int32_t* src_row,
                               const int32_t* dst_row, int64_t count, int64_t row_len) {
  for (int64_t e = GlobalIndex(); e < count * row_len; e += GridStride()) {
    const int64_t r = e / row_len, c = e % row_len;
    dst[static_cast<int64_t>(dst_row[r]) * row_len + c] =
        src[static_cast<int64_t>(src_row[r]) * row_len + c];
  }
}

// Warps per block for a kernel needing `floats_per_warp` of shared memory:
// 4 while that fits in the default 48 KiB, else 1.
int WarpsFor(int64_t floats_per_warp) {
  return 4 * floats_per_warp * 4 <= 48 * 1024 ? 4 : 1;
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t AttendRows(cudaStream_t s, float* out, float* lse, const float* q,
                       const float* k, const float* v, const int32_t* kv_first,
                       const int32_t* kv_count, int64_t n, int64_t hq, int64_t hkv,
                       int64_t d) {
  if (d > kMaxHeadDim) return cudaErrorInvalidValue;
  const int warps = WarpsFor(AttendWarpFloats(d));
  const unsigned blocks = static_cast<unsigned>((n * hq + warps - 1) / warps);
  const size_t shared = static_cast<size_t>(warps * AttendWarpFloats(d)) * sizeof(float);
  AttendKernel<<<blocks, warps * 32, shared, s>>>(out, lse, q, k, v, kv_first, kv_count, n,
                                                  hq, hkv, d);
  return cudaGetLastError();
}

cudaError_t AttentionBackward(cudaStream_t s, float* dq, float* dk, float* dv,
                              const float* dout, const float* q, const float* k,
                              const float* v, const float* out, const float* lse,
                              const int32_t* row_start, const int32_t* row_end, float* delta,
                              int64_t n, int64_t hq, int64_t hkv, int64_t d) {
  if (d > kMaxHeadDim) return cudaErrorInvalidValue;
  constexpr int kWarps = kThreads / 32;
  AttentionDeltaKernel<<<static_cast<unsigned>((n * hq + kWarps - 1) / kWarps), kThreads, 0,
                         s>>>(delta, dout, out, n * hq, d);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  const int wq = WarpsFor(DqWarpFloats(d));
  AttentionDqKernel<<<static_cast<unsigned>((n * hq + wq - 1) / wq), wq * 32,
                      static_cast<size_t>(wq * DqWarpFloats(d)) * sizeof(float), s>>>(
      dq, dout, q, k, v, lse, delta, row_start, n, hq, hkv, d);
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;

  const int wkv = WarpsFor(DkvWarpFloats(d));
  AttentionDkvKernel<<<static_cast<unsigned>((n * hkv + wkv - 1) / wkv), wkv * 32,
                       static_cast<size_t>(wkv * DkvWarpFloats(d)) * sizeof(float), s>>>(
      dk, dv, dout, q, k, v, lse, delta, row_end, n, hq, hkv, d);
  return cudaGetLastError();
}

cudaError_t CopyRows(cudaStream_t s, float* cache, const float* src, const int32_t* src_row,
                     const int32_t* dst_row, int64_t count, int64_t row_len) {
  if (count == 0) return cudaSuccess;
  CopyRowsKernel<<<GridFor(count * row_len), kThreads, 0, s>>>(cache, src, src_row, dst_row,
                                                               count, row_len);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
