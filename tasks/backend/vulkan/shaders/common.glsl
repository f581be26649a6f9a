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
