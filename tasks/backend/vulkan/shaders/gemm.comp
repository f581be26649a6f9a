#version 450
#extension GL_GOOGLE_include_directive : require
// c[M, N] = alpha·op(a)·op(b) + beta·c, a and b of any storage type
// (b may hold GGML blocks: dequantized as its panels are staged).
// Tiled: each 16×16 workgroup computes a 64×64 tile of c, 4×4 outputs per
// invocation, staging 64×16 panels of op(a) and 16×64 of op(b) in shared
// memory; panels are loaded along the contiguous dimension of the stored
// matrix (coalesced for both transposes).
#define WG 256
#include "common.glsl"

#define BM 64
#define BN 64
#define BK 16

layout(std430, binding = 0) buffer C { float c[]; };
layout(std430, binding = 1) readonly buffer A { uint a[]; };
layout(std430, binding = 2) readonly buffer B { uint b[]; };
layout(push_constant) uniform P {
  uint M; uint N; uint K; uint ta; uint tb; uint a_type; uint b_type; float alpha; float beta;
} p;
DEFINE_LOAD_ANY(load_a, byte_a, a)
DEFINE_LOAD_ANY(load_b, byte_b, b)

shared float As[BK][BM + 1];
shared float Bs[BK][BN + 1];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  const uint tx = tid % 16u, ty = tid / 16u;
  const uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
  float acc[4][4];
  [[unroll]] for (uint i = 0u; i < 4u; ++i)
    [[unroll]] for (uint j = 0u; j < 4u; ++j) acc[i][j] = 0.0;

  for (uint k0 = 0u; k0 < p.K; k0 += BK) {
    // op(a) panel: rows m0..m0+64, columns k0..k0+16 (1024 elements).
    [[unroll]] for (uint r = 0u; r < 4u; ++r) {
      const uint idx = tid + r * WG;
      uint mm, kk;
      if (p.ta != 0u) { mm = idx % BM; kk = idx / BM; }  // stored [K, M]: m contiguous
      else { kk = idx % BK; mm = idx / BK; }               // stored [M, K]: k contiguous
      const uint gm = m0 + mm, gk = k0 + kk;
      float v = 0.0;
      if (gm < p.M && gk < p.K) {
        const uint e = p.ta != 0u ? gk * p.M + gm : gm * p.K + gk;
        v = load_a(p.a_type, e);
      }
      As[kk][mm] = v;
    }
    // op(b) panel: rows k0..k0+16, columns n0..n0+64.
    [[unroll]] for (uint r = 0u; r < 4u; ++r) {
      const uint idx = tid + r * WG;
      uint nn, kk;
      if (p.tb != 0u) { kk = idx % BK; nn = idx / BK; }  // stored [N, K]: k contiguous
      else { nn = idx % BN; kk = idx / BN; }               // stored [K, N]: n contiguous
      const uint gn = n0 + nn, gk = k0 + kk;
      float v = 0.0;
      if (gn < p.N && gk < p.K) {
        const uint e = p.tb != 0u ? gn * p.K + gk : gk * p.N + gn;
        v = load_b(p.b_type, e);
      }
      Bs[kk][nn] = v;
    }
    barrier();
    [[unroll]] for (uint kk = 0u; kk < BK; ++kk) {
      float av[4], bv[4];
      [[unroll]] for (uint i = 0u; i < 4u; ++i) av[i] = As[kk][ty + 16u * i];
      [[unroll]] for (uint j = 0u; j < 4u; ++j) bv[j] = Bs[kk][tx + 16u * j];
      [[unroll]] for (uint i = 0u; i < 4u; ++i)
        [[unroll]] for (uint j = 0u; j < 4u; ++j) acc[i][j] += av[i] * bv[j];
    }
    barrier();
  }
  [[unroll]] for (uint i = 0u; i < 4u; ++i) {
    const uint gm = m0 + ty + 16u * i;
    if (gm >= p.M) continue;
    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
      const uint gn = n0 + tx + 16u * j;
      if (gn >= p.N) continue;
      const uint e = gm * p.N + gn;
      float v = p.alpha * acc[i][j];
      if (p.beta != 0.0) v += p.beta * c[e];  // beta = 0 ignores c (even NaN)
      c[e] = v;
    }
  }
}
