#version 450
#extension GL_GOOGLE_include_directive : require
// One AdamW step, as the CPU backend: bias corrections bc1 = 1/(1 − β1^t),
// bc2 = 1/(1 − β2^t) computed on the host.
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) buffer PB { float param[]; };
layout(std430, binding = 1) readonly buffer GB { float grad[]; };
layout(std430, binding = 2) buffer MB { float m[]; };
layout(std430, binding = 3) buffer VB { float v[]; };
layout(push_constant) uniform P {
  uint n; float lr; float b1; float b2; float eps; float wd; float gs; float bc1; float bc2;
} p;

void main() {
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    const float g = p.gs * grad[i];
    const float mi = p.b1 * m[i] + (1.0 - p.b1) * g;
    const float vi = p.b2 * v[i] + (1.0 - p.b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= p.lr * ((mi * p.bc1) / (sqrt(vi * p.bc2) + p.eps) + p.wd * param[i]);
  }
}
