// CheckQuantizedWeightOps: the GPU backends' test that they hold GGML
// block-quantized weights (Q8_0, Q4_0, Q4_K, Q6_K) byte for byte and that
// every op taking "any storage, quantized too" computes on them what the CPU
// computes on the dequantized f32 weights. Shared by vulkan_backend_test and
// cuda_backend_test (Catch2 checks; test code only). The CPU's own block
// kernels are tested in cpu/cpu_quant_test.cc.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "tasks/backend/backend.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/half.h"

namespace pcfarm::testing {

// Helpers of the GPU backends' tests (f32 tensors in and out, a tolerance
// check that says how many values missed and by how much).
namespace backend_check {

inline float Next(uint64_t& s, float lo = -1, float hi = 1) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return lo + (hi - lo) * static_cast<float>(s >> 40) / static_cast<float>(1 << 24);
}

inline std::vector<float> Values(size_t n, uint64_t& s) {
  std::vector<float> v(n);
  for (auto& x : v) x = Next(s);
  return v;
}

// Blocks for [rows, cols]: Q8_0/Q4_0 quantized from values in [-1, 1) by
// the reference quantizer; the K types random bytes (every code, scale and
// min field value) with small f16 scales (|d| <= 0.01) so that products
// stay near 1 and f32 tolerances mean the same for every type.
inline std::vector<std::byte> RandomBlocks(StorageType type, int64_t rows, int64_t cols,
                                           uint64_t& s) {
  const uint32_t g = StorageGgmlType(type);
  const int64_t blocks = rows * cols / GgmlBlockValues(g);
  std::vector<std::byte> raw(static_cast<size_t>(blocks) * GgmlBlockBytes(g));
  auto* u = reinterpret_cast<uint8_t*>(raw.data());
  if (type == StorageType::kQ8_0 || type == StorageType::kQ4_0) {
    const std::vector<float> v = Values(static_cast<size_t>(rows * cols), s);
    REQUIRE(QuantizeBlocks(g, v.data(), rows * cols, u).ok());
    return raw;
  }
  for (size_t i = 0; i < raw.size(); ++i) u[i] = static_cast<uint8_t>(Next(s, 0, 256));
  auto put_half = [&](size_t at, float f) {
    const uint16_t h = F32ToF16(f);
    std::memcpy(u + at, &h, 2);
  };
  for (int64_t k = 0; k < blocks; ++k) {
    const size_t o = static_cast<size_t>(k) * GgmlBlockBytes(g);
    if (type == StorageType::kQ4_K) {
      put_half(o, Next(s, 0.001f, 0.01f));      // d
      put_half(o + 2, Next(s, 0.001f, 0.01f));  // dmin
    } else {
      put_half(o + 208, Next(s, -0.01f, 0.01f));  // d
    }
  }
  return raw;
}

inline Tensor Put(Backend& b, Shape shape, const std::vector<float>& v) {
  auto t = b.Alloc(shape, StorageType::kF32);
  REQUIRE(t.ok());
  REQUIRE(b.Upload(*t, v).ok());
  return *t;
}

inline std::vector<float> Get(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  REQUIRE(b.Download(t, v).ok());
  return v;
}

inline void Close(const std::vector<float>& got, const std::vector<float>& want, double atol,
                  double rtol, const char* what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - want[i]);
    worst = std::max(worst, err);
    if (!(err <= atol + rtol * std::fabs(double{want[i]}))) ++bad;
  }
  INFO(what << ": " << bad << " of " << got.size() << " out of tolerance, max abs error "
            << worst);
  CHECK(bad == 0);
}

}  // namespace backend_check

