// Cross-entropy over logits rows (forward losses, backward), and logprobs.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

// log Σ exp(x) of one row, max-shifted; every thread of the block gets it.
__device__ float RowLogSumExp(const float* x, int64_t v, float* shared) {
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, x[j]);
  mx = BlockMax(mx, shared);
  float sum = 0;
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) sum += expf(x[j] - mx);
  sum = BlockSum(sum, shared);
  return mx + logf(sum);
}

// One block per row. A masked row (weight 0) is skipped by the whole block.
__global__ void CrossEntropyRowsKernel(float* losses, const float* logits,
                                       const int32_t* targets, const float* weights,
                                       int64_t v) {
  __shared__ float shared[32];
  const int64_t i = blockIdx.x;
  if (weights[i] == 0.0f) {
    if (threadIdx.x == 0) losses[i] = 0.0f;
    return;
  }
  const float* x = logits + i * v;
  const float lse = RowLogSumExp(x, v, shared);
  if (threadIdx.x == 0) losses[i] = lse - x[targets[i]];
}

// dlogits[i] += k·softmax(logits[i]) − k·onehot(target), k = scale·w_i,
// rounded in the CPU backend's order (the target's −k is a second add).
__global__ void CrossEntropyBackwardKernel(float* dlogits, const float* logits,
                                           const int32_t* targets, const float* weights,
                                           int64_t v, float grad_scale) {
  __shared__ float shared[32];
  const int64_t i = blockIdx.x;
  if (weights[i] == 0.0f) return;
  const float* x = logits + i * v;
  float* dx = dlogits + i * v;
  const float lse = RowLogSumExp(x, v, shared);
  const float k = grad_scale * weights[i];
  const int64_t t = targets[i];
  for (int64_t j = threadIdx.x; j < v; j += blockDim.x) {
    float val = dx[j] + k * expf(x[j] - lse);
    if (j == t) val -= k;
    dx[j] = val;
  }
}

__global__ void LogProbsKernel(float* out, const float* logits, const int32_t* targets,
                               int64_t v) {
  __shared__ float shared[32];
  const int64_t i = blockIdx.x;
  const float* x = logits + i * v;
  const float lse = RowLogSumExp(x, v, shared);
  if (threadIdx.x == 0) out[i] = x[targets[i]] - lse;
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t CrossEntropyRows(cudaStream_t s, float* losses, const float* logits,
                             const int32_t* targets, const float* weights, int64_t n,
                             int64_t v) {
  CrossEntropyRowsKernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(losses, logits,
                                                                       targets, weights, v);
  return cudaGetLastError();
}

cudaError_t CrossEntropyBackward(cudaStream_t s, float* dlogits, const float* logits,
                                 const int32_t* targets, const float* weights, int64_t n,
                                 int64_t v, float grad_scale) {
  CrossEntropyBackwardKernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(
      dlogits, logits, targets, weights, v, grad_scale);
  return cudaGetLastError();
}

cudaError_t LogProbs(cudaStream_t s, float* out, const float* logits, const int32_t* targets,
                     int64_t n, int64_t v) {
  LogProbsKernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(out, logits, targets, v);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
