// The CUDA kernels' block reader (block_decode.h), built by the host
// compiler: every value of random blocks of each type bit for bit against
// DequantizeBlocks, and the f16 conversion against half.h for every
// pattern. It runs without a GPU (part of ggml_quants_test), so the block
// layouts the CUDA backend reads are checked on every machine; on a GPU,
// cuda_backend_test checks the kernels that use it.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tasks/backend/cuda/block_decode.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/half.h"

namespace pcfarm::cuda {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

template <Elem E>
void CheckType(uint32_t ggml_type) {
  INFO("ggml type " << GgmlQuantName(ggml_type));
  // Random bytes: every code, scale and min pattern, f16 scales subnormal,
  // infinite and NaN included (the products then are too, the same bits).
  const int64_t blocks = 257;
  std::vector<uint8_t> raw(static_cast<size_t>(blocks) * GgmlBlockBytes(ggml_type));
  std::mt19937 rng(static_cast<uint32_t>(ggml_type));
  for (auto& b : raw) b = static_cast<uint8_t>(rng());
  const int64_t n = blocks * GgmlBlockValues(ggml_type);
  std::vector<float> want(static_cast<size_t>(n));
  DequantizeBlocks(ggml_type, raw.data(), blocks, want.data());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (Bits(BlockValue<E>(raw.data(), i)) != Bits(want[static_cast<size_t>(i)])) {
      if (bad++ == 0) first = i;
    }
  }
  INFO(bad << " of " << n << " values differ, first at " << first);
  CHECK(bad == 0);
}

TEST_CASE("CUDA block reader: every value of every block type equals DequantizeBlocks") {
  CheckType<Elem::kQ8_0>(kGgmlTypeQ8_0);
  CheckType<Elem::kQ4_0>(kGgmlTypeQ4_0);
  CheckType<Elem::kQ4_K>(kGgmlTypeQ4_K);
  CheckType<Elem::kQ6_K>(kGgmlTypeQ6_K);
}

TEST_CASE("CUDA f16 reader equals half.h for every 16-bit pattern") {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = static_cast<uint16_t>(h);
    uint8_t p[2];
    std::memcpy(p, &v, 2);
    if (Bits(HalfAt(p)) != Bits(F16ToF32(v))) ++bad;
  }
  CHECK(bad == 0);
}

}  // namespace
}  // namespace pcfarm::cuda
