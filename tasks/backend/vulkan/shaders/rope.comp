#version 450
#extension GL_GOOGLE_include_directive : require
// Rotate-half RoPE over [n, h, d]: forward out = R(angle)·x (out may alias
// inp); backward out += R(−angle)·x. angle = f32(pos) · inv_freq[j], as the
// CPU backend; sin/cos by Cody-Waite reduction and minimax polynomials, so
// the accuracy does not depend on the device's sin/cos (which Vulkan allows
// to be off by 2^-11).
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) buffer O { float out_[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer F { float inv_freq[]; };
layout(std430, binding = 3) readonly buffer A { int pos[]; };
layout(push_constant) uniform P { uint n; uint h; uint d; uint backward; } p;

// (sin a, cos a), a few ulp for |a| < 2^17.
vec2 accurate_sincos(float a) {
  precise float k = round(a * 0.636619772367581343);
  precise float r = fma(k, -1.5703125, a);
  r = fma(k, -4.837512969970703125e-4, r);
  r = fma(k, -7.54978995489188216e-8, r);
  const float z = r * r;
  precise float s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
  precise float c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
                    - 0.5 * z + 1.0;
  const int q = int(k) & 3;
  if (q == 0) return vec2(s, c);
  if (q == 1) return vec2(c, -s);
  if (q == 2) return vec2(-s, -c);
  return vec2(-c, s);
}

void main() {
  const uint half_d = p.d / 2u;
  const uint total = p.n * p.h * half_d, stride = gl_NumWorkGroups.x * WG;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint j = e % half_d, row = e / half_d;  // row = t·h + head
    const uint t = row / p.h;
    const vec2 sc = accurate_sincos(float(pos[t]) * inv_freq[j]);
    const uint i1 = row * p.d + j, i2 = i1 + half_d;
    const float x1 = x[i1], x2 = x[i2];
    if (p.backward == 0u) {
      out_[i1] = x1 * sc.y - x2 * sc.x;
      out_[i2] = x2 * sc.y + x1 * sc.x;
    } else {
      out_[i1] += x1 * sc.y + x2 * sc.x;
      out_[i2] += x2 * sc.y - x1 * sc.x;
    }
  }
}
