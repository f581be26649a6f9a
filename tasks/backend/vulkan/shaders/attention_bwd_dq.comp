#version 450
#extension GL_GOOGLE_include_directive : require
// Attention backward, part 1, per (query row, head): delta = dout·out (saved
// for part 2) and dq += Σ_j ds_j·k_j with p_j = exp(q·k_j·scale − lse),
// ds_j = p_j·(dout·v_j − delta)·scale. Key ranges as attention_fwd.
#define WG 64
#define WANT_REDUCE
#include "common.glsl"

layout(std430, binding = 0) buffer DQ { float dq[]; };
layout(std430, binding = 1) writeonly buffer DE { float delta_out[]; };
layout(std430, binding = 2) readonly buffer DO { float dout[]; };
layout(std430, binding = 3) readonly buffer Q { float q[]; };
layout(std430, binding = 4) readonly buffer K { float k[]; };
layout(std430, binding = 5) readonly buffer V { float v[]; };
layout(std430, binding = 6) readonly buffer O { float out_[]; };
layout(std430, binding = 7) readonly buffer L { float lse[]; };
layout(std430, binding = 8) readonly buffer R { int ranges[]; };
layout(push_constant) uniform P { uint n; uint hq; uint hkv; uint d; float scale; } p;

shared float ds_sh[WG];

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint group = p.hq / p.hkv, kv_row = p.hkv * p.d;
  for (uint task = gl_WorkGroupID.x; task < p.n * p.hq; task += gl_NumWorkGroups.x) {
    const uint i = task / p.hq, h = task % p.hq, g = h / group;
    const uint qo = task * p.d;
    const uint base = uint(ranges[2u * i]), count = uint(ranges[2u * i + 1u]);
    float part = 0.0;
    for (uint c = lid; c < p.d; c += WG) part += dout[qo + c] * out_[qo + c];
    const float delta = wg_sum(part);
    if (lid == 0u) delta_out[task] = delta;
    const float row_lse = lse[task];
    for (uint c0 = 0u; c0 < count; c0 += WG) {
      const uint j = c0 + lid;
      float ds = 0.0;
      if (j < count) {
        const uint ko = (base + j) * kv_row + g * p.d;
        float dot = 0.0, dpv = 0.0;
        for (uint c = 0u; c < p.d; ++c) {
          dot += q[qo + c] * k[ko + c];
          dpv += dout[qo + c] * v[ko + c];
        }
        const float pj = exp(dot * p.scale - row_lse);
        ds = pj * (dpv - delta) * p.scale;
      }
      ds_sh[lid] = ds;
      barrier();
      const uint cn = min(uint(WG), count - c0);
      for (uint c = lid; c < p.d; c += WG) {
        float acc = dq[qo + c];
        const uint ko = (base + c0) * kv_row + g * p.d + c;
        for (uint jj = 0u; jj < cn; ++jj) acc += ds_sh[jj] * k[ko + jj * kv_row];
        dq[qo + c] = acc;
      }
      barrier();
    }
  }
}
