#version 450
#extension GL_GOOGLE_include_directive : require
// dst = src converting between storage types (src may hold GGML blocks:
// dequantized); one invocation per 32-bit
// word of dst (two elements for 16-bit dst; the pad half of an odd count
// is written as 0).
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) writeonly buffer D { uint dst[]; };
layout(std430, binding = 1) readonly buffer S { uint src[]; };
layout(push_constant) uniform P { uint n; uint dst_type; uint src_type; } p;
DEFINE_LOAD_ANY(load_src, byte_src, src)

uint encode(float f) { return p.dst_type == kF16 ? f32_to_f16(f) : f32_to_bf16(f); }

void main() {
  const uint words = p.dst_type == kF32 ? p.n : (p.n + 1u) / 2u;
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint w = gl_GlobalInvocationID.x; w < words; w += stride) {
    if (p.dst_type == kF32) {
      dst[w] = floatBitsToUint(load_src(p.src_type, w));
    } else {
      const uint i = 2u * w;
      const uint lo = encode(load_src(p.src_type, i));
      const uint hi = i + 1u < p.n ? encode(load_src(p.src_type, i + 1u)) : 0u;
      dst[w] = lo | (hi << 16);
    }
  }
}
