// f32 <-> F16 (IEEE binary16) and BF16 (bfloat16) conversions used by the
// backends for 16-bit storage.
//
// Float-to-half rounds to nearest even, overflows to infinity, keeps
// subnormals; a NaN stays a NaN (quiet). Half-to-float is exact.
// Thread-safety: pure functions.
#pragma once

#include <bit>
#include <cstdint>

namespace pcfarm {

inline float F16ToF32(uint16_t h) {
  // Giesen's half_to_float: shift into place, fix exponent, patch Inf/NaN
  // and subnormals.
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;
  } else if (exp == 0) {
    o += 1u << 23;
    o = std::bit_cast<uint32_t>(std::bit_cast<float>(o) -
                                std::bit_cast<float>(113u << 23));
  }
  o |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return std::bit_cast<float>(o);
}

inline uint16_t F32ToF16(float f) {
  // Giesen's float_to_half_fast3_rtne.
  const uint32_t f32_infty = 255u << 23;
  const uint32_t f16_max = (127u + 16u) << 23;
  const uint32_t denorm_magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t o;
  if (u >= f16_max) {
    o = u > f32_infty ? 0x7e00u : 0x7c00u;
  } else if (u < (113u << 23)) {
    const float ff = std::bit_cast<float>(u) + std::bit_cast<float>(denorm_magic_bits);
    o = std::bit_cast<uint32_t>(ff) - denorm_magic_bits;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xfffu;
    u += mant_odd;
    o = u >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

inline float BF16ToF32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t F32ToBF16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep it a quiet NaN
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace pcfarm
