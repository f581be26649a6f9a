// Weight-row kernels for 16-bit and block-quantized weights (cpu_internal.h:
// WeightRowDots): a few activation rows against rows of a [N, K] weight held
// as it is stored, dequantizing each block in registers on the fly and
// accumulating in f32 (docs/architecture.md says why not 8-bit activations).
//
// One source, three instruction sets: the bodies use GCC vector extensions
// of 16 floats and are compiled into AVX-512 (one zmm), AVX2 (two ymm) and
// baseline x86-64 (four xmm) functions; F16 widens with F16C where there is
// one. The set is chosen once at run time from cpuid
// (__builtin_cpu_supports). Decode is bound by the weight bytes read; the
// in-register dequantization keeps those bytes at their stored size.
#include <immintrin.h>

#include <algorithm>
#include <cassert>
#include <cstring>

#include "tasks/backend/cpu/cpu_internal.h"
#include "tasks/backend/half.h"

namespace pcfarm::cpu {
namespace {

typedef float V16f __attribute__((vector_size(64)));
typedef int32_t V16i __attribute__((vector_size(64)));
typedef uint32_t V16u __attribute__((vector_size(64)));
typedef int8_t V16s8 __attribute__((vector_size(16)));
typedef uint8_t V16u8 __attribute__((vector_size(16)));
typedef uint16_t V16u16 __attribute__((vector_size(32)));

}  // namespace

namespace baseline {
#define PCFARM_QUANT_ISA 0
#include "tasks/backend/cpu/cpu_quant_kernels.inc"
#undef PCFARM_QUANT_ISA
}  // namespace baseline

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
#define PCFARM_QUANT_ISA 1
#include "tasks/backend/cpu/cpu_quant_kernels.inc"
#undef PCFARM_QUANT_ISA
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
namespace avx512 {
#define PCFARM_QUANT_ISA 2
#include "tasks/backend/cpu/cpu_quant_kernels.inc"
#undef PCFARM_QUANT_ISA
}  // namespace avx512
#pragma GCC pop_options

namespace {

CpuIsa Detect() {
  __builtin_cpu_init();
  // VNNI (vpdpwssd) too: the Q8_0/Q4_0 pair kernel uses it. A CPU with
  // AVX-512 but without it (Skylake-SP) takes the AVX2 kernels.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
      __builtin_cpu_supports("f16c"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return CpuIsa::kAvx2;
  return CpuIsa::kBaseline;
}

std::atomic<CpuIsa> g_isa{Detect()};

}  // namespace

CpuIsa BestCpuIsa() {
  static const CpuIsa best = Detect();
  return best;
}

CpuIsa WeightRowIsa() { return g_isa.load(std::memory_order_relaxed); }

void SetWeightRowIsaForTesting(CpuIsa isa) {
  g_isa.store(std::min(isa, BestCpuIsa()), std::memory_order_relaxed);
}

const char* CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBaseline: return "x86-64";
    case CpuIsa::kAvx2: return "AVX2";
    case CpuIsa::kAvx512: return "AVX-512";
  }
  return "?";
}

bool QuantizeActRows(const float* x, int64_t ldx, int64_t m, int64_t k, ActRows* out) {
  // The arrays only grow: the kernels index them from k and m, and a decode
  // step's products alternate between k = hidden and k = intermediate, so
  // resizing to fit filled the grown part with zeros every other product.
  const size_t n = size_t(m * (k / 32));
  auto grow = [](auto& v, size_t size) {
    if (v.size() < size) v.resize(size);
  };
  grow(out->blocks, n);
  grow(out->d, n);
  grow(out->dsum, n);
  if (WeightRowIsa() == CpuIsa::kAvx512) grow(out->pairs, size_t(m * (k / 64)));
  switch (WeightRowIsa()) {
    case CpuIsa::kAvx512: return avx512::QuantizeRows(x, ldx, m, k, out);
    case CpuIsa::kAvx2: return avx2::QuantizeRows(x, ldx, m, k, out);
    case CpuIsa::kBaseline: break;  // no integer kernel: the f32 rows
  }
  return false;
}

bool ToF32Fast(StorageType type, const void* src, float* dst, int64_t count) {
  const auto* p = static_cast<const uint8_t*>(src);
  switch (WeightRowIsa()) {
    case CpuIsa::kAvx512: return avx512::ToF32Rows(type, p, dst, count);
    case CpuIsa::kAvx2: return avx2::ToF32Rows(type, p, dst, count);
    case CpuIsa::kBaseline: break;  // ToF32's loops
  }
  return false;
}

void WeightRowDots(const WeightRowsArgs& args, int64_t r0, int64_t r1) {
  switch (WeightRowIsa()) {
    case CpuIsa::kAvx512: avx512::Dispatch(args, r0, r1); break;
    case CpuIsa::kAvx2: avx2::Dispatch(args, r0, r1); break;
    case CpuIsa::kBaseline: baseline::Dispatch(args, r0, r1); break;
  }
}

}  // namespace pcfarm::cpu
