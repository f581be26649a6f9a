// The CUDA backend: device, memory, transfers, errors. The ops are in
// cuda_ops.cc, their kernels in the .cu files.
#include "tasks/backend/cuda/cuda_backend.h"

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "tasks/backend/cuda/cuda_devices.h"
#include "tasks/backend/cuda/cuda_internal.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/half.h"

namespace pcfarm {
namespace {

// Why device `index` cannot run our kernels, or OK.
Status DeviceUsable(int index, cudaDeviceProp* prop_out) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(std::string("cuda: no usable driver or device: ") + cudaGetErrorName(e) +
                       ": " + cudaGetErrorString(e));
  }
  if (index < 0 || index >= count)
    return Unavailable("cuda: device_index " + std::to_string(index) + " is out of range (" +
                       std::to_string(count) + " CUDA devices)");
  cudaDeviceProp prop{};
  if (const cudaError_t pe = cudaGetDeviceProperties(&prop, index); pe != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(std::string("cuda: reading device properties: ") +
                       cudaGetErrorString(pe));
  }
  if (prop.major * 10 + prop.minor < 75)
    return Unavailable(std::string("cuda: device ") + prop.name + " is sm_" +
                       std::to_string(prop.major) + std::to_string(prop.minor) +
                       "; this build needs sm_75 (Turing) or newer");
  if (prop_out != nullptr) *prop_out = prop;
  return Status::Ok();
}

// Errors after which the CUDA context cannot be used again.
bool IsSticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorDevicesUnavailable:
    case cudaErrorContextIsDestroyed:
    case cudaErrorCudartUnloading:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

}  // namespace

int CudaBackendScore(const BackendOptions& options) {
  return DeviceUsable(options.device_index, nullptr).ok() ? 50 : 0;
}

Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(auto b, cuda::CudaBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(b));
}

namespace cuda {
namespace {

// Bytes held by live CudaBuffers per device ordinal, for CudaBytesHeld.
constexpr int kMaxHeldDevices = 64;
std::atomic<uint64_t> g_held[kMaxHeldDevices];

void AddHeld(int device, int64_t delta) {
  if (device >= 0 && device < kMaxHeldDevices) g_held[device] += uint64_t(delta);
}

}  // namespace

CudaBuffer::~CudaBuffer() {
  // The device's primary context outlives the backend; freeing from another
  // thread needs it current there. Errors cannot be reported from here.
  int previous = 0;
  const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != memory_->device &&
                        cudaSetDevice(memory_->device) == cudaSuccess;
  cudaFree(data_);
  if (switched) cudaSetDevice(previous);
  cudaGetLastError();
  memory_->used -= bytes_;
  AddHeld(memory_->device, -int64_t(bytes_));
}

Result<std::unique_ptr<CudaBackend>> CudaBackend::Create(const BackendOptions& options) {
  cudaDeviceProp prop{};
  PCFARM_RETURN_IF_ERROR(DeviceUsable(options.device_index, &prop));
  std::unique_ptr<CudaBackend> b(new CudaBackend());
  b->device_ = options.device_index;
  b->device_name_ = prop.name;
  b->device_memory_ = prop.totalGlobalMem;
  b->memory_ = std::make_shared<CudaMemory>();
  b->memory_->limit = options.memory_limit_bytes;
  b->memory_->device = options.device_index;
  const std::string where = std::string("cuda device ") + std::to_string(b->device_) + " (" +
                            prop.name + ")";
  if (const cudaError_t e = cudaSetDevice(b->device_); e != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(where + ": " + cudaGetErrorString(e));
  }
  if (const cudaError_t e = cuda::ProbeKernelImage(); e != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(where + ": this binary has no kernels for sm_" +
                       std::to_string(prop.major) + std::to_string(prop.minor) +
                       " (rebuild with it in PCFARM_CUDA_ARCHITECTURES): " +
                       cudaGetErrorString(e));
  }
  if (const cudaError_t e = cudaStreamCreateWithFlags(&b->stream_, cudaStreamNonBlocking);
      e != cudaSuccess) {
    cudaGetLastError();
    return Unavailable(where + ": creating a stream: " + cudaGetErrorString(e));
  }
  if (const cublasStatus_t e = cublasCreate(&b->blas_); e != CUBLAS_STATUS_SUCCESS) {
    b->blas_ = nullptr;
    return Unavailable(where + ": cublasCreate: " + cublasGetStatusString(e));
  }
  PCFARM_RETURN_IF_ERROR(b->CheckBlas(cublasSetStream(b->blas_, b->stream_), "cublasSetStream"));
  return b;
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  if (blas_ != nullptr) cublasDestroy(blas_);
  cudaFree(args_);
  for (void* s : scratch_) cudaFree(s);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
  cudaGetLastError();
}

DeviceInfo CudaBackend::info() const {
  DeviceInfo d;
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f GiB",
                static_cast<double>(device_memory_) / (1024.0 * 1024.0 * 1024.0));
  d.description = "CUDA " + device_name_ + ", " + mem + ", cuBLAS";
  d.memory_bytes = memory_->limit != 0 ? memory_->limit : device_memory_;
  d.threads = 1;
  return d;
}

