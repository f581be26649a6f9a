// 16-bit and quantized weights on the CPU backend: Gemm / MatMulForward
// (WeightRowDots for a few rows, converted tiles beyond) against the
// dequantized F32 product in double, on every instruction set this CPU has,
// at ragged shapes; embedding rows, Copy, Download; WrapHostBytes views and
// the checks that keep quantized and read-only tensors out of the wrong ops.
//
// Tolerance: |got − ref| <= 1e-5·Σ|w·x| + 1e-30 per output, ref the double
// product of the dequantized weight (Download, the bit-exact reference
// decoder) and the f32 activations: the kernels dequantize exactly and only
// reorder an f32 sum of k products (the scale of a 32-block is applied to
// the block's partial sum), so their error is that of f32 summation.
// Q8_0 and Q4_0 on AVX2/AVX-512, while the backend's rounded_activations
// is on, take the activations as int16 (ActBlock) and add, per 32-block of x, 0.51·max|x_block|/32512·Σ|w| over
// the block: the activations' rounding; the integer sums are exact.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/backend/cpu/cpu_internal.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/half.h"
#include "tasks/backend/random_storage_bytes.h"

namespace pcfarm {
namespace {

std::vector<std::byte> RandomWeight(StorageType type, int64_t n, int64_t k, uint32_t seed) {
  return testing::RandomStorageBytes(type, n, k, seed);
}

std::vector<float> Values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// w[0..k)·x[0..k) in double, and Σ|w·x| (the tolerances' scale).
struct DoubleDot {
  double dot = 0, mag = 0;
};
DoubleDot Dot(const float* w, const float* x, int64_t k) {
  DoubleDot d;
  for (int64_t j = 0; j < k; ++j) {
    d.dot += double(w[j]) * x[j];
    d.mag += std::fabs(double(w[j]) * x[j]);
  }
  return d;
}

std::vector<int64_t> Ks(StorageType t) {
  switch (StorageBlockValues(t)) {
    case 1: return {7, 33, 770};
    // 800: four-block groups (two AVX-512 pairs) and one block left over;
    // 224: one group and three left over (a whole pair among them).
    case 32: return {32, 96, 224, 800};
    default: return {256, 768, 2304};  // 2304: 9 super-blocks, the accumulation chains wrap
  }
}

const StorageType kTypes[] = {StorageType::kF16,  StorageType::kBF16, StorageType::kQ8_0,
                              StorageType::kQ4_0, StorageType::kQ4_K, StorageType::kQ6_K};

// The activation rounding's share of the tolerance for one output when
// the integer kernel runs (see the top of the file), else 0.
double ActBound(const Backend& be, StorageType type, cpu::CpuIsa isa, const float* x,
                const float* w, int64_t k) {
  if (!be.rounded_activations() || !cpu::UsesActBlocks(type) || isa == cpu::CpuIsa::kBaseline)
    return 0;
  double bound = 0;
  for (int64_t b = 0; b < k / 32; ++b) {
    double mx = 0, wsum = 0;
    for (int64_t j = 32 * b; j < 32 * b + 32; ++j) {
      mx = std::max(mx, std::fabs(double(x[j])));
      wsum += std::fabs(double(w[j]));
    }
    bound += 0.51 * mx / 32512 * wsum;
  }
  return bound;
}

struct IsaGuard {
  ~IsaGuard() { cpu::SetWeightRowIsaForTesting(cpu::BestCpuIsa()); }
};

TEST_CASE("16-bit and quantized weights: Gemm matches the dequantized F32 product") {
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  IsaGuard guard;
  for (int isa = 0; isa <= int(cpu::BestCpuIsa()); ++isa)
  for (bool rounded : {false, true}) {
    cpu::SetWeightRowIsaForTesting(cpu::CpuIsa(isa));
    b.set_rounded_activations(rounded);
    for (StorageType type : kTypes)
      for (int64_t k : Ks(type))
        for (int64_t n : {1, 7, 33})
          for (int64_t m : {1, 2, 3, 5, 17, 33}) {
            INFO(cpu::CpuIsaName(cpu::CpuIsa(isa)) << " " << StorageTypeName(type) << " m " << m
                                                   << " n " << n << " k " << k << " rounded "
                                                   << rounded);
            const std::vector<std::byte> wb = RandomWeight(type, n, k, uint32_t(n * k + m));
            const std::vector<float> x = Values(size_t(m * k), uint32_t(k));
            auto wt = b.Alloc({n, k}, type);
            auto xt = b.Alloc({m, k}, StorageType::kF32);
            auto yt = b.Alloc({m, n}, StorageType::kF32);
            REQUIRE((wt.ok() && xt.ok() && yt.ok()));
            REQUIRE(b.UploadBytes(*wt, wb).ok());
            REQUIRE(b.Upload(*xt, x).ok());
            std::vector<float> w(size_t(n * k));
            REQUIRE(b.Download(*wt, w).ok());  // the reference decoder's values
            const float beta = m == 3 || (m == 1 && n == 33) ? 0.5f : 0.0f;
            std::vector<float> y0 = Values(size_t(m * n), 9);
            if (beta == 0) y0.assign(y0.size(), NAN);
            REQUIRE(b.Upload(*yt, y0).ok());
            REQUIRE(b.Gemm(*yt, *xt, false, *wt, true, 0.75f, beta).ok());
            std::vector<float> y(size_t(m * n));
            REQUIRE(b.Download(*yt, y).ok());
            for (int64_t i = 0; i < m; ++i)
              for (int64_t r = 0; r < n; ++r) {
                const auto [dot, mag] = Dot(&w[size_t(r * k)], &x[size_t(i * k)], k);
                const double ref = 0.75 * dot + (beta != 0 ? beta * y0[size_t(i * n + r)] : 0.0);
                const double act = ActBound(b, type, cpu::CpuIsa(isa), &x[size_t(i * k)],
                                            &w[size_t(r * k)], k);
                INFO("row " << i << " col " << r);
                REQUIRE(std::fabs(y[size_t(i * n + r)] - ref) <= 1e-5 * mag + act + 1e-30);
              }
          }
  }
}

TEST_CASE("16-bit and quantized weights beyond 16 rows: 64-column blocks, each converted where it is multiplied") {
  // More activation rows than WeightRowDots takes and N >= M: each thread
  // converts the weight rows of its next 64 output columns and multiplies
  // them at once. N = 130 is three blocks, the last of 2 columns, so a
  // block's rows, output columns and the chunks of the two threads must
  // all line up; op(a) transposed and not, beta 0 and 0.5. Tolerance: f32
  // summation's (the activations are never rounded here).
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  b.set_rounded_activations(true);  // beyond 16 rows it does not apply
  const int64_t m = 20, n = 130;
  for (StorageType type : kTypes)
    for (bool trans_a : {false, true})
      for (float beta : {0.0f, 0.5f}) {
        const int64_t k = Ks(type)[1];
        INFO(StorageTypeName(type) << " k " << k << " trans_a " << trans_a << " beta " << beta);
        const std::vector<float> x = Values(size_t(m * k), uint32_t(k + trans_a));
        std::vector<float> xs = x;  // op(a) = x: a[K, M] when transposed
        if (trans_a)
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < k; ++j) xs[size_t(j * m + i)] = x[size_t(i * k + j)];
        auto wt = b.Alloc({n, k}, type);
        auto xt = trans_a ? b.Alloc({k, m}, StorageType::kF32) : b.Alloc({m, k}, StorageType::kF32);
        auto yt = b.Alloc({m, n}, StorageType::kF32);
        REQUIRE((wt.ok() && xt.ok() && yt.ok()));
        REQUIRE(b.UploadBytes(*wt, RandomWeight(type, n, k, uint32_t(k))).ok());
        REQUIRE(b.Upload(*xt, xs).ok());
        std::vector<float> w(size_t(n * k));
        REQUIRE(b.Download(*wt, w).ok());
        std::vector<float> y0 = Values(size_t(m * n), 3);
        if (beta == 0) y0.assign(y0.size(), NAN);
        REQUIRE(b.Upload(*yt, y0).ok());
        REQUIRE(b.Gemm(*yt, *xt, trans_a, *wt, true, 0.75f, beta).ok());
        std::vector<float> y(size_t(m * n));
        REQUIRE(b.Download(*yt, y).ok());
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < n; ++r) {
            const auto [dot, mag] = Dot(&w[size_t(r * k)], &x[size_t(i * k)], k);
            const double ref = 0.75 * dot + (beta != 0 ? beta * y0[size_t(i * n + r)] : 0.0);
            INFO("row " << i << " col " << r);
            REQUIRE(std::fabs(y[size_t(i * n + r)] - ref) <= 1e-5 * mag + 1e-30);
          }
      }
}

