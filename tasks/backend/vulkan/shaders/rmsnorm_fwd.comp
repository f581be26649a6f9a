#version 450
#extension GL_GOOGLE_include_directive : require
// out = inp · rstd · weight per row of c; rstd = 1/sqrt(mean(inp²) + eps).
// One workgroup per row. out may alias inp.
#define WG 256
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) writeonly buffer O { float out_[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer W { uint w[]; };
layout(push_constant) uniform P { uint rows; uint c; uint w_type; float eps; } p;

void main() {
  const uint lid = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
    const uint base = row * p.c;
    float ss = 0.0;
    for (uint j = lid; j < p.c; j += WG) ss += x[base + j] * x[base + j];
    ss = wg_sum(ss);
    const float rs = 1.0 / sqrt(ss / float(p.c) + p.eps);
    for (uint j = lid; j < p.c; j += WG) out_[base + j] = x[base + j] * rs * LOAD_ANY(w, p.w_type, j);
  }
}