Status CudaBackend::Enter() {
  if (!lost_.ok()) return lost_;
  return Check(cudaSetDevice(device_), "cudaSetDevice");
}

Status CudaBackend::Check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  const std::string text = std::string("cuda: ") + what + ": " + cudaGetErrorName(e) + ": " +
                           cudaGetErrorString(e);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return ResourceExhausted(text);
  }
  if (IsSticky(e)) {
    lost_ = Internal(text + " (the CUDA context is unusable: recreate the backend)");
    return lost_;
  }
  cudaGetLastError();
  return Internal(text);
}

Status CudaBackend::CheckBlas(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  const std::string text = std::string("cublas: ") + what + ": " + cublasGetStatusString(e);
  if (e == CUBLAS_STATUS_ALLOC_FAILED) return ResourceExhausted(text);
  // An execution failure is usually a lost context: ask the runtime.
  if (e == CUBLAS_STATUS_EXECUTION_FAILED) {
    if (const cudaError_t last = cudaPeekAtLastError(); IsSticky(last))
      return Check(last, what);
  }
  return Internal(text);
}

Status CudaBackend::Synchronize() {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

Status CudaBackend::Grow(void*& buffer, size_t& capacity, size_t bytes, const char* what) {
  if (bytes <= capacity) return Status::Ok();
  // Earlier ops on the stream may still read the old buffer.
  PCFARM_RETURN_IF_ERROR(Check(cudaStreamSynchronize(stream_), what));
  PCFARM_RETURN_IF_ERROR(Check(cudaFree(buffer), what));
  buffer = nullptr;
  capacity = 0;
  const size_t want = std::max(bytes, size_t{1} << 16);
  PCFARM_RETURN_IF_ERROR(Check(cudaMalloc(&buffer, want), what));
  capacity = want;
  return Status::Ok();
}

Result<const std::byte*> CudaBackend::UploadArgs(const ArgPack& pack) {
  const auto bytes = pack.bytes();
  PCFARM_RETURN_IF_ERROR(Grow(args_, args_capacity_, bytes.size(), "argument buffer"));
  if (!bytes.empty()) {
    // From pageable memory: the runtime has staged the bytes when this
    // returns, so `pack` may go away; the copy runs in stream order.
    PCFARM_RETURN_IF_ERROR(Check(cudaMemcpyAsync(args_, bytes.data(), bytes.size(),
                                                 cudaMemcpyHostToDevice, stream_),
                                 "copying op arguments"));
  }
  return static_cast<const std::byte*>(args_);
}

Result<void*> CudaBackend::Scratch(int slot, size_t bytes) {
  PCFARM_RETURN_IF_ERROR(Grow(scratch_[slot], scratch_capacity_[slot], bytes, "scratch buffer"));
  return scratch_[slot];
}

Result<Tensor> CudaBackend::AllocImpl(Shape shape, StorageType type) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const uint64_t bytes = StorageBytes(type, shape.numel());
  const std::string what = shape.ToString() + " " + StorageTypeName(type) + " (" +
                           std::to_string(bytes) + " bytes)";
  const uint64_t used = memory_->used.fetch_add(bytes) + bytes;
  if (memory_->limit != 0 && used > memory_->limit) {
    memory_->used -= bytes;
    return ResourceExhausted("cuda: allocating " + what + " exceeds the memory limit of " +
                             std::to_string(memory_->limit) + " bytes (" +
                             std::to_string(used - bytes) + " in use)");
  }
  void* data = nullptr;
  const cudaError_t e = cudaMalloc(&data, bytes);
  if (e != cudaSuccess) {
    memory_->used -= bytes;
    return Check(e, ("cudaMalloc " + what).c_str());
  }
  AddHeld(memory_->device, int64_t(bytes));
  return Tensor(this, std::make_shared<CudaBuffer>(data, bytes, memory_), shape, type);
}