// For each block type: 37 rows of 3 blocks (Q8_0/Q4_0: 96 values; the K
// types: 768), so block starts sit off 4-byte boundaries (34, 18, 210
// bytes) and rows are odd in number (RandomBlocks). Checks on `dev` against `ref` (the CPU):
// DownloadBytes gives the bytes back; Download dequantizes exactly as
// DequantizeBlocks; Copy dequantizes to F32 and BF16; Gemm x·wᵀ at M = 1
// and 5 (decode kernels) and 33 (prefill), beta != 0; MatMulBackward's
// dy·w; EmbeddingForward of first, last and repeated rows.
inline void CheckQuantizedWeightOps(Backend& dev, Backend& ref, uint32_t seed) {
  using namespace backend_check;
  uint64_t s = seed;
  for (StorageType type : {StorageType::kQ8_0, StorageType::kQ4_0, StorageType::kQ4_K,
                           StorageType::kQ6_K}) {
    INFO("type " << StorageTypeName(type));
    REQUIRE(dev.SupportsStorage(type));
    const uint32_t g = StorageGgmlType(type);
    const int64_t rows = 37, cols = 3 * GgmlBlockValues(g);
    const std::vector<std::byte> raw = RandomBlocks(type, rows, cols, s);
    std::vector<float> deq(static_cast<size_t>(rows * cols));
    DequantizeBlocks(g, reinterpret_cast<const uint8_t*>(raw.data()),
                     rows * cols / GgmlBlockValues(g), deq.data());
    auto w = dev.Alloc({rows, cols}, type);
    REQUIRE(w.ok());
    CHECK(w->bytes() == raw.size());
    REQUIRE(dev.UploadBytes(*w, raw).ok());
    // Raw bytes back as they went in; Download dequantizes as the CPU does.
    std::vector<std::byte> back(raw.size());
    REQUIRE(dev.DownloadBytes(*w, back).ok());
    CHECK(std::memcmp(back.data(), raw.data(), raw.size()) == 0);
    CHECK(Get(dev, *w) == deq);
    // Copy dequantizes on the device, to F32 and to BF16.
    auto wf = dev.Alloc({rows, cols}, StorageType::kF32);
    REQUIRE(wf.ok());
    REQUIRE(dev.Copy(*wf, *w).ok());
    Close(Get(dev, *wf), deq, 0, 1e-6, "copy to f32");
    auto wh = dev.Alloc({rows, cols}, StorageType::kBF16);
    REQUIRE(wh.ok());
    REQUIRE(dev.Copy(*wh, *w).ok());
    std::vector<float> deq_bf16(deq.size());
    for (size_t i = 0; i < deq.size(); ++i) deq_bf16[i] = BF16ToF32(F32ToBF16(deq[i]));
    Close(Get(dev, *wh), deq_bf16, 0, 1e-2, "copy to bf16");

    Tensor wref = Put(ref, {rows, cols}, deq);
    for (int64_t m : {1, 5, 33}) {
      INFO("M = " << m);
      const std::vector<float> x = Values(static_cast<size_t>(m * cols), s);
      const std::vector<float> c0 = Values(static_cast<size_t>(m * rows), s);
      Tensor cd = Put(dev, {m, rows}, c0), cr = Put(ref, {m, rows}, c0);
      REQUIRE(dev.Gemm(cd, Put(dev, {m, cols}, x), false, *w, true, 0.5f, 2.0f).ok());
      REQUIRE(ref.Gemm(cr, Put(ref, {m, cols}, x), false, wref, true, 0.5f, 2.0f).ok());
      Close(Get(dev, cd), Get(ref, cr), 1e-4, 1e-4, "gemm x·wT");
      // The backward product dx = dy·w (w not transposed).
      const std::vector<float> dy = Values(static_cast<size_t>(m * rows), s);
      Tensor dxd = Put(dev, {m, cols}, std::vector<float>(size_t(m * cols), 0));
      Tensor dxr = Put(ref, {m, cols}, std::vector<float>(size_t(m * cols), 0));
      REQUIRE(
          dev.MatMulBackward(&dxd, nullptr, Put(dev, {m, rows}, dy), Put(dev, {m, cols}, x), *w)
              .ok());
      REQUIRE(
          ref.MatMulBackward(&dxr, nullptr, Put(ref, {m, rows}, dy), Put(ref, {m, cols}, x), wref)
              .ok());
      Close(Get(dev, dxd), Get(ref, dxr), 1e-4, 1e-4, "matmul backward dy·w");
    }
    // Embedding rows of a quantized table (first, last, repeated).
    const std::vector<int32_t> ids = {0, 36, 5, 5, 17};
    Tensor ed = Put(dev, {5, cols}, std::vector<float>(size_t(5 * cols), 0));
    REQUIRE(dev.EmbeddingForward(ed, *w, ids).ok());
    std::vector<float> want;
    for (int32_t id : ids)
      want.insert(want.end(), deq.begin() + id * cols, deq.begin() + (id + 1) * cols);
    Close(Get(dev, ed), want, 0, 1e-6, "embedding rows");
  }
}

}  // namespace pcfarm::testing
