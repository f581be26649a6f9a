// Σ x² with a fixed grid, so that the same tensor gives the same sum every run.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

// Each thread sums a fixed grid-stride subset in double; each block writes
// its sum to partials[blockIdx.x].
__global__ void SumSquaresKernel(double* partials, const float* p, int64_t n) {
  __shared__ double shared[32];
  double acc = 0;
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) {
    const double x = p[i];
    acc += x * x;
  }
  acc = BlockSum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t SumSquaresPartials(cudaStream_t s, double* partials, const float* p, int64_t n) {
  SumSquaresKernel<<<kSumSquaresBlocks, kThreads, 0, s>>>(partials, p, n);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
