#version 450
#extension GL_GOOGLE_include_directive : require
// Attention backward, part 2, per (key row j, kv head g): over the query
// rows i = ranges[2j] .. + ranges[2j+1] − 1 and the query heads h of group
// g, dk_j += Σ ds·q_i,h and dv_j += Σ p·dout_i,h (p, ds as part 1, with the
// delta part 1 saved). Deterministic: each output row has one workgroup.
#define WG 64
#include "common.glsl"

layout(std430, binding = 0) buffer DK { float dk[]; };
layout(std430, binding = 1) buffer DV { float dv[]; };
layout(std430, binding = 2) readonly buffer DE { float delta[]; };
layout(std430, binding = 3) readonly buffer DO { float dout[]; };
layout(std430, binding = 4) readonly buffer Q { float q[]; };
layout(std430, binding = 5) readonly buffer K { float k[]; };
layout(std430, binding = 6) readonly buffer V { float v[]; };
layout(std430, binding = 7) readonly buffer L { float lse[]; };
layout(std430, binding = 8) readonly buffer R { int ranges[]; };
layout(push_constant) uniform P { uint n; uint hq; uint hkv; uint d; float scale; } p;

shared float p_sh[WG];
shared float ds_sh[WG];

void main() {
  const uint lid = gl_LocalInvocationID.x;
  const uint group = p.hq / p.hkv;
  for (uint task = gl_WorkGroupID.x; task < p.n * p.hkv; task += gl_NumWorkGroups.x) {
    const uint j = task / p.hkv, g = task % p.hkv;
    const uint ko = task * p.d;
    const uint first = uint(ranges[2u * j]), items = uint(ranges[2u * j + 1u]) * group;
    for (uint c0 = 0u; c0 < items; c0 += WG) {
      const uint it = c0 + lid;
      float pj = 0.0, ds = 0.0;
      if (it < items) {
        const uint qrow = (first + it / group) * p.hq + g * group + it % group;
        const uint qo = qrow * p.d;
        float dot = 0.0, dpv = 0.0;
        for (uint c = 0u; c < p.d; ++c) {
          dot += q[qo + c] * k[ko + c];
          dpv += dout[qo + c] * v[ko + c];
        }
        pj = exp(dot * p.scale - lse[qrow]);
        ds = pj * (dpv - delta[qrow]) * p.scale;
      }
      p_sh[lid] = pj;
      ds_sh[lid] = ds;
      barrier();
      const uint cn = min(uint(WG), items - c0);
      for (uint c = lid; c < p.d; c += WG) {
        float ak = dk[ko + c], av = dv[ko + c];
        for (uint t = 0u; t < cn; ++t) {
          const uint it2 = c0 + t;
          const uint qo = ((first + it2 / group) * p.hq + g * group + it2 % group) * p.d;
          ak += ds_sh[t] * q[qo + c];
          av += p_sh[t] * dout[qo + c];
        }
        dk[ko + c] = ak;
        dv[ko + c] = av;
      }
      barrier();
    }
  }
}
