#version 450
#extension GL_GOOGLE_include_directive : require
// Embedding forward: out[i, j] = table[ids[i], j], table of any storage
// (GGML blocks too).
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) writeonly buffer O { float out_[]; };
layout(std430, binding = 1) readonly buffer T { uint table[]; };
layout(std430, binding = 2) readonly buffer I { int ids[]; };
layout(push_constant) uniform P { uint n; uint c; uint type; } p;
DEFINE_LOAD_ANY(load_table, byte_table, table)

void main() {
  const uint total = p.n * p.c, stride = gl_NumWorkGroups.x * WG;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint i = e / p.c, j = e % p.c;
    out_[e] = load_table(p.type, uint(ids[i]) * p.c + j);
  }
}