TEST_CASE("F32 decode rows on every instruction set: the double product") {
  // One activation row against an F32 [N, K] weight takes WeightRowDots'
  // F32 rows (four rows at a time, the rest one by one; K in 16- or 8-lane
  // steps and a tail). Same tolerance as above: f32 summation only.
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  IsaGuard guard;
  for (int isa = 0; isa <= int(cpu::BestCpuIsa()); ++isa) {
    cpu::SetWeightRowIsaForTesting(cpu::CpuIsa(isa));
    for (int64_t k : {1, 7, 8, 15, 16, 33, 770})
      for (int64_t n : {1, 3, 4, 9, 33, 70})
        for (float beta : {0.0f, 0.5f}) {
          INFO(cpu::CpuIsaName(cpu::CpuIsa(isa)) << " n " << n << " k " << k << " beta "
                                                 << beta);
          const std::vector<float> w = Values(size_t(n * k), uint32_t(n + 3 * k));
          const std::vector<float> x = Values(size_t(k), uint32_t(k));
          std::vector<float> y0 = Values(size_t(n), 9);
          if (beta == 0) y0.assign(y0.size(), NAN);
          auto wt = b.Alloc({n, k}, StorageType::kF32);
          auto xt = b.Alloc({1, k}, StorageType::kF32);
          auto yt = b.Alloc({1, n}, StorageType::kF32);
          REQUIRE((wt.ok() && xt.ok() && yt.ok()));
          REQUIRE(b.Upload(*wt, w).ok());
          REQUIRE(b.Upload(*xt, x).ok());
          REQUIRE(b.Upload(*yt, y0).ok());
          REQUIRE(b.Gemm(*yt, *xt, false, *wt, true, 0.75f, beta).ok());
          std::vector<float> y(static_cast<size_t>(n));
          REQUIRE(b.Download(*yt, y).ok());
          for (int64_t r = 0; r < n; ++r) {
            const auto [dot, mag] = Dot(&w[size_t(r * k)], x.data(), k);
            const double ref = 0.75 * dot + (beta != 0 ? beta * y0[size_t(r)] : 0.0);
            INFO("row " << r);
            REQUIRE(std::fabs(y[size_t(r)] - ref) <= 1e-5 * mag + 1e-30);
          }
        }
  }
}

