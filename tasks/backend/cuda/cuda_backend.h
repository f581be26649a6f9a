// The CUDA compute backend: the Backend interface (tasks/backend/backend.h)
// on one NVIDIA GPU. cuBLAS for matrix products; our own kernels (one .cu
// file per op in this folder) for everything else.
//
// How work reaches the device. Every op is enqueued on the backend's one
// non-blocking stream and returns without waiting; stream order makes each
// op see the results of the ones before it. Host index arrays (token ids,
// positions, sequence starts, targets, weights) are copied into a device
// argument buffer on the same stream during the call, so the caller may
// reuse them at once. Download, DownloadBytes, CrossEntropyForward,
// SumSquares and Synchronize wait for the stream.
//
// Storage: one cudaMalloc allocation per tensor (device memory, never
// managed memory). F16/BF16 tensors keep their 2-byte elements; Upload and
// Download convert on the host with tasks/backend/half.h, exactly as the CPU
// backend does, and converting Copy uses bit-exact device ports of it.
// GGML block tensors (Q8_0, Q4_0, Q4_K, Q6_K) keep GGUF's blocks byte for
// byte (UploadBytes); the kernels that read weights dequantize one value
// at a time with the reference products (cuda_common.cuh, LoadAt), and
// Download dequantizes on the host with ggml_quants.h.
//
// Gemm: f32 operands go to cublasSgemm (default math mode: no TF32, so the
// results stay within the f32 tolerances of the shared op test). Two 16-bit
// operands of the same type go to cublasGemmEx with f32 compute (products
// of 16-bit values are exact in f32). One 16-bit operand beside an f32 one
// (the usual weight · activation case) is widened into f32 scratch, in tiles
// of at most 64 MiB, and multiplied with cublasSgemm: rounding the f32
// activation to 16 bits for a tensor-core GEMM would break the contract
// that stored parameters are converted to f32 for compute; a block weight
// is widened the same way. Up to 8 rows against a transposed weight
// (decode) take our GEMV kernel instead, which widens the weight on the
// fly and reads it once.
//
// Determinism: no op uses atomics; reductions run in a fixed order for a
// given shape, so the same inputs give the same bits on the same GPU.
//
// Limits: the attention ops take head dimensions up to 2048 (larger is
// kInvalidArgument).
//
// Errors: no driver, no device at options.device_index, or no kernel image
// for the device's architecture is kUnavailable from CreateCudaBackend.
// Out of device memory (or beyond options.memory_limit_bytes) is
// kResourceExhausted. Any other CUDA or cuBLAS error is kInternal with the
// library's text; an error that leaves the CUDA context unusable (illegal
// address, launch failure, a lost or reset device, ...) makes every later
// call of that backend fail with the same status (it must be recreated).
//
// Thread-safety: as Backend. Each call makes the backend's device current on
// the calling thread.
#pragma once

#include <memory>

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

// The registry score: 0 when there is no CUDA driver, no device at
// options.device_index, or the device is older than sm_75; otherwise 50
// (above any Vulkan device, so an NVIDIA GPU is driven through CUDA).
int CudaBackendScore(const BackendOptions& options);

// Opens GPU options.device_index (CUDA's ordinal, as in ListCudaDevices).
// options.memory_limit_bytes caps the bytes held in tensors; cpu_threads is
// ignored.
Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

}  // namespace pcfarm
