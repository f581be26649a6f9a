// RMSNorm over the last dimension, forward and backward, f32 accumulation.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

// One block per row. out may alias inp: every read of the row happens
// before the reduction's barrier, every write after it.
template <Elem W>
__global__ void RmsNormForwardKernel(float* out, const float* inp, const void* w, int64_t c,
                                     float eps) {
  __shared__ float shared[32];
  const float* x = inp + static_cast<int64_t>(blockIdx.x) * c;
  float* o = out + static_cast<int64_t>(blockIdx.x) * c;
  float ss = 0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) ss += x[j] * x[j];
  ss = BlockSum(ss, shared);
  const float rstd = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) o[j] = x[j] * rstd * LoadAt<W>(w, j);
}

// y = x·r·w with r = (mean(x²)+eps)^-1/2:
// dx_j += r·w_j·dy_j − x_j·r³/C · Σ_i dy_i·w_i·x_i. One block per row;
// saves r for the weight gradient.
template <Elem W>
__global__ void RmsNormBackwardKernel(float* dinp, float* rstd_out, const float* dout,
                                      const float* inp, const void* w, int64_t c, float eps) {
  __shared__ float shared[32];
  const int64_t base = static_cast<int64_t>(blockIdx.x) * c;
  const float* x = inp + base;
  const float* dy = dout + base;
  float* dx = dinp + base;
  float ss = 0, dot = 0;
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    ss += x[j] * x[j];
    dot += dy[j] * LoadAt<W>(w, j) * x[j];
  }
  ss = BlockSum(ss, shared);
  dot = BlockSum(dot, shared);
  const float rs = 1.0f / sqrtf(ss / static_cast<float>(c) + eps);
  const float k = dot * rs * rs * rs / static_cast<float>(c);
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x)
    dx[j] += rs * LoadAt<W>(w, j) * dy[j] - x[j] * k;
  if (threadIdx.x == 0) rstd_out[blockIdx.x] = rs;
}

// dw[j] += Σ_r dy[r, j]·x[r, j]·rstd[r], one thread per column, rows in order.
__global__ void RmsNormWeightGradKernel(float* dw, const float* dout, const float* inp,
                                        const float* rstd, int64_t rows, int64_t c) {
  for (int64_t j = GlobalIndex(); j < c; j += GridStride()) {
    float acc = dw[j];
    for (int64_t r = 0; r < rows; ++r) acc += dout[r * c + j] * inp[r * c + j] * rstd[r];
    dw[j] = acc;
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t RmsNormForward(cudaStream_t s, float* out, const float* inp, const void* w,
                           Elem wt, int64_t rows, int64_t c, float eps) {
  const unsigned grid = static_cast<unsigned>(rows);
  return WithValueElem(wt, [&](auto t) {
    RmsNormForwardKernel<decltype(t)::value><<<grid, kThreads, 0, s>>>(out, inp, w, c, eps);
    return cudaGetLastError();
  });
}

cudaError_t RmsNormBackward(cudaStream_t s, float* dinp, float* dweight, float* rstd,
                            const float* dout, const float* inp, const void* w, Elem wt,
                            int64_t rows, int64_t c, float eps) {
  const unsigned grid = static_cast<unsigned>(rows);
  const cudaError_t e = WithValueElem(wt, [&](auto t) {
    RmsNormBackwardKernel<decltype(t)::value>
        <<<grid, kThreads, 0, s>>>(dinp, rstd, dout, inp, w, c, eps);
    return cudaGetLastError();
  });
  if (e != cudaSuccess || dweight == nullptr) return e;
  RmsNormWeightGradKernel<<<GridFor(c), kThreads, 0, s>>>(dweight, dout, inp, rstd, rows, c);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
