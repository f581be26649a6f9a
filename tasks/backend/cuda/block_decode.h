// One value of a GGML block-quantized tensor, dequantized on its own: the
// CUDA kernels' reader of the block types (cuda_common.cuh, LoadAt), written
// so that the host compiler builds it too, and block_decode_test checks it
// against tasks/backend/ggml_quants.cc's DequantizeBlocks bit for bit on
// machines without a GPU.
//
// The products are DequantizeBlocks': Q8_0 (34-byte blocks of 32: f16 d,
// 32 int8) d·q; Q4_0 (18 bytes: f16 d, 16 bytes of nibbles, low ones
// first) d·(q − 8); Q4_K (144 bytes of 256: f16 d, f16 dmin, 12 bytes of
// 6-bit scales and mins, 128 of nibbles) (d·sc)·q − dmin·m; Q6_K (210
// bytes of 256: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8
// scales, f16 d) (d·sc)·q. On the device MulRn/SubRn are __fmul_rn and
// __fsub_rn, which nvcc never fuses into an FMA (the reference rounds
// Q4_K's d·q before subtracting m). The same decoding as the Vulkan
// shaders' DEFINE_LOAD_ANY (shaders/common.glsl). Blocks sit at even
// offsets and their f16 fields at even offsets within, so a device
// allocation's f16 loads are aligned.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define PCFARM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PCFARM_HOST_DEVICE inline
#endif

namespace pcfarm::cuda {

// How a tensor's elements are stored; the same order as StorageType. The
// block types (GGUF's blocks byte for byte, tasks/backend/ggml_quants.h) are
// read one value at a time (BlockValue), never written.
enum class Elem : int { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8_0 = 3, kQ4_0 = 4, kQ4_K = 5, kQ6_K = 6 };

template <Elem E>
inline constexpr bool kIsBlockElem =
    E == Elem::kQ8_0 || E == Elem::kQ4_0 || E == Elem::kQ4_K || E == Elem::kQ6_K;

// a·b and a − b rounded once each: on the device __fmul_rn / __fsub_rn,
// which nvcc never contracts into an FMA.
PCFARM_HOST_DEVICE float MulRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
PCFARM_HOST_DEVICE float SubRn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

PCFARM_HOST_DEVICE float BitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
PCFARM_HOST_DEVICE uint32_t FloatToBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

// IEEE binary16 bits to f32, exactly (tasks/backend/half.h's F16ToF32:
// Giesen's shift, exponent fix, Inf/NaN and subnormal patches).
PCFARM_HOST_DEVICE float HalfBitsToF32(uint16_t h) {
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    o += (128u - 16u) << 23;
  } else if (exp == 0) {
    o += 1u << 23;
    o = FloatToBits(SubRn(BitsToFloat(o), BitsToFloat(113u << 23)));
  }
  o |= (static_cast<uint32_t>(h) & 0x8000u) << 16;
  return BitsToFloat(o);
}

// The f16 at p (2-byte aligned on the device).
PCFARM_HOST_DEVICE float HalfAt(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return HalfBitsToF32(*reinterpret_cast<const uint16_t*>(p));
#else
  uint16_t h;
  std::memcpy(&h, p, 2);
  return HalfBitsToF32(h);
#endif
}

// Value i (row-major over whole blocks) of the block tensor at b.
template <Elem E>
PCFARM_HOST_DEVICE float BlockValue(const uint8_t* b, int64_t i) {
  if constexpr (E == Elem::kQ8_0) {
    const uint8_t* o = b + (i >> 5) * 34;
    return MulRn(HalfAt(o), static_cast<float>(static_cast<int8_t>(o[2 + (i & 31)])));
  } else if constexpr (E == Elem::kQ4_0) {
    const uint8_t* o = b + (i >> 5) * 18;
    const int j = static_cast<int>(i & 31);
    const int q = o[2 + (j & 15)];
    return MulRn(HalfAt(o), static_cast<float>((j < 16 ? q & 15 : q >> 4) - 8));
  } else if constexpr (E == Elem::kQ4_K) {
    const uint8_t* o = b + (i >> 8) * 144;
    const int e = static_cast<int>(i & 255);
    const int c = e >> 6, hi = (e >> 5) & 1, l = e & 31, s = 2 * c + hi;
    int sc, mn;
    if (s < 4) {
      sc = o[4 + s] & 63;
      mn = o[8 + s] & 63;
    } else {
      sc = (o[8 + s] & 15) | ((o[s] >> 6) << 4);
      mn = (o[8 + s] >> 4) | ((o[4 + s] >> 6) << 4);
    }
    const int q = o[16 + 32 * c + l];
    const float d = MulRn(HalfAt(o), static_cast<float>(sc));
    const float m = MulRn(HalfAt(o + 2), static_cast<float>(mn));
    return SubRn(MulRn(d, static_cast<float>(hi != 0 ? q >> 4 : q & 15)), m);
  } else {
    static_assert(E == Elem::kQ6_K);
    const uint8_t* o = b + (i >> 8) * 210;
    const int e = static_cast<int>(i & 255);
    const int h = e >> 7, t = (e >> 5) & 3, l = e & 31;
    const int lo = o[64 * h + l + 32 * (t & 1)];
    const int nib = (t & 2) != 0 ? lo >> 4 : lo & 15;
    const int qh = (o[128 + 32 * h + l] >> (2 * t)) & 3;
    const int q = (nib | (qh << 4)) - 32;
    const float ds =
        MulRn(HalfAt(o + 208), static_cast<float>(static_cast<int8_t>(o[192 + 8 * h + l / 16 + 2 * t])));
    return MulRn(ds, static_cast<float>(q));
  }
}

}  // namespace pcfarm::cuda
