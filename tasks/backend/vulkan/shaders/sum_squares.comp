#version 450
#extension GL_GOOGLE_include_directive : require
// partial[b] = Σ t[i]² over block b of `block` elements, in f32; the host
// adds the partials in double (fixed blocks: reproducible).
#define WG 256
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) writeonly buffer O { float partial[]; };
layout(std430, binding = 1) readonly buffer T { float t[]; };
layout(push_constant) uniform P { uint n; uint block; uint blocks; } p;

void main() {
  for (uint b = gl_WorkGroupID.x; b < p.blocks; b += gl_NumWorkGroups.x) {
    const uint begin = b * p.block, end = min(p.n, begin + p.block);
    float acc = 0.0;
    for (uint i = begin + gl_LocalInvocationID.x; i < end; i += WG) acc += t[i] * t[i];
    const float s = wg_sum(acc);
    if (gl_LocalInvocationID.x == 0u) partial[b] = s;
  }
}
