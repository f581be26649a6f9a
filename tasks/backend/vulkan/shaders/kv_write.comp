#version 450
#extension GL_GOOGLE_include_directive : require
// cache[slot[n], pos[n], :] = src[n, :]; cache rows of `row` floats, T
// positions per slot; args = (slot, pos) pairs.
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) writeonly buffer C { float cache[]; };
layout(std430, binding = 1) readonly buffer S { float src[]; };
layout(std430, binding = 2) readonly buffer A { int args[]; };
layout(push_constant) uniform P { uint n; uint row; uint T; } p;

void main() {
  const uint total = p.n * p.row, stride = gl_NumWorkGroups.x * WG;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint i = e / p.row, j = e % p.row;
    const uint dst_row = uint(args[2u * i]) * p.T + uint(args[2u * i + 1u]);
    cache[dst_row * p.row + j] = src[e];
  }
}
