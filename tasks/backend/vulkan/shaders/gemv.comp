#version 450
#extension GL_GOOGLE_include_directive : require
// c[M, N] = alpha·a·bᵀ + beta·c for few rows (M <= 8: decode), a [M, K]
// f32 or 16-bit, b [N, K] of any storage (GGML blocks too) (a linear layer's weight). One
// workgroup per output column n reads b's row n once, contiguously, for all
// M rows; the tiled gemm would leave most of a 64-row tile idle and launch
// too few workgroups to fill a GPU.
#define WG 64
#define WANT_REDUCE
#include "common.glsl"

#define MAX_M 8

layout(std430, binding = 0) buffer C { float c[]; };
layout(std430, binding = 1) readonly buffer A { uint a[]; };
layout(std430, binding = 2) readonly buffer B { uint b[]; };
layout(push_constant) uniform P {
  uint M; uint N; uint K; uint a_type; uint b_type; float alpha; float beta;
} p;
DEFINE_LOAD_ANY(load_a, byte_a, a)
DEFINE_LOAD_ANY(load_b, byte_b, b)

void main() {
  const uint lid = gl_LocalInvocationID.x;
  for (uint n = gl_WorkGroupID.x; n < p.N; n += gl_NumWorkGroups.x) {
    float acc[MAX_M];
    [[unroll]] for (uint m = 0u; m < MAX_M; ++m) acc[m] = 0.0;
    for (uint k = lid; k < p.K; k += WG) {
      const float bv = load_b(p.b_type, n * p.K + k);
      [[unroll]] for (uint m = 0u; m < MAX_M; ++m)
        if (m < p.M) acc[m] += load_a(p.a_type, m * p.K + k) * bv;
    }
    for (uint m = 0u; m < p.M; ++m) {
      const float s = wg_sum(acc[m]);
      if (lid == 0u) {
        const uint e = m * p.N + n;
        float v = p.alpha * s;
        if (p.beta != 0.0) v += p.beta * c[e];
        c[e] = v;
      }
    }
  }
}
