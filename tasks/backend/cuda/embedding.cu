// Embedding: a row gather forward, a deterministic scatter-add backward.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

template <Elem T>
__global__ void EmbeddingForwardKernel(float* out, const void* table, const int32_t* ids,
                                       int64_t n, int64_t c) {
  for (int64_t e = GlobalIndex(); e < n * c; e += GridStride()) {
    const int64_t i = e / c, j = e % c;
    out[e] = LoadAt<T>(table, static_cast<int64_t>(ids[i]) * c + j);
  }
}

// One block per distinct id: its row of dtable gets the rows of dout of the
// tokens with that id, added in token order (as the CPU backend does), so
// no two threads write the same float and the result does not depend on
// scheduling.
__global__ void EmbeddingBackwardKernel(float* dtable, const float* dout, const int32_t* order,
                                        const int32_t* seg_start, const int32_t* seg_id,
                                        int64_t c) {
  const int64_t g = blockIdx.x;
  float* row = dtable + static_cast<int64_t>(seg_id[g]) * c;
  const int32_t t0 = seg_start[g], t1 = seg_start[g + 1];
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    float acc = row[j];
    for (int32_t t = t0; t < t1; ++t) acc += dout[static_cast<int64_t>(order[t]) * c + j];
    row[j] = acc;
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t EmbeddingForward(cudaStream_t s, float* out, const void* table, Elem tt,
                             const int32_t* ids, int64_t n, int64_t c) {
  const unsigned grid = GridFor(n * c);
  return WithAnyElem(tt, [&](auto t) {
    EmbeddingForwardKernel<decltype(t)::value><<<grid, kThreads, 0, s>>>(out, table, ids, n, c);
    return cudaGetLastError();
  });
}

cudaError_t EmbeddingBackward(cudaStream_t s, float* dtable, const float* dout,
                              const int32_t* order, const int32_t* seg_start,
                              const int32_t* seg_id, int64_t segments, int64_t c) {
  if (segments == 0) return cudaSuccess;
  EmbeddingBackwardKernel<<<static_cast<unsigned>(segments), kThreads, 0, s>>>(
      dtable, dout, order, seg_start, seg_id, c);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
