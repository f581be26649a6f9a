#version 450
#extension GL_GOOGLE_include_directive : require
// dinp += rs·w·dy − x·rs³/C · Σ dy·w·x per row; rstd[row] = rs for the
// dweight pass (rmsnorm_dw). One workgroup per row.
#define WG 256
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) buffer DX { float dx[]; };
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer W { uint w[]; };
layout(std430, binding = 4) writeonly buffer R { float rstd[]; };
layout(push_constant) uniform P { uint rows; uint c; uint w_type; float eps; } p;

void main() {
  const uint lid = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
    const uint base = row * p.c;
    float ss = 0.0, dot = 0.0;
    for (uint j = lid; j < p.c; j += WG) {
      const float xv = x[base + j];
      ss += xv * xv;
      dot += dy[base + j] * LOAD_ANY(w, p.w_type, j) * xv;
    }
    ss = wg_sum(ss);
    dot = wg_sum(dot);
    const float rs = 1.0 / sqrt(ss / float(p.c) + p.eps);
    const float k = dot * rs * rs * rs / float(p.c);
    for (uint j = lid; j < p.c; j += WG)
      dx[base + j] += rs * LOAD_ANY(w, p.w_type, j) * dy[base + j] - x[base + j] * k;
    if (lid == 0u) rstd[row] = rs;
  }
}