Status CudaBackend::UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) {
  PCFARM_RETURN_IF_ERROR(Enter());
  // Pageable source: staged before the call returns, so the caller may reuse it.
  return Check(cudaMemcpyAsync(Raw(t), src.data(), src.size(), cudaMemcpyHostToDevice, stream_),
               "upload");
}

Status CudaBackend::DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) {
  PCFARM_RETURN_IF_ERROR(Enter());
  PCFARM_RETURN_IF_ERROR(Check(
      cudaMemcpyAsync(dst.data(), Raw(t), dst.size(), cudaMemcpyDeviceToHost, stream_),
      "download"));
  return Check(cudaStreamSynchronize(stream_), "download");
}

Status CudaBackend::UploadImpl(const Tensor& t, std::span<const float> src) {
  if (t.type() == StorageType::kF32) return UploadBytesImpl(t, std::as_bytes(src));
  std::vector<uint16_t> half(src.size());
  if (t.type() == StorageType::kF16) {
    for (size_t i = 0; i < src.size(); ++i) half[i] = F32ToF16(src[i]);
  } else {
    for (size_t i = 0; i < src.size(); ++i) half[i] = F32ToBF16(src[i]);
  }
  return UploadBytesImpl(t, std::as_bytes(std::span<const uint16_t>(half)));
}

Status CudaBackend::DownloadImpl(const Tensor& t, std::span<float> dst) {
  if (t.type() == StorageType::kF32) return DownloadBytesImpl(t, std::as_writable_bytes(dst));
  if (IsQuantized(t.type())) {  // the blocks as they are, then the reference dequantizer
    std::vector<std::byte> raw(t.bytes());
    PCFARM_RETURN_IF_ERROR(DownloadBytesImpl(t, raw));
    const uint32_t g = StorageGgmlType(t.type());
    DequantizeBlocks(g, reinterpret_cast<const uint8_t*>(raw.data()),
                     t.numel() / GgmlBlockValues(g), dst.data());
    return Status::Ok();
  }
  std::vector<uint16_t> half(dst.size());
  PCFARM_RETURN_IF_ERROR(DownloadBytesImpl(t, std::as_writable_bytes(std::span<uint16_t>(half))));
  if (t.type() == StorageType::kF16) {
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = F16ToF32(half[i]);
  } else {
    for (size_t i = 0; i < dst.size(); ++i) dst[i] = BF16ToF32(half[i]);
  }
  return Status::Ok();
}

}  // namespace cuda

uint64_t CudaBytesHeld(int index) {
  return index >= 0 && index < cuda::kMaxHeldDevices ? cuda::g_held[index].load() : 0;
}

}  // namespace pcfarm
