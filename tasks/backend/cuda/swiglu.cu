// SwiGLU: out = silu(gate)·up, and its backward.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

__global__ void SwiGluForwardKernel(float* out, const float* gate, const float* up, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride())
    out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

__global__ void SwiGluBackwardKernel(float* dgate, float* dup, const float* dout,
                                     const float* gate, const float* up, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) {
    const float g = gate[i], sg = 1.0f / (1.0f + expf(-g));
    dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
    dup[i] += dout[i] * g * sg;
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t SwiGluForward(cudaStream_t s, float* out, const float* gate, const float* up,
                          int64_t n) {
  SwiGluForwardKernel<<<GridFor(n), kThreads, 0, s>>>(out, gate, up, n);
  return cudaGetLastError();
}

cudaError_t SwiGluBackward(cudaStream_t s, float* dgate, float* dup, const float* dout,
                           const float* gate, const float* up, int64_t n) {
  SwiGluBackwardKernel<<<GridFor(n), kThreads, 0, s>>>(dgate, dup, dout, gate, up, n);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