TEST_CASE("MatMulForwardShared: several weights over one input, one MatMulForward each") {
  // The decode path runs q/k/v and gate/up as one pass over the pool with
  // the activations rounded once, as each MatMulForward rounds them. The
  // chunks' edges move, and with them which rows a kernel sums together
  // (4 or 8 at a time, the rest one by one), so a row's f32 sum may be
  // reordered: within 1e-6·Σ|w·x| of its own MatMulForward. Beyond
  // kFusedRows (17 rows) the products are one Gemm per weight.
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  IsaGuard guard;
  using S = StorageType;
  const std::vector<std::vector<S>> sets = {{S::kQ4_K, S::kQ6_K, S::kQ4_K},
                                            {S::kQ8_0, S::kQ4_0},
                                            {S::kF32, S::kQ8_0, S::kF16, S::kBF16},
                                            {S::kF32, S::kF32},
                                            {S::kQ6_K}};
  const int64_t k = 512;
  const int64_t ns[] = {65, 7, 33, 16};
  for (int isa = 0; isa <= int(cpu::BestCpuIsa()); ++isa)
    for (bool rounded : {false, true}) {
      cpu::SetWeightRowIsaForTesting(cpu::CpuIsa(isa));
      b.set_rounded_activations(rounded);
      for (const std::vector<S>& set : sets)
        for (int64_t m : {1, 4, 16, 17}) {
          INFO(cpu::CpuIsaName(cpu::CpuIsa(isa)) << " rounded " << rounded << " m " << m
                                                 << " first " << StorageTypeName(set[0]));
          auto xt = b.Alloc({m, k}, S::kF32);
          REQUIRE(xt.ok());
          REQUIRE(b.Upload(*xt, Values(size_t(m * k), uint32_t(m))).ok());
          std::vector<Tensor> ws, shared, alone;
          for (size_t i = 0; i < set.size(); ++i) {
            auto w = b.Alloc({ns[i], k}, set[i]);
            auto y1 = b.Alloc({m, ns[i]}, S::kF32);
            auto y2 = b.Alloc({m, ns[i]}, S::kF32);
            REQUIRE((w.ok() && y1.ok() && y2.ok()));
            REQUIRE(b.UploadBytes(*w, RandomWeight(set[i], ns[i], k, uint32_t(7 * i + 1))).ok());
            ws.push_back(*w);
            shared.push_back(*y1);
            alone.push_back(*y2);
            REQUIRE(b.MatMulForward(*y2, *xt, *w).ok());
          }
          REQUIRE(b.MatMulForwardShared(shared, *xt, ws).ok());
          std::vector<float> x(size_t(m * k));
          REQUIRE(b.Download(*xt, x).ok());
          for (size_t i = 0; i < set.size(); ++i) {
            const int64_t n = ns[i];
            std::vector<float> got(size_t(m * n)), want(got.size()), w(size_t(n * k));
            REQUIRE(b.Download(shared[i], got).ok());
            REQUIRE(b.Download(alone[i], want).ok());
            REQUIRE(b.Download(ws[i], w).ok());
            INFO("weight " << i << " " << StorageTypeName(set[i]));
            int bad = 0;
            for (int64_t r = 0; r < m; ++r)
              for (int64_t c = 0; c < n; ++c) {
                double mag = 0;
                for (int64_t j = 0; j < k; ++j)
                  mag += std::fabs(double(w[size_t(c * k + j)]) * x[size_t(r * k + j)]);
                bad += !(std::fabs(double(got[size_t(r * n + c)]) - want[size_t(r * n + c)]) <=
                         1e-6 * mag);
              }
            CHECK(bad == 0);
          }
        }
    }
}

