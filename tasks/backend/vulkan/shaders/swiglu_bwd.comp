#version 450
#extension GL_GOOGLE_include_directive : require
// dgate += dout·up·s·(1 + g·(1 − s)), dup += dout·g·s, s = sigmoid(g).
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) buffer DG { float dgate[]; };
layout(std430, binding = 1) buffer DU { float dup[]; };
layout(std430, binding = 2) readonly buffer DO { float dout[]; };
layout(std430, binding = 3) readonly buffer G { float gate[]; };
layout(std430, binding = 4) readonly buffer U { float up[]; };
layout(push_constant) uniform P { uint n; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    const float g = gate[i], u = up[i], d = dout[i];
    const float s = 1.0 / (1.0 + exp(-g));
    dgate[i] += d * u * s * (1.0 + g * (1.0 - s));
    dup[i] += d * g * s;
  }
}
