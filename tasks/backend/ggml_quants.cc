// Compiled with -ffp-contract=off (CMakeLists.txt): the dequantization must
// round each product as the spec's formula does to be bit-exact.
#include "tasks/backend/ggml_quants.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <string>

#include "tasks/backend/half.h"

namespace pcfarm {
namespace {

float LoadF16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return F16ToF32(h);
}

void StoreF16(uint8_t* p, float f) {
  const uint16_t h = F32ToF16(f);
  std::memcpy(p, &h, 2);
}

void DequantQ8_0(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  for (int j = 0; j < 32; ++j) y[j] = d * float(int8_t(b[2 + j]));
}

void DequantQ4_0(const uint8_t* b, float* y) {
  const float d = LoadF16(b);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(int(b[2 + j] & 15) - 8);
    y[j + 16] = d * float(int(b[2 + j] >> 4) - 8);
  }
}

void Q4KScaleMin(const uint8_t* s, int i, int* sc, int* m) {
  if (i < 4) {
    *sc = s[i] & 63;
    *m = s[i + 4] & 63;
  } else {
    *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4);
    *m = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
  }
}

void DequantQ4_K(const uint8_t* b, float* y) {
  const float d = LoadF16(b), dmin = LoadF16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int j = 0; j < 4; ++j) {
    int sc0, m0, sc1, m1;
    Q4KScaleMin(scales, 2 * j, &sc0, &m0);
    Q4KScaleMin(scales, 2 * j + 1, &sc1, &m1);
    const float d0 = d * float(sc0), mn0 = dmin * float(m0);
    const float d1 = d * float(sc1), mn1 = dmin * float(m1);
    const uint8_t* q = qs + 32 * j;
    for (int l = 0; l < 32; ++l) {
      y[64 * j + l] = d0 * float(q[l] & 15) - mn0;
      y[64 * j + 32 + l] = d1 * float(q[l] >> 4) - mn1;
    }
  }
}

void DequantQ6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = LoadF16(b + 208);
  for (int h = 0; h < 2; ++h) {
    for (int l = 0; l < 32; ++l) {
      for (int t = 0; t < 4; ++t) {
        const uint8_t lo = ql[64 * h + l + 32 * (t & 1)];
        const int nib = (t & 2) ? lo >> 4 : lo & 15;
        const int q = (nib | (((qh[32 * h + l] >> (2 * t)) & 3) << 4)) - 32;
        const float ds = d * float(sc[8 * h + l / 16 + 2 * t]);
        y[128 * h + l + 32 * t] = ds * float(q);
      }
    }
  }
}

// A 6-bit code: x rounded to nearest and clamped to 0..63.
int Code6(float x) { return std::clamp(int(std::lround(x)), 0, 63); }

// Our Q4_K quantizer (see the header): a min/max fit per sub-block.
void QuantQ4_K(const float* x, uint8_t* b) {
  float scale[8], mins[8], max_scale = 0, max_min = 0;
  for (int s = 0; s < 8; ++s) {
    float lo = 0, hi = 0;  // the range always holds 0
    for (int j = 0; j < 32; ++j) {
      lo = std::fmin(lo, x[32 * s + j]);
      hi = std::fmax(hi, x[32 * s + j]);
    }
    scale[s] = (hi - lo) / 15.0f;
    mins[s] = -lo;
    max_scale = std::fmax(max_scale, scale[s]);
    max_min = std::fmax(max_min, mins[s]);
  }
  StoreF16(b, max_scale / 63.0f);
  StoreF16(b + 2, max_min / 63.0f);
  const float d = LoadF16(b), dmin = LoadF16(b + 2);  // as stored
  int sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    // The step rounded up, so that 15 steps still span the sub-block.
    sc[s] = d > 0 ? std::clamp(int(std::ceil(scale[s] / d)), 0, 63) : 0;
    m[s] = dmin > 0 ? Code6(mins[s] / dmin) : 0;
  }
  uint8_t* scales = b + 4;
  for (int s = 0; s < 4; ++s) {
    scales[s] = uint8_t((sc[s] & 63) | ((sc[s + 4] >> 4) << 6));
    scales[s + 4] = uint8_t((m[s] & 63) | ((m[s + 4] >> 4) << 6));
    scales[s + 8] = uint8_t((sc[s + 4] & 15) | ((m[s + 4] & 15) << 4));
  }
  uint8_t q[256];
  for (int s = 0; s < 8; ++s) {
    const float step = d * float(sc[s]), offset = dmin * float(m[s]);
    for (int j = 0; j < 32; ++j) {
      const float v = step > 0 ? (x[32 * s + j] + offset) / step : 0.0f;
      q[32 * s + j] = uint8_t(std::clamp(int(std::lround(v)), 0, 15));
    }
  }
  uint8_t* qs = b + 16;
  for (int j = 0; j < 4; ++j)
    for (int l = 0; l < 32; ++l)
      qs[32 * j + l] = uint8_t(q[64 * j + l] | (q[64 * j + 32 + l] << 4));
}