TEST_CASE("MatMulForwardShared: bad arguments are refused with a message") {
  auto be = CreateCpuBackend({.cpu_threads = 1});
  REQUIRE(be.ok());
  Backend& b = **be;
  auto x = b.Alloc({2, 64}, StorageType::kF32);
  auto w = b.Alloc({3, 64}, StorageType::kQ8_0);
  auto w32 = b.Alloc({5, 32}, StorageType::kF32);
  auto y = b.Alloc({2, 3}, StorageType::kF32);
  auto y2 = b.Alloc({2, 3}, StorageType::kF32);
  auto y5 = b.Alloc({2, 5}, StorageType::kF32);
  REQUIRE((x.ok() && w.ok() && w32.ok() && y.ok() && y2.ok() && y5.ok()));
  auto message = [&](std::vector<Tensor> outs, std::vector<Tensor> weights) {
    const Status s = b.MatMulForwardShared(outs, *x, weights);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("MatMulForwardShared") != std::string::npos);
    return s.message();
  };
  CHECK(message({*y}, {*w, *w}).find("1 outputs for 2 weights") != std::string::npos);
  CHECK(message({}, {}).find("takes 1 to 4 weights, not 0") != std::string::npos);
  CHECK(message({*y, *y2, *y, *y2, *y}, {*w, *w, *w, *w, *w}).find("not 5") !=
        std::string::npos);
  CHECK(message({*y, *y}, {*w, *w}).find("outs 0 and 1 are one buffer") != std::string::npos);
  CHECK(message({*y, *y5}, {*w, *w}).find("weight 1") != std::string::npos);
  CHECK(message({*y, *y5}, {*w, *w32}).find("inner dimensions differ") != std::string::npos);
  auto square = b.Alloc({3, 3}, StorageType::kF32);
  auto square2 = b.Alloc({3, 3}, StorageType::kF32);
  auto x3 = b.Alloc({3, 3}, StorageType::kF32);
  REQUIRE((square.ok() && square2.ok() && x3.ok()));
  const Status crossed = b.MatMulForwardShared(std::vector<Tensor>{*square, *square2}, *x3,
                                               std::vector<Tensor>{*square2, *x3});
  CHECK(crossed.message().find("out 1 aliases weight 0") != std::string::npos);
  const Status crossed2 = b.MatMulForwardShared(std::vector<Tensor>{*square2, *square}, *x3,
                                                std::vector<Tensor>{*x3, *square2});
  CHECK(crossed2.message().find("out 0 aliases weight 1") != std::string::npos);
  const Status aliased =
      b.MatMulForwardShared(std::vector<Tensor>{*square}, *square, std::vector<Tensor>{*x3});
  CHECK(aliased.message().find("c aliases an input") != std::string::npos);
  CHECK(b.MatMulForwardShared(std::vector<Tensor>{*y, *y2}, *x, std::vector<Tensor>{*w, *w})
            .ok());
}

