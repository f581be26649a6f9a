// The GEMV half of Gemm: a few rows against a 16-bit, block-quantized (or
// f32) [N, K] weight, as in decode, where the weight is read once and
// widened on the fly (a block type one value a lane: a warp's 32 lanes read
// one Q8_0/Q4_0 block's codes side by side and its scale once). Larger
// products go to cuBLAS from cuda_ops.cc.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

// One warp per output column r (a row of b); lanes split k; every row i < m
// reuses each loaded weight element.
template <Elem B>
__global__ void GemvSmallMKernel(float* c, const float* a, int64_t ars, int64_t acs,
                                 const void* b, int64_t m, int64_t n, int64_t k, float alpha,
                                 float beta) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= n) return;  // the whole warp leaves together
  const int64_t row = r * k;
  float acc[kGemvMaxRows] = {};
  for (int64_t kk = lane; kk < k; kk += 32) {
    const float w = LoadAt<B>(b, row + kk);
#pragma unroll
    for (int i = 0; i < kGemvMaxRows; ++i)
      if (i < m) acc[i] += w * a[i * ars + kk * acs];
  }
#pragma unroll
  for (int i = 0; i < kGemvMaxRows; ++i) {
    if (i >= m) break;
    const float dot = WarpSum(acc[i]);
    if (lane == 0) {
      float* ci = c + i * n + r;
      *ci = beta == 0.0f ? alpha * dot : alpha * dot + beta * *ci;
    }
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t GemvSmallM(cudaStream_t s, float* c, const float* a, int64_t a_row_stride,
                       int64_t a_col_stride, const void* b, Elem bt, int64_t m, int64_t n,
                       int64_t k, float alpha, float beta) {
  if (m < 1 || m > kGemvMaxRows) return cudaErrorInvalidValue;
  constexpr int kWarps = kThreads / 32;
  const unsigned blocks = static_cast<unsigned>((n + kWarps - 1) / kWarps);
  return WithAnyElem(bt, [&](auto t) {
    GemvSmallMKernel<decltype(t)::value><<<blocks, kThreads, 0, s>>>(
        c, a, a_row_stride, a_col_stride, b, m, n, k, alpha, beta);
    return cudaGetLastError();
  });
}

}  // namespace pcfarm::cuda
