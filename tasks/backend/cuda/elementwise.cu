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
  const auto* s = static_cast<const typename Storage<S>::T*>(src);
  for (int64_t i = GlobalIndex(); i < n; i += GridStride())
    d[i] = Storage<D>::Store(Storage<S>::Load(s[i]));
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

template <Elem D>
cudaError_t ConvertFrom(cudaStream_t s, void* dst, const void* src, Elem st, int64_t n) {
  switch (st) {
    case Elem::kF32: ConvertKernel<D, Elem::kF32><<<GridFor(n), kThreads, 0, s>>>(dst, src, n); break;
    case Elem::kF16: ConvertKernel<D, Elem::kF16><<<GridFor(n), kThreads, 0, s>>>(dst, src, n); break;
    case Elem::kBF16: ConvertKernel<D, Elem::kBF16><<<GridFor(n), kThreads, 0, s>>>(dst, src, n); break;
  }
  return cudaGetLastError();
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
  switch (dt) {
    case Elem::kF32: return ConvertFrom<Elem::kF32>(s, dst, src, st, n);
    case Elem::kF16: return ConvertFrom<Elem::kF16>(s, dst, src, st, n);
    case Elem::kBF16: return ConvertFrom<Elem::kBF16>(s, dst, src, st, n);
  }
  return cudaErrorInvalidValue;
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