TEST_CASE("ToF32 on every instruction set: the reference conversion, bit for bit") {
  // The tiles prefill and training multiply are converted by ToF32, which
  // takes 8-lane code on AVX2/AVX-512 for F16, BF16, Q8_0 and Q4_0: every
  // value must be the reference decoder's (DequantizeBlocks, F16ToF32,
  // BF16ToF32), NaN, infinities, subnormals and -0 included, at ragged
  // 16-bit lengths.
  IsaGuard guard;
  for (StorageType type : kTypes) {
    const int64_t count = StorageBlockValues(type) == 1 ? 8 * 37 + 5 : 7 * StorageBlockValues(type);
    std::vector<std::byte> bytes = RandomWeight(type, 1, count, 77);
    if (!IsQuantized(type)) {
      const uint16_t special[] = {0x7c00, 0xfc00, 0x7e00, 0x0001, 0x8000, 0x03ff, 0x7f80, 0xffc1};
      for (size_t i = 0; i < std::size(special); ++i)
        std::memcpy(&bytes[2 * (3 + 11 * i)], &special[i], 2);
    }
    std::vector<float> want(size_t(count), 0.0f);
    const auto* h = reinterpret_cast<const uint16_t*>(bytes.data());
    switch (type) {
      case StorageType::kF16: for (int64_t i = 0; i < count; ++i) want[i] = F16ToF32(h[i]); break;
      case StorageType::kBF16: for (int64_t i = 0; i < count; ++i) want[i] = BF16ToF32(h[i]); break;
      default:
        DequantizeBlocks(StorageGgmlType(type), reinterpret_cast<const uint8_t*>(bytes.data()),
                         count / StorageBlockValues(type), want.data());
    }
    for (int isa = 0; isa <= int(cpu::BestCpuIsa()); ++isa) {
      INFO(StorageTypeName(type) << " on " << cpu::CpuIsaName(cpu::CpuIsa(isa)));
      cpu::SetWeightRowIsaForTesting(cpu::CpuIsa(isa));
      std::vector<float> got(size_t(count), 1.0f);
      if (isa != int(cpu::CpuIsa::kBaseline)) {  // every 16-bit and block type has 8-lane code
        CHECK(cpu::ToF32Fast(type, bytes.data(), got.data(), count));
        got.assign(got.size(), 1.0f);
      }
      cpu::ToF32(type, bytes.data(), got.data(), count);
      int64_t differ = 0;
      for (int64_t i = 0; i < count; ++i) differ += std::memcmp(&got[i], &want[i], 4) != 0;
      CHECK(differ == 0);
    }
  }
}

TEST_CASE("QuantizeActRows: x within 0.51·d of d·t; NaN, ∞ and tiny blocks refused") {
  IsaGuard guard;
  const int64_t k = 96, ldx = 100;
  std::vector<float> x(size_t(3 * ldx), 0.0f);
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> u(-1, 1), e(-12, 3);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < k; ++j)
      if (!(i == 1 && j >= 32 && j < 64))  // row 1's second block stays zero
        x[size_t(i * ldx + j)] = u(rng) * std::exp2(e(rng));
  x[5] = 7.5f;  // the largest of its block, exactly: t = 32512
  x[6] = -7.5f;
  x[7] = -0.0f;
  cpu::ActRows q;

  cpu::SetWeightRowIsaForTesting(cpu::CpuIsa::kBaseline);
  CHECK_FALSE(cpu::QuantizeActRows(x.data(), ldx, 3, k, &q));  // no integer kernel
  if (cpu::BestCpuIsa() == cpu::CpuIsa::kBaseline) {
    WARN("skipped: this CPU has neither AVX2 nor AVX-512, so no integer kernel runs");
    return;
  }
  cpu::SetWeightRowIsaForTesting(cpu::BestCpuIsa());
  REQUIRE(cpu::QuantizeActRows(x.data(), ldx, 3, k, &q));
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t b = 0; b < k / 32; ++b) {
      const size_t at = size_t(i * k / 32 + b);
      const cpu::ActBlock& blk = q.blocks[at];
      const float d = q.d[at];
      float mx = 0;
      for (int j = 0; j < 32; ++j) mx = std::max(mx, std::fabs(x[size_t(i * ldx + 32 * b + j)]));
      INFO("row " << i << " block " << b);
      CHECK(d == mx / 32512.0f);
      int32_t sums[8] = {};
      for (int j = 0; j < 32; ++j) {
        CHECK(std::abs(int(blk.t[j])) <= 32512);
        sums[(j % 16) / 2] += 8 * blk.t[j];
        const double back = double(d) * blk.t[j];
        CHECK(std::fabs(back - x[size_t(i * ldx + 32 * b + j)]) <= 0.51 * d);
      }
      for (int l = 0; l < 8; ++l) CHECK(blk.sum8[l] == sums[l]);
      int32_t all = 0;
      for (int j = 0; j < 32; ++j) all += blk.t[j];
      CHECK(q.dsum[at] == d * float(all));
    }
  CHECK(q.blocks[0].t[5] == 32512);
  CHECK(q.blocks[0].t[6] == -32512);
  CHECK(q.blocks[0].t[7] == 0);
  CHECK(q.d[4] == 0.0f);  // row 1, block 1: all zero
  CHECK(q.dsum[4] == 0.0f);
  CHECK(q.blocks[4].t[3] == 0);

  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> y = x;
    y[size_t(2 * ldx + 70)] = bad;
    CHECK_FALSE(cpu::QuantizeActRows(y.data(), ldx, 3, k, &q));
  }
  std::vector<float> tiny = x;
  for (int j = 0; j < 32; ++j) tiny[size_t(ldx + j)] = 1e-30f;  // a nonzero max below 2^-64
  CHECK_FALSE(cpu::QuantizeActRows(tiny.data(), ldx, 3, k, &q));
}

