#version 450
#extension GL_GOOGLE_include_directive : require
// Per row of logits [n, v], lse = max + log Σ exp(x − max). mode 0: out[i]
// = lse − x[t] (0 where weight 0); 1: dlogits[i] += gs·w·(softmax − onehot)
// (rows of weight 0 untouched); 2: out[i] = x[t] − lse. One workgroup per row.
#define WG 256
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) buffer O { float out_[]; };
layout(std430, binding = 1) buffer DL { float dl[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer T { int targets[]; };
layout(std430, binding = 4) readonly buffer WB { float weights[]; };
layout(push_constant) uniform P { uint n; uint v; uint mode; float grad_scale; } p;

void main() {
  const uint lid = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.n; row += gl_NumWorkGroups.x) {
    const float w = p.mode == 2u ? 1.0 : weights[row];
    if (w == 0.0) {
      if (p.mode == 0u && lid == 0u) out_[row] = 0.0;
      continue;  // uniform across the workgroup
    }
    const uint base = row * p.v;
    float mx = uintBitsToFloat(0xff800000u);
    for (uint j = lid; j < p.v; j += WG) mx = max(mx, x[base + j]);
    mx = wg_max(mx);
    float s = 0.0;
    for (uint j = lid; j < p.v; j += WG) s += exp(x[base + j] - mx);
    s = wg_sum(s);
    const float lse = mx + log(s);
    const uint t = uint(targets[row]);
    if (p.mode == 1u) {
      const float k = p.grad_scale * w;
      for (uint j = lid; j < p.v; j += WG) {
        float d = dl[base + j] + k * exp(x[base + j] - lse);
        if (j == t) d -= k;
        dl[base + j] = d;
      }
    } else if (lid == 0u) {
      out_[row] = p.mode == 0u ? lse - x[base + t] : x[base + t] - lse;
    }
  }
}
