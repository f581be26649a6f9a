// Rotary position embedding (Hugging Face rotate-half), forward and backward.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

// One thread per (token, head, pair j): it reads x[j] and x[j + d/2] before
// writing them, so out may alias inp. The angle is an f32 product and its
// cos/sin are taken in double and rounded, as the CPU backend does.
__global__ void RopeKernel(float* out, const float* inp, const float* inv_freq,
                           const int32_t* positions, int64_t n, int64_t h, int64_t d,
                           bool backward) {
  const int64_t half = d / 2;
  for (int64_t e = GlobalIndex(); e < n * h * half; e += GridStride()) {
    const int64_t j = e % half, row = e / half, t = row / h;
    const float angle = static_cast<float>(positions[t]) * inv_freq[j];
    double sd, cd;
    sincos(static_cast<double>(angle), &sd, &cd);
    const float cs = static_cast<float>(cd), sn = static_cast<float>(sd);
    const float* x1 = inp + row * d;
    float* o1 = out + row * d;
    const float a = x1[j], b = x1[j + half];
    if (!backward) {
      o1[j] = a * cs - b * sn;
      o1[j + half] = b * cs + a * sn;
    } else {  // the transpose of the rotation, accumulated
      o1[j] += a * cs + b * sn;
      o1[j + half] += b * cs - a * sn;
    }
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t Rope(cudaStream_t s, float* out, const float* inp, const float* inv_freq,
                 const int32_t* positions, int64_t n, int64_t h, int64_t d, bool backward) {
  RopeKernel<<<GridFor(n * h * (d / 2)), kThreads, 0, s>>>(out, inp, inv_freq, positions, n,
                                                           h, d, backward);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
