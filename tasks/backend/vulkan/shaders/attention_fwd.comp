#version 450
#extension GL_GOOGLE_include_directive : require
// Causal GQA attention with a fused online softmax, for prefill (keys of
// the row's own sequence) and decode (keys of a KV-cache slot) alike: query
// row i attends to key rows ranges[2i] .. ranges[2i] + ranges[2i+1] − 1 of
// k/v (rows of hkv·d floats). One workgroup per (row, head); keys in chunks
// of WG, one key per invocation; `out` is the running accumulator.
#define WG 64
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) buffer O { float out_[]; };
layout(std430, binding = 1) writeonly buffer L { float lse[]; };
layout(std430, binding = 2) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer K { float k[]; };
layout(std430, binding = 4) readonly buffer V { float v[]; };
layout(std430, binding = 5) readonly buffer R { int ranges[]; };
layout(push_constant) uniform P { uint n; uint hq; uint hkv; uint d; uint has_lse; float scale; } p;

shared float p_sh[WG];

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint group = p.hq / p.hkv, kv_row = p.hkv * p.d;
  for (uint task = gl_WorkGroupID.x; task < p.n * p.hq; task += gl_NumWorkGroups.x) {
    const uint i = task / p.hq, h = task % p.hq, g = h / group;
    const uint qo = task * p.d;
    const uint base = uint(ranges[2u * i]), count = uint(ranges[2u * i + 1u]);
    for (uint c = lid; c < p.d; c += WG) out_[qo + c] = 0.0;
    float m = 0.0, l = 0.0;
    for (uint c0 = 0u; c0 < count; c0 += WG) {
      const uint j = c0 + lid;
      float s = uintBitsToFloat(0xff800000u);
      if (j < count) {
        const uint ko = (base + j) * kv_row + g * p.d;
        float dot = 0.0;
        for (uint c = 0u; c < p.d; ++c) dot += q[qo + c] * k[ko + c];
        s = dot * p.scale;
      }
      const float cm = wg_max(s);
      const float new_m = c0 == 0u ? cm : max(m, cm);
      const float pj = j < count ? exp(s - new_m) : 0.0;
      p_sh[lid] = pj;
      const float csum = wg_sum(pj);  // its barrier publishes p_sh
      const float corr = c0 == 0u ? 0.0 : exp(m - new_m);
      l = l * corr + csum;
      const uint cn = min(uint(WG), count - c0);
      for (uint c = lid; c < p.d; c += WG) {
        float acc = out_[qo + c] * corr;
        const uint vo = (base + c0) * kv_row + g * p.d + c;
        for (uint jj = 0u; jj < cn; ++jj) acc += p_sh[jj] * v[vo + jj * kv_row];
        out_[qo + c] = acc;
      }
      barrier();
      m = new_m;
    }
    const float inv = 1.0 / l;
    for (uint c = lid; c < p.d; c += WG) out_[qo + c] *= inv;
    if (p.has_lse != 0u && lid == 0u) lse[task] = m + log(l);
  }
}
