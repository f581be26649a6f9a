// Elementwise ops: Fill, converting Copy, Add, Axpy, Scale.
#include "tasks/backend/cuda/cuda_common.cuh"

namespace pcfarm::cuda {
namespace {

// ---- kernels ----------------------------------------------------------------

__global__ void FillKernel(float* p, int64_t n, float value) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) p[i] = value;
}

template <Elem D, Elem S>
__global__ void ConvertKernel(void* dst, const void* src, int64_t n) {
  auto* d = static_cast<typename Storage<D>::T*>(dst);
  for (int64_t i = GlobalIndex(); i < n; i += GridStride())
    d[i] = Storage<D>::Store(LoadAt<S>(src, i));
}

__global__ void AddKernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) out[i] = a[i] + b[i];
}

__global__ void AxpyKernel(float* y, float alpha, const float* x, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) y[i] += alpha * x[i];
}

__global__ void ScaleKernel(float* p, float scale, int64_t n) {
  for (int64_t i = GlobalIndex(); i < n; i += GridStride()) p[i] *= scale;
}

}  // namespace

// ---- launchers --------------------------------------------------------------

cudaError_t ProbeKernelImage() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, FillKernel);
}

cudaError_t Fill(cudaStream_t s, float* p, int64_t n, float value) {
  FillKernel<<<GridFor(n), kThreads, 0, s>>>(p, n, value);
  return cudaGetLastError();
}

cudaError_t Convert(cudaStream_t s, void* dst, Elem dt, const void* src, Elem st, int64_t n) {
  return WithValueElem(dt, [&](auto d) {
    return WithAnyElem(st, [&](auto from) {
      ConvertKernel<decltype(d)::value, decltype(from)::value>
          <<<GridFor(n), kThreads, 0, s>>>(dst, src, n);
      return cudaGetLastError();
    });
  });
}

cudaError_t Add(cudaStream_t s, float* out, const float* a, const float* b, int64_t n) {
  AddKernel<<<GridFor(n), kThreads, 0, s>>>(out, a, b, n);
  return cudaGetLastError();
}

cudaError_t Axpy(cudaStream_t s, float* y, float alpha, const float* x, int64_t n) {
  AxpyKernel<<<GridFor(n), kThreads, 0, s>>>(y, alpha, x, n);
  return cudaGetLastError();
}

cudaError_t Scale(cudaStream_t s, float* p, float scale, int64_t n) {
  ScaleKernel<<<GridFor(n), kThreads, 0, s>>>(p, scale, n);
  return cudaGetLastError();
}

}  // namespace pcfarm::cuda