TEST_CASE("Q8_0, Q4_0, Q4_K and Q6_K with integer dot products: the product of the quantized activations") {
  // x spans 15 binary orders of magnitude within a block, so rounding it to
  // ~15 bits moves the product by more than f32 summation would: a kernel
  // that took the f32 rows would fail the first check, one that misplaced
  // values or lanes would fail both.
  if (cpu::BestCpuIsa() == cpu::CpuIsa::kBaseline) {
    WARN("skipped: this CPU has neither AVX2 nor AVX-512, so no integer kernel runs");
    return;
  }
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  IsaGuard guard;
  b.set_rounded_activations(true);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1), e(-14, 1);
  for (int isa = int(cpu::CpuIsa::kAvx2); isa <= int(cpu::BestCpuIsa()); ++isa) {
    cpu::SetWeightRowIsaForTesting(cpu::CpuIsa(isa));
    int coarser_than_f32 = 0;
    for (StorageType type :
         {StorageType::kQ8_0, StorageType::kQ4_0, StorageType::kQ4_K, StorageType::kQ6_K})
      for (int64_t k : Ks(type))
        for (int64_t n : {1, 7, 33})
          for (int64_t m : {1, 2, 3, 5, 16}) {
            INFO(cpu::CpuIsaName(cpu::CpuIsa(isa)) << " " << StorageTypeName(type) << " m " << m
                                                   << " n " << n << " k " << k);
            std::vector<float> x(size_t(m * k));
            for (float& v : x) v = u(rng) * std::exp2(e(rng));
            auto wt = b.Alloc({n, k}, type);
            auto xt = b.Alloc({m, k}, StorageType::kF32);
            auto yt = b.Alloc({m, n}, StorageType::kF32);
            REQUIRE((wt.ok() && xt.ok() && yt.ok()));
            REQUIRE(b.UploadBytes(*wt, RandomWeight(type, n, k, uint32_t(n + k + m))).ok());
            REQUIRE(b.Upload(*xt, x).ok());
            std::vector<float> w(size_t(n * k));
            REQUIRE(b.Download(*wt, w).ok());
            const float beta = m == 3 || (m == 1 && n == 33) ? 0.5f : 0.0f;
            std::vector<float> y0 = Values(size_t(m * n), 2);
            REQUIRE(b.Upload(*yt, y0).ok());
            REQUIRE(b.Gemm(*yt, *xt, false, *wt, true, 0.75f, beta).ok());
            std::vector<float> y(size_t(m * n));
            REQUIRE(b.Download(*yt, y).ok());
            cpu::ActRows q;
            REQUIRE(cpu::QuantizeActRows(x.data(), k, m, k, &q));
            for (int64_t i = 0; i < m; ++i)
              for (int64_t r = 0; r < n; ++r) {
                double ref_q = 0, mag_q = 0, ref = 0, mag = 0;
                for (int64_t j = 0; j < k; ++j) {
                  const size_t at = size_t(i * k / 32 + j / 32);
                  const double xq = double(q.d[at]) * q.blocks[at].t[j % 32];
                  const double wj = w[size_t(r * k + j)];
                  ref_q += wj * xq;
                  mag_q += std::fabs(wj * xq);
                  ref += wj * x[size_t(i * k + j)];
                  mag += std::fabs(wj * x[size_t(i * k + j)]);
                }
                const double prior = beta * y0[size_t(i * n + r)];
                const double got = y[size_t(i * n + r)];
                INFO("row " << i << " col " << r);
                REQUIRE(std::fabs(got - (0.75 * ref_q + prior)) <= 1e-5 * mag_q + 1e-30);
                const double act = ActBound(b, type, cpu::CpuIsa(isa), &x[size_t(i * k)],
                                            &w[size_t(r * k)], k);
                REQUIRE(std::fabs(got - (0.75 * ref + prior)) <= 1e-5 * mag + act + 1e-30);
                if (std::fabs(0.75 * (ref_q - ref)) > 1e-5 * mag_q) ++coarser_than_f32;
              }
          }
    CHECK(coarser_than_f32 > 100);  // the first check told the paths apart
  }
  // Off (the default): the f32 rows, whose error is f32 summation's.
  b.set_rounded_activations(false);
  std::vector<float> x(64);
  for (float& v : x) v = u(rng) * std::exp2(e(rng));
  auto wt = b.Alloc({1, 64}, StorageType::kQ8_0);
  auto xt = b.Alloc({1, 64}, StorageType::kF32);
  auto yt = b.Alloc({1, 1}, StorageType::kF32);
  REQUIRE((wt.ok() && xt.ok() && yt.ok()));
  REQUIRE(b.UploadBytes(*wt, RandomWeight(StorageType::kQ8_0, 1, 64, 5)).ok());
  REQUIRE(b.Upload(*xt, x).ok());
  std::vector<float> w(64), y(1);
  REQUIRE(b.Download(*wt, w).ok());
  REQUIRE(b.Gemm(*yt, *xt, false, *wt, true, 1, 0).ok());
  REQUIRE(b.Download(*yt, y).ok());
  const auto [ref, mag] = Dot(w.data(), x.data(), 64);
  CHECK(std::fabs(y[0] - ref) <= 1e-5 * mag);
}

