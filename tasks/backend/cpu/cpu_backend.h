// The CPU reference backend: OpenBLAS cblas_sgemm for matrix products, plain
// loops written for GCC's auto-vectoriser for everything else, split over a
// small thread pool.
//
// F16/BF16 and quantized weights of Gemm are converted tile by tile (64
// rows a thread for a transposed weight with N >= M, else up to 4 MiB of
// f32 per tile) into a scratch buffer just before each cblas_sgemm call,
// not cached: no persistent memory beyond the 2-byte storage, at the price of one
// conversion pass over the weight per call (negligible for prefill and
// training). A single row against an F32 or BF16 [N, K] weight (decode)
// skips both: a row-dot kernel (AVX-512 / AVX2 / baseline, chosen at load
// time) reads the weight once, widening BF16 on the fly; up to 16 rows
// against an F16, BF16 or quantized (Q8_0/Q4_0/Q4_K/Q6_K) weight take
// WeightRowDots (cpu_quant.cc), which dequantizes block by block in
// registers. Weights may also be read-only views of host memory
// (WrapHostBytes), e.g. of a memory-mapped GGUF file.
//
// Tensors live in 64-byte-aligned host memory. Every op is synchronous.
#pragma once

#include <memory>

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

// Always 1: the CPU is usable everywhere and scores below any GPU.
int CpuBackendScore(const BackendOptions& options);

// options.cpu_threads (0 = all cores) sets both the kernel threads and
// OpenBLAS's (OpenBLAS's count is process-wide: the last CPU backend created
// sets it); options.memory_limit_bytes caps the bytes held in tensors.
Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options);

}  // namespace pcfarm