// Our Q6_K quantizer (see the header): max|x| per group of 16.
void QuantQ6_K(const float* x, uint8_t* b) {
  float scale[16], max_scale = 0;
  for (int g = 0; g < 16; ++g) {
    float amax = 0;
    for (int j = 0; j < 16; ++j) amax = std::fmax(amax, std::fabs(x[16 * g + j]));
    scale[g] = amax / 31.0f;
    max_scale = std::fmax(max_scale, scale[g]);
  }
  StoreF16(b + 208, max_scale / 127.0f);
  const float d = LoadF16(b + 208);
  auto* sc = reinterpret_cast<int8_t*>(b + 192);
  uint8_t q[256];
  for (int g = 0; g < 16; ++g) {
    sc[g] = int8_t(d > 0 ? std::clamp(int(std::ceil(scale[g] / d)), 0, 127) : 0);
    const float step = d * float(sc[g]);
    for (int j = 0; j < 16; ++j) {
      const float v = step > 0 ? x[16 * g + j] / step : 0.0f;
      q[16 * g + j] = uint8_t(std::clamp(int(std::lround(v)), -32, 31) + 32);
    }
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  std::memset(b, 0, 192);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l)
      for (int t = 0; t < 4; ++t) {
        const int v = q[128 * h + l + 32 * t];
        ql[64 * h + l + 32 * (t & 1)] |= uint8_t((v & 15) << ((t & 2) ? 4 : 0));
        qh[32 * h + l] |= uint8_t((v >> 4) << (2 * t));
      }
}

}  // namespace

bool IsGgmlQuantType(uint32_t type) { return GgmlBlockValues(type) != 0; }

int64_t GgmlBlockValues(uint32_t type) {
  switch (type) {
    case kGgmlTypeQ8_0: case kGgmlTypeQ4_0: return 32;
    case kGgmlTypeQ4_K: case kGgmlTypeQ6_K: return 256;
    default: return 0;
  }
}

size_t GgmlBlockBytes(uint32_t type) {
  switch (type) {
    case kGgmlTypeQ8_0: return 34;
    case kGgmlTypeQ4_0: return 18;
    case kGgmlTypeQ4_K: return 144;
    case kGgmlTypeQ6_K: return 210;
    default: return 0;
  }
}

const char* GgmlQuantName(uint32_t type) {
  switch (type) {
    case kGgmlTypeQ8_0: return "Q8_0";
    case kGgmlTypeQ4_0: return "Q4_0";
    case kGgmlTypeQ4_K: return "Q4_K";
    case kGgmlTypeQ6_K: return "Q6_K";
    default: return "?";
  }
}

void DequantizeBlocks(uint32_t type, const uint8_t* src, int64_t n_blocks, float* dst) {
  assert(IsGgmlQuantType(type));
  const size_t bb = GgmlBlockBytes(type);
  const int64_t bv = GgmlBlockValues(type);
  for (int64_t i = 0; i < n_blocks; ++i) {
    const uint8_t* b = src + size_t(i) * bb;
    float* y = dst + i * bv;
    switch (type) {
      case kGgmlTypeQ8_0: DequantQ8_0(b, y); break;
      case kGgmlTypeQ4_0: DequantQ4_0(b, y); break;
      case kGgmlTypeQ4_K: DequantQ4_K(b, y); break;
      case kGgmlTypeQ6_K: DequantQ6_K(b, y); break;
      default: break;
    }
  }
}

Status QuantizeBlocks(uint32_t type, const float* src, int64_t n, uint8_t* dst) {
  if (!IsGgmlQuantType(type))
    return InvalidArgument("quantize: ggml type " + std::to_string(type) +
                           " is not Q8_0, Q4_0, Q4_K or Q6_K");
  const int64_t bv = GgmlBlockValues(type);
  if (n % bv != 0)
    return InvalidArgument("quantize: " + std::to_string(n) +
                           " values is not a multiple of the block size " +
                           std::to_string(bv));
  if (type == kGgmlTypeQ4_K || type == kGgmlTypeQ6_K) {
    for (int64_t blk = 0; blk < n / 256; ++blk) {
      if (type == kGgmlTypeQ4_K) {
        QuantQ4_K(src + blk * 256, dst + blk * 144);
      } else {
        QuantQ6_K(src + blk * 256, dst + blk * 210);
      }
    }
    return Status::Ok();
  }
  for (int64_t blk = 0; blk < n / 32; ++blk) {
    const float* x = src + blk * 32;
    if (type == kGgmlTypeQ8_0) {
      uint8_t* b = dst + blk * 34;
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[j]));
      const float d = amax / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      StoreF16(b, d);
      for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(std::round(x[j] * id)));
    } else {
      uint8_t* b = dst + blk * 18;
      float amax = 0, max = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(x[j]) > amax) {
          amax = std::fabs(x[j]);
          max = x[j];
        }
      const float d = max / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      StoreF16(b, d);
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::min(15, int(std::trunc(x[j] * id + 8.5f)));
        const int q1 = std::min(15, int(std::trunc(x[j + 16] * id + 8.5f)));
        b[2 + j] = uint8_t(q0 | (q1 << 4));
      }
    }
  }
  return Status::Ok();
}

}  // namespace pcfarm