TEST_CASE("quantized weights: MatMulBackward's dinp, Copy and EmbeddingForward dequantize") {
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  for (StorageType type : kTypes) {
    INFO(StorageTypeName(type));
    const int64_t n = 5, k = StorageBlockValues(type) == 1 ? 40 : 2 * StorageBlockValues(type);
    auto wt = b.Alloc({n, k}, type);
    REQUIRE(wt.ok());
    REQUIRE(b.UploadBytes(*wt, RandomWeight(type, n, k, 3)).ok());
    std::vector<float> w(size_t(n * k));
    REQUIRE(b.Download(*wt, w).ok());

    auto ft = b.Alloc({n, k}, StorageType::kF32);
    REQUIRE(ft.ok());
    REQUIRE(b.Copy(*ft, *wt).ok());
    std::vector<float> f(w.size());
    REQUIRE(b.Download(*ft, f).ok());
    CHECK(f == w);

    const std::vector<int32_t> ids = {4, 0, 4, 2};
    auto et = b.Alloc({4, k}, StorageType::kF32);
    REQUIRE(et.ok());
    REQUIRE(b.EmbeddingForward(*et, *wt, ids).ok());
    std::vector<float> e(size_t(4 * k));
    REQUIRE(b.Download(*et, e).ok());
    for (size_t i = 0; i < ids.size(); ++i)
      for (int64_t j = 0; j < k; ++j) CHECK(e[i * k + j] == w[size_t(ids[i] * k + j)]);

    // dinp[3, k] += dout[3, n]·w (the LoRA backward through a frozen base).
    const std::vector<float> dout = Values(size_t(3 * n), 5);
    auto dt = b.Alloc({3, n}, StorageType::kF32);
    auto xt = b.Alloc({3, k}, StorageType::kF32);
    REQUIRE((dt.ok() && xt.ok()));
    REQUIRE(b.Upload(*dt, dout).ok());
    REQUIRE(b.Fill(*xt, 1.0f).ok());
    REQUIRE(b.MatMulBackward(&*xt, nullptr, *dt, *xt, *wt).ok());
    std::vector<float> dx(size_t(3 * k));
    REQUIRE(b.Download(*xt, dx).ok());
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double ref = 1, mag = 1;
        for (int64_t r = 0; r < n; ++r) {
          ref += double(dout[size_t(i * n + r)]) * w[size_t(r * k + j)];
          mag += std::fabs(double(dout[size_t(i * n + r)]) * w[size_t(r * k + j)]);
        }
        REQUIRE(std::fabs(dx[size_t(i * k + j)] - ref) <= 1e-5 * mag);
      }
  }
}

