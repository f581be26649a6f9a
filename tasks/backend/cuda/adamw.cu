// One AdamW step, elementwise.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

__global__ void AdamWKernel(float* p, const float* g, float* m, float* v, int64_t n, float lr,
                            float b1, float b2, float eps, float wd, float gs, float bc1,
                            float bc2) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) {
    const float gi = gs * g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= lr * ((mi * bc1) / (sqrtf(vi * bc2) + eps) + wd * p[i]);
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t AdamW(cudaStream_t s, float* p, const float* g, float* m, float* v, int64_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, float bc1, float bc2) {
  AdamWKernel<<<GridFor(n), kThreads, 0, s>>>(p, g, m, v, n, lr, beta1, beta2, eps,
                                              weight_decay, grad_scale, bc1, bc2);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
