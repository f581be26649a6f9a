#version 450
#extension GL_GOOGLE_include_directive : require
// dweight[j] += Σ_rows dy[r, j]·x[r, j]·rstd[r], rows in order.
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) buffer DW { float dw[]; };
layout(std430, binding = 1) readonly buffer DY { float dy[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer R { float rstd[]; };
layout(push_constant) uniform P { uint rows; uint c; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint j = gl_GlobalInvocationID.x; j < p.c; j += stride) {
    float acc = dw[j];
    for (uint r = 0u; r < p.rows; ++r) acc += dy[r * p.c + j] * x[r * p.c + j] * rstd[r];
    dw[j] = acc;
  }
}