TEST_CASE("quantized tensors: bad shapes and the wrong ops are refused with a message") {
  auto be = CreateCpuBackend({.cpu_threads = 1});
  REQUIRE(be.ok());
  Backend& b = **be;
  auto ragged = b.Alloc({4, 48}, StorageType::kQ8_0);
  REQUIRE_FALSE(ragged.ok());
  CHECK(ragged.status().message().find("multiple of the block size 32") != std::string::npos);
  CHECK_FALSE(b.Alloc({2, 300}, StorageType::kQ4_K).ok());
  auto q = b.Alloc({2, 64}, StorageType::kQ4_0);
  REQUIRE(q.ok());
  CHECK(q->bytes() == 2 * 2 * 18);
  // Upload refuses, UploadBytes wants exactly the block bytes.
  std::vector<float> f(128, 1.0f);
  Status s = b.Upload(*q, f);
  CHECK(s.message().find("quantized tensors take UploadBytes") != std::string::npos);
  std::vector<std::byte> short_bytes(71);
  CHECK(b.UploadBytes(*q, short_bytes).code() == StatusCode::kInvalidArgument);
  auto x = b.Alloc({2, 64}, StorageType::kF32);
  auto norm = b.Alloc({64}, StorageType::kQ4_0);
  auto c = b.Alloc({2, 2}, StorageType::kF32);
  REQUIRE((x.ok() && norm.ok() && c.ok()));
  CHECK(b.Gemm(*c, *q, false, *x, true, 1, 0).message().find("a may not be quantized") !=
        std::string::npos);
  CHECK(b.RmsNormForward(*x, *x, *norm, 1e-5f).code() == StatusCode::kInvalidArgument);
  CHECK(b.Copy(*q, *x).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("WrapHostBytes: a read-only view without a copy, refused as an output") {
  auto be = CreateCpuBackend({.cpu_threads = 1});
  REQUIRE(be.ok());
  Backend& b = **be;
  auto held = std::make_shared<std::vector<std::byte>>(RandomWeight(StorageType::kQ8_0, 3, 64, 7));
  auto w = b.WrapHostBytes({3, 64}, StorageType::kQ8_0, held->data(), held);
  REQUIRE(w.ok());
  CHECK(w->read_only());
  std::vector<std::byte> back(w->bytes());
  REQUIRE(b.DownloadBytes(*w, back).ok());
  CHECK(back == *held);
  CHECK(held.use_count() == 2);  // the tensor keeps the owner alive
  CHECK(b.UploadBytes(*w, back).message().find("read-only") != std::string::npos);

  auto wf = std::make_shared<std::vector<float>>(Values(6, 1));
  auto f = b.WrapHostBytes({2, 3}, StorageType::kF32, wf->data(), wf);
  REQUIRE(f.ok());
  CHECK(b.Fill(*f, 0).code() == StatusCode::kInvalidArgument);
  CHECK(b.Scale(*f, 2).code() == StatusCode::kInvalidArgument);
  auto g = b.Alloc({2, 3}, StorageType::kF32);
  REQUIRE(g.ok());
  CHECK(b.AdamWStep(*f, *g, *g, *g, {}).code() == StatusCode::kInvalidArgument);
  CHECK((*wf)[0] == Values(6, 1)[0]);
  // Misaligned data and a null pointer are refused.
  auto bytes = std::make_shared<std::vector<float>>(8);
  CHECK_FALSE(b.WrapHostBytes({1, 3}, StorageType::kF32,
                              reinterpret_cast<const char*>(bytes->data()) + 1, bytes)
                  .ok());
  CHECK_FALSE(b.WrapHostBytes({1, 3}, StorageType::kF32, nullptr, bytes).ok());
}

}  // namespace
}  // namespace pcfarm
