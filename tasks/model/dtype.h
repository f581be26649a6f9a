// Element types of host weight tensors, and the half-precision conversions.
//
// DType covers what the engine loads directly: F32, F16 (IEEE binary16) and
// BF16 (bfloat16, the top 16 bits of an f32), and GGUF's block-quantized
// Q8_0, Q4_0, Q4_K and Q6_K (tasks/backend/ggml_quants.h; whole blocks along
// the last dimension, held as the file stores them). The conversions are exact for
// every finite value, round to nearest even on the way down, and keep
// infinities and NaNs (a NaN stays a NaN).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "tasks/backend/ggml_quants.h"

namespace pcfarm {

// Same order as the backend's StorageType (static_cast converts).
enum class DType { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_K, kQ6_K };

inline bool IsQuantized(DType t) {
  return t != DType::kF32 && t != DType::kF16 && t != DType::kBF16;
}

// The ggml type number of a quantized DType (0 otherwise).
inline uint32_t DTypeGgmlQuant(DType t) {
  switch (t) {
    case DType::kQ8_0: return kGgmlTypeQ8_0;
    case DType::kQ4_0: return kGgmlTypeQ4_0;
    case DType::kQ4_K: return kGgmlTypeQ4_K;
    case DType::kQ6_K: return kGgmlTypeQ6_K;
    default: return 0;
  }
}

// Values per block: 1, 32 or 256.
inline int64_t DTypeBlockValues(DType t) {
  return IsQuantized(t) ? GgmlBlockValues(DTypeGgmlQuant(t)) : 1;
}

// Bytes per element. REQUIRES: !IsQuantized(t).
inline size_t DTypeSize(DType t) { return t == DType::kF32 ? 4 : 2; }

// Bytes of `n` elements. REQUIRES: n a whole number of blocks.
inline size_t DTypeBytes(DType t, size_t n) {
  if (!IsQuantized(t)) return n * DTypeSize(t);
  const uint32_t g = DTypeGgmlQuant(t);
  return n / size_t(GgmlBlockValues(g)) * GgmlBlockBytes(g);
}

// "F32", "F16" or "BF16" (safetensors spelling); "Q8_0", "Q4_0", "Q4_K",
// "Q6_K" (GGUF's).
inline const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kQ8_0: return "Q8_0";
    case DType::kQ4_0: return "Q4_0";
    case DType::kQ4_K: return "Q4_K";
    case DType::kQ6_K: return "Q6_K";
  }
  return "?";
}

// Inverse of DTypeName for the safetensors types; nullopt for any other name.
inline std::optional<DType> DTypeFromName(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return std::nullopt;
}

inline uint32_t F32Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float F32FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float BF16ToF32(uint16_t h) { return F32FromBits(uint32_t(h) << 16); }

inline uint16_t F32ToBF16(float f) {
  uint32_t u = F32Bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return uint16_t(u >> 16);
}

inline float F16ToF32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return F32FromBits(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return F32FromBits(sign);
    // Subnormal: man * 2^-24.
    float v = float(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return F32FromBits(sign | ((exp + 112) << 23) | (man << 13));
}

inline uint16_t F32ToF16(float f) {
  uint32_t u = F32Bits(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;             // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;            // overflow -> inf
  if (abs < 0x38800000u) {                                  // subnormal or 0
    if (abs < 0x33000000u) return sign;                     // < 2^-25 -> 0
    uint32_t exp = abs >> 23;
    uint32_t man = (abs & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - exp;                             // 14..24
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return sign | uint16_t(half);
  }
  uint32_t r = abs - 0x38000000u;                           // rebias 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);                           // round to nearest even
  return sign | uint16_t(r >> 13);
}

// Converts `n` elements of type `t` at `src` (little-endian) to f32 (a
// quantized type: n whole blocks, dequantized).
inline void ConvertToF32(DType t, const void* src, size_t n, float* dst) {
  const auto* b = static_cast<const uint8_t*>(src);
  if (IsQuantized(t)) {
    const uint32_t g = DTypeGgmlQuant(t);
    DequantizeBlocks(g, b, int64_t(n) / GgmlBlockValues(g), dst);
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::kF32) {
      std::memcpy(&dst[i], b + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, b + 2 * i, 2);
      dst[i] = t == DType::kF16 ? F16ToF32(h) : BF16ToF32(h);
    }
  }
}

}  // namespace pcfarm
