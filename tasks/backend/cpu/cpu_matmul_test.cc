// CPU backend internals: the single-row Gemm paths (cpu_matmul.cc: the row-dot kernel
// for F32/BF16 [N, K] weights, cblas_sgemv otherwise, converted tiles for
// F16) against a double reference: every transpose, alpha/beta, beta 0 over
// NaN, row counts that are not multiples of the kernel's 4 or the pool's
// chunks; the OpenBLAS kernel choice (blas.h); the vectorised exp of
// cpu_vec.cc against double exp. backend_ops_test covers M > 1 on every
// backend.
#include <catch2/catch.hpp>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <limits>
#include <random>
#include <vector>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm {
namespace {

std::vector<float> Values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

TEST_CASE("Gemm with one row matches a double reference") {
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  Backend& b = **be;
  for (int64_t n : {5, 33, 2048})
    for (int64_t k : {7, 768})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (float beta : {0.0f, -0.5f})
          for (StorageType type : {StorageType::kF32, StorageType::kBF16, StorageType::kF16}) {
            INFO("n " << n << " k " << k << " ta " << ta << " tb " << tb << " beta " << beta
                      << " b " << StorageTypeName(type));
            const std::vector<float> av = Values(size_t(k), 1);
            std::vector<float> bv = Values(size_t(n * k), 2);
            std::vector<float> c0 = Values(size_t(n), 3);
            if (beta == 0) c0.assign(size_t(n), std::numeric_limits<float>::quiet_NaN());
            auto at = b.Alloc(ta ? Shape{k, 1} : Shape{1, k}, StorageType::kF32);
            auto bt = b.Alloc(tb ? Shape{n, k} : Shape{k, n}, type);
            auto ct = b.Alloc({1, n}, StorageType::kF32);
            REQUIRE((at.ok() && bt.ok() && ct.ok()));
            REQUIRE(b.Upload(*at, av).ok());
            REQUIRE(b.Upload(*bt, bv).ok());
            REQUIRE(b.Download(*bt, bv).ok());  // the stored (rounded) values
            REQUIRE(b.Upload(*ct, c0).ok());
            const float alpha = 0.75f;
            REQUIRE(b.Gemm(*ct, *at, ta, *bt, tb, alpha, beta).ok());
            std::vector<float> got(static_cast<size_t>(n));
            REQUIRE(b.Download(*ct, got).ok());
            for (int64_t j = 0; j < n; ++j) {
              double want = 0;
              for (int64_t i = 0; i < k; ++i)
                want += double(av[i]) * double(tb ? bv[j * k + i] : bv[i * n + j]);
              want = alpha * want + (beta == 0 ? 0.0 : beta * double(c0[j]));
              // k <= 768 f32 products of magnitude <= 1.
              REQUIRE(got[j] == Approx(want).margin(1e-4));
            }
          }
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

TEST_CASE("OpenBLAS runs the kernels this CPU supports") {
  // blas::Load() sets OPENBLAS_CORETYPE before it loads OpenBLAS, unless
  // the environment already had it.
  REQUIRE(blas::Load().ok());
  const char* want = blas::CoreForThisCpu();
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  INFO("CPU asks for " << (want ? want : "(OpenBLAS's choice)") << ", OPENBLAS_CORETYPE="
                       << (env ? env : "(unset)") << ", OpenBLAS runs "
                       << blas::CoreName());
  if (want == nullptr) {
    SUCCEED("no AVX2 or AVX-512: OpenBLAS chooses");
    return;
  }
  REQUIRE(env != nullptr);
  if (Lower(env) != Lower(want)) {
    SUCCEED("OPENBLAS_CORETYPE was set by the user");
    return;
  }
  CHECK(Lower(blas::CoreName()) == Lower(want));
  auto be = CreateCpuBackend({.cpu_threads = 1});
  REQUIRE(be.ok());
  CHECK_THAT((*be)->info().description, Catch::Contains(blas::CoreName()));
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

TEST_CASE("The vectorised exp is within 2e-7 of exp and keeps its edges") {
  // Every 997th float bit pattern between -87.3 and 88, plus the edges.
  double worst = 0;
  float worst_x = 0;
  for (float x = -87.3f; x < 88.0f; x = std::nextafter(x, 100.0f)) {
    const double want = std::exp(double{x}), got = cpu::VecExpF(x);
    const double rel = std::abs(got - want) / want;
    if (rel > worst) {
      worst = rel;
      worst_x = x;
    }
    for (int skip = 0; skip < 996 && x < 88.0f; ++skip) x = std::nextafter(x, 100.0f);
  }
  INFO("worst relative error " << worst << " at " << worst_x);
  CHECK(worst < 2e-7);
  CHECK(cpu::VecExpF(0.0f) == 1.0f);
  CHECK(cpu::VecExpF(-88.0f) == 0.0f);
  CHECK(cpu::VecExpF(-INFINITY) == 0.0f);
  CHECK(cpu::VecExpF(1000.0f) == Approx(std::exp(88.0f)));
  CHECK(std::isnan(cpu::VecExpF(NAN)));
  // The row kernels use the same exp: a softmax row sums to 1.
  std::vector<float> row = Values(1000, 9);
  const float mx = cpu::RowMax(row.data(), 1000);
  const float sum = cpu::RowExpInPlace(row.data(), 1000, mx);
  double total = 0;
  for (float p : row) total += p / sum;
  CHECK(total == Approx(1.0).epsilon(1e-5));
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

TEST_CASE("The CPU backend reuses a freed large block for the same size") {
  auto be = CreateCpuBackend({.cpu_threads = 1});
  REQUIRE(be.ok());
  Backend& b = **be;
  void* first = nullptr;
  {
    auto t = b.Alloc(Shape({512, 1024}), StorageType::kF32);  // 2 MiB
    REQUIRE(t.ok());
    first = cpu::Raw(*t);
  }
  auto again = b.Alloc(Shape({1024, 512}), StorageType::kF32);  // same bytes
  REQUIRE(again.ok());
  CHECK(cpu::Raw(*again) == first);
  // The reused block is a working buffer of the new tensor's size.
  std::vector<float> v = Values(size_t(512 * 1024), 4), back(v.size());
  REQUIRE(b.Upload(*again, v).ok());
  REQUIRE(b.Download(*again, back).ok());
  CHECK(back == v);
  // Another size is not served from the cache.
  auto other = b.Alloc(Shape({512, 1025}), StorageType::kF32);
  REQUIRE(other.ok());
  CHECK(cpu::Raw(*other) != first);
}

}  // namespace
}  // namespace pcfarm
