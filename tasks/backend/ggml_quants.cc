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
  if (type != kGgmlTypeQ8_0 && type != kGgmlTypeQ4_0)
    return InvalidArgument(std::string("quantize: ") + GgmlQuantName(type) +
                           " (ggml type " + std::to_string(type) +
                           ") has no quantizer; Q8_0 and Q4_0 do");
  if (n % 32 != 0)
    return InvalidArgument("quantize: " + std::to_string(n) +
                           " values is not a multiple of the block size 32");
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
