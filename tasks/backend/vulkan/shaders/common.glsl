// Shared by every shader: the version, storage-type conversions and
// workgroup reductions. A shader defines WG (its workgroup size) before
// including this file; USE_SUBGROUP (0 or 1) comes from the build.
#extension GL_EXT_control_flow_attributes : enable
#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(local_size_x = WG, local_size_y = 1, local_size_z = 1) in;

// Storage types, as tasks/backend/backend.h's StorageType.
const uint kF32 = 0u;
const uint kF16 = 1u;
const uint kBF16 = 2u;
const uint kQ8_0 = 3u;
const uint kQ4_0 = 4u;
const uint kQ4_K = 5u;
const uint kQ6_K = 6u;

// Exact IEEE binary16 -> f32 (subnormals included, no reliance on f32
// denormal support).
float f16_to_f32(uint h) {
  const uint sign = (h & 0x8000u) << 16;
  const uint e = (h >> 10) & 0x1fu;
  const uint m = h & 0x3ffu;
  if (e == 0u) {
    const float v = float(m) * 5.9604644775390625e-8;  // m · 2^-24, exact
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7f800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// f32 -> binary16, round to nearest even (Giesen's float_to_half_fast3_rtne,
// as tasks/backend/half.h).
uint f32_to_f16(float f) {
  uint u = floatBitsToUint(f);
  const uint sign = u & 0x80000000u;
  u ^= sign;
  uint o;
  if (u >= 0x47800000u) {  // (127 + 16) << 23: overflow, Inf or NaN
    o = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // 113 << 23: subnormal half
    precise float ff = uintBitsToFloat(u) + uintBitsToFloat(0x3f000000u);
    o = floatBitsToUint(ff) - 0x3f000000u;
  } else {
    const uint mant_odd = (u >> 13) & 1u;
    u += 0xc8000fffu;  // ((15 - 127) << 23) + 0xfff, mod 2^32
    u += mant_odd;
    o = u >> 13;
  }
  return (o | (sign >> 16)) & 0xffffu;
}

float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

uint f32_to_bf16(float f) {
  const uint u = floatBitsToUint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  return ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16) & 0xffffu;
}

// Element i of a tensor of storage `type` held in a uint[] buffer.
float unpack_elem(uint word, uint type, uint i) {
  const uint h = (i & 1u) != 0u ? (word >> 16) : (word & 0xffffu);
  return type == kF16 ? f16_to_f32(h) : bf16_to_f32(h);
}
#define LOAD_ANY(buf, type, i) \
  ((type) == kF32 ? uintBitsToFloat(buf[i]) : unpack_elem(buf[(i) >> 1], (type), (i)))

// Byte `off` of a buffer, given the 32-bit word that holds it; the f16 at
// an even byte offset likewise.
uint word_byte(uint word, uint off) { return (word >> ((off & 3u) << 3)) & 0xffu; }
float word_half(uint word, uint off) { return f16_to_f32((word >> ((off & 2u) << 3)) & 0xffffu); }
int signed_byte(uint b) { return int(b << 24) >> 24; }

// DEFINE_LOAD_ANY(fn, fn_byte, buf) defines `float fn(uint type, uint i)`:
// element i (row-major) of a tensor of storage `type` in the uint[] buffer
// `buf`, the GGML block types too, dequantized one value at a time as
// tasks/backend/ggml_quants.cc's DequantizeBlocks does (same products, so
// the same f32 values): Q8_0 (34-byte blocks of 32: f16 d, 32 int8),
// Q4_0 (18 bytes: f16 d, 16 bytes of nibbles, low ones first), Q4_K (144
// bytes of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 of
// nibbles), Q6_K (210 bytes of 256: 128 bytes of low nibbles, 64 of high
// bit pairs, 16 int8 scales, f16 d). GLSL cannot pass a buffer to a
// function, hence a macro per buffer. Blocks are not 4-byte aligned
// (34, 18, 210 bytes); f16 fields always sit at even offsets.
#define DEFINE_LOAD_ANY(fn, fn_byte, buf) \
  uint fn_byte(uint off) { return word_byte(buf[off >> 2], off); } \
  float fn(uint type, uint i) { \
    if (type == kF32) return uintBitsToFloat(buf[i]); \
    if (type == kF16 || type == kBF16) return unpack_elem(buf[i >> 1], type, i); \
    if (type == kQ8_0) { \
      const uint o = (i >> 5) * 34u; \
      return word_half(buf[o >> 2], o) * float(signed_byte(fn_byte(o + 2u + (i & 31u)))); \
    } \
    if (type == kQ4_0) { \
      const uint o = (i >> 5) * 18u, j = i & 31u; \
      const uint q = fn_byte(o + 2u + (j & 15u)); \
      return word_half(buf[o >> 2], o) * float(int(j < 16u ? q & 15u : q >> 4) - 8); \
    } \
    if (type == kQ4_K) { \
      const uint o = (i >> 8) * 144u, e = i & 255u; \
      const uint c = e >> 6, hi = (e >> 5) & 1u, l = e & 31u, s = 2u * c + hi; \
      uint sc, mn; \
      if (s < 4u) { \
        sc = fn_byte(o + 4u + s) & 63u; \
        mn = fn_byte(o + 8u + s) & 63u; \
      } else { \
        sc = (fn_byte(o + 8u + s) & 15u) | ((fn_byte(o + s) >> 6) << 4); \
        mn = (fn_byte(o + 8u + s) >> 4) | ((fn_byte(o + 4u + s) >> 6) << 4); \
      } \
      const uint q = fn_byte(o + 16u + 32u * c + l); \
      const float d = word_half(buf[o >> 2], o) * float(sc); \
      const float m = word_half(buf[(o + 2u) >> 2], o + 2u) * float(mn); \
      return d * float(hi != 0u ? q >> 4 : q & 15u) - m; \
    } \
    { \
      const uint o = (i >> 8) * 210u, e = i & 255u; \
      const uint h = e >> 7, t = (e >> 5) & 3u, l = e & 31u; \
      const uint lo = fn_byte(o + 64u * h + l + 32u * (t & 1u)); \
      const uint nib = (t & 2u) != 0u ? lo >> 4 : lo & 15u; \
      const uint qh = (fn_byte(o + 128u + 32u * h + l) >> (2u * t)) & 3u; \
      const int q = int(nib | (qh << 4)) - 32; \
      const float ds = word_half(buf[(o + 208u) >> 2], o + 208u) * \
                       float(signed_byte(fn_byte(o + 192u + 8u * h + l / 16u + 2u * t))); \
      return ds * float(q); \
    } \
  }

#ifdef WANT_REDUCE
shared float red_sh[WG];

// The sum / max of x over the workgroup, returned to every invocation.
// REQUIRES: called by all invocations (uniform control flow). The order of
// additions is fixed for a device, so results are reproducible.
float wg_sum(float x) {
#if USE_SUBGROUP
  const float s = subgroupAdd(x);
  if (subgroupElect()) red_sh[gl_SubgroupID] = s;
  barrier();
  float t = 0.0;
  for (uint i = 0u; i < gl_NumSubgroups; ++i) t += red_sh[i];
  barrier();
  return t;
#else
  const uint lid = gl_LocalInvocationID.x;
  red_sh[lid] = x;
  barrier();
  [[unroll]] for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (lid < s) red_sh[lid] += red_sh[lid + s];
    barrier();
  }
  const float t = red_sh[0];
  barrier();
  return t;
#endif
}

float wg_max(float x) {
#if USE_SUBGROUP
  const float s = subgroupMax(x);
  if (subgroupElect()) red_sh[gl_SubgroupID] = s;
  barrier();
  float t = red_sh[0];
  for (uint i = 1u; i < gl_NumSubgroups; ++i) t = max(t, red_sh[i]);
  barrier();
  return t;
#else
  const uint lid = gl_LocalInvocationID.x;
  red_sh[lid] = x;
  barrier();
  [[unroll]] for (uint s = WG / 2u; s > 0u; s >>= 1) {
    if (lid < s) red_sh[lid] = max(red_sh[lid], red_sh[lid + s]);
    barrier();
  }
  const float t = red_sh[0];
  barrier();
  return t;
#endif
}
#endif
