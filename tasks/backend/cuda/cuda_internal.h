// Internals of the CUDA backend shared by cuda_backend.cc (device, memory,
// transfers) and cuda_ops.cc (the ops).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tasks/backend/backend.h"
#include "tasks/backend/cuda/cuda_kernels.h"

namespace pcfarm::cuda {

struct CudaMemory {
  std::atomic<uint64_t> used{0};
  uint64_t limit = 0;  // 0 = none
  int device = 0;
};

class CudaBuffer final : public TensorBuffer {
 public:
  CudaBuffer(void* data, size_t bytes, std::shared_ptr<CudaMemory> memory)
      : data_(data), bytes_(bytes), memory_(std::move(memory)) {}
  ~CudaBuffer() override;
  void* data() const { return data_; }

 private:
  void* data_;
  size_t bytes_;
  std::shared_ptr<CudaMemory> memory_;
};

inline void* Raw(const Tensor& t) { return static_cast<CudaBuffer*>(t.buffer())->data(); }
// REQUIRES: t.type() == kF32 (checked by the public Backend methods).
inline float* F32(const Tensor& t) { return static_cast<float*>(Raw(t)); }
inline Elem ElemOf(const Tensor& t) { return static_cast<Elem>(static_cast<int>(t.type())); }

// Host arrays packed for one upload into the argument buffer: Add returns
// each array's byte offset, Device(offset) its address once uploaded.
class ArgPack {
 public:
  template <typename T>
  size_t Add(std::span<const T> values) {
    const size_t offset = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(offset + values.size_bytes());
    if (!values.empty()) std::memcpy(bytes_.data() + offset, values.data(), values.size_bytes());
    return offset;
  }
  std::span<const std::byte> bytes() const { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

class CudaBackend final : public Backend {
 public:
  // Opens the device; see CreateCudaBackend for the statuses.
  static Result<std::unique_ptr<CudaBackend>> Create(const BackendOptions& options);
  ~CudaBackend() override;

  std::string name() const override { return "cuda"; }
  DeviceInfo info() const override;
  // Every type: the block types stay as GGUF stores them (cuda_common.cuh).
  bool SupportsStorage(StorageType) const override { return true; }
  Status Synchronize() override;

 protected:
  Result<Tensor> AllocImpl(Shape shape, StorageType type) override;
  Status UploadImpl(const Tensor& t, std::span<const float> src) override;
  Status DownloadImpl(const Tensor& t, std::span<float> dst) override;
  Status UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) override;
  Status DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) override;
  Status FillImpl(const Tensor& t, float value) override;
  Status CopyImpl(const Tensor& dst, const Tensor& src) override;
  Status AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) override;
  Status AxpyImpl(const Tensor& y, float alpha, const Tensor& x) override;
  Status ScaleImpl(const Tensor& t, float s) override;
  Status GemmImpl(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
                  bool trans_b, float alpha, float beta) override;
  Status EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                              std::span<const int32_t> ids) override;
  Status EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                               std::span<const int32_t> ids) override;
  Status RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                            const Tensor& weight, float eps) override;
  Status RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                             const Tensor& dout, const Tensor& inp,
                             const Tensor& weight, float eps) override;
  Status RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                  std::span<const int32_t> positions, bool backward) override;
  Status AttentionForwardImpl(const Tensor& out, const Tensor* lse, const Tensor& q,
                              const Tensor& k, const Tensor& v,
                              std::span<const int32_t> seq_starts) override;
  Status AttentionBackwardImpl(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               std::span<const int32_t> seq_starts) override;
  Status KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                          std::span<const int32_t> slots,
                          std::span<const int32_t> positions) override;
  Status AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                             const Tensor& k_cache, const Tensor& v_cache,
                             std::span<const int32_t> slots,
                             std::span<const int32_t> positions) override;
  Status SwiGluForwardImpl(const Tensor& out, const Tensor& gate,
                           const Tensor& up) override;
  Status SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                            const Tensor& dout, const Tensor& gate,
                            const Tensor& up) override;
  Result<CrossEntropySums> CrossEntropyForwardImpl(
      const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
      std::span<const float> weights) override;
  Status CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                  std::span<const int32_t> targets,
                                  std::span<const float> weights,
                                  float grad_scale) override;
  Status LogProbsImpl(const Tensor& out, const Tensor& logits,
                      std::span<const int32_t> targets) override;
  Status AdamWStepImpl(const Tensor& param, const Tensor& grad, const Tensor& m,
                       const Tensor& v, const AdamWConfig& config) override;
  Result<double> SumSquaresImpl(const Tensor& t) override;

 private:
  CudaBackend() = default;

  // Makes the device current; fails with the saved status once the context
  // is lost. Called first by every entry point.
  Status Enter();
  // OK for cudaSuccess; otherwise the status for `e` (see cuda_backend.h),
  // clearing a non-sticky error and remembering a sticky one.
  Status Check(cudaError_t e, const char* what);
  Status CheckBlas(cublasStatus_t e, const char* what);
  // Copies `pack` to the device argument buffer (on the stream) and returns
  // its device address.
  Result<const std::byte*> UploadArgs(const ArgPack& pack);
  // A device scratch buffer (slot 0..kScratchSlots−1) of at least `bytes`,
  // valid until the next call for the same slot; stream order keeps earlier
  // users safe.
  static constexpr int kScratchSlots = 2;
  Result<void*> Scratch(int slot, size_t bytes);
  // Grows `buffer` to at least `bytes` (waits for the stream first).
  Status Grow(void*& buffer, size_t& capacity, size_t bytes, const char* what);

  std::shared_ptr<CudaMemory> memory_;
  int device_ = 0;
  std::string device_name_;
  uint64_t device_memory_ = 0;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* args_ = nullptr;
  size_t args_capacity_ = 0;
  void* scratch_[kScratchSlots] = {};
  size_t scratch_capacity_[kScratchSlots] = {};
  Status lost_;  // not OK once the CUDA context is unusable
};

}  // namespace pcfarm::cuda
