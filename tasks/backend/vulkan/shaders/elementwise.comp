#version 450
#extension GL_GOOGLE_include_directive : require
// y = f(a, b) elementwise over n floats; mode: 0 fill (y = alpha), 1 add
// (y = a + b), 2 axpy (y += alpha·a), 3 scale (y *= alpha), 4 swiglu
// (y = silu(a)·b).
#define WG 256
#include "common.glsl"

layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer A { float a[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(push_constant) uniform P { uint n; uint mode; float alpha; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * WG;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    switch (p.mode) {
      case 0u: y[i] = p.alpha; break;
      case 1u: y[i] = a[i] + b[i]; break;
      case 2u: y[i] += p.alpha * a[i]; break;
      case 3u: y[i] *= p.alpha; break;
      default: {
        const float g = a[i];
        y[i] = g / (1.0 + exp(-g)) * b[i];
      }
    }
  }
}
