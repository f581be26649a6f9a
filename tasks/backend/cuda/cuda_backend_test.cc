// CUDA-specific tests: device discovery, registry score, allocation
// failures, and ops at sizes the shared op test does not reach (attention
// over more than one 32-key tile, every Gemm path, long rows, the GGML
// block types) against the CPU backend. Every op is also compared with the CPU backend in
// tasks/backend/backend_ops_test.cc, which runs on CUDA where it can be
// created.
//
// Without a CUDA driver or GPU (CI, most developer machines) the tests that
// need a device print "skipped: <reason>" and return; what can be checked
// without one (clear kUnavailable statuses, score 0) is still checked.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/backend/cuda/cuda_backend.h"
#include "tasks/backend/cuda/cuda_devices.h"
#include "tasks/backend/quantized_ops_check.h"
#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

// The CUDA backend on device 0, or null after printing why it is skipped.
std::unique_ptr<Backend> OpenOrSkip(BackendOptions options = {}) {
  auto b = CreateCudaBackend(options);
  if (!b.ok()) {
    WARN("skipped: no usable CUDA device: " << b.status().ToString());
    CHECK(b.status().code() == StatusCode::kUnavailable);
    return nullptr;
  }
  return std::move(b).value();
}

std::unique_ptr<Backend> Cpu() {
  auto b = CreateCpuBackend({});
  REQUIRE(b.ok());
  return std::move(b).value();
}

std::vector<float> Values(size_t n, uint32_t seed, float lo = -1, float hi = 1) {
  std::vector<float> v(n);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& x : v) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = lo + (hi - lo) * static_cast<float>(s >> 40) / static_cast<float>(1 << 24);
  }
  return v;
}

Tensor Put(Backend& b, Shape shape, const std::vector<float>& data,
           StorageType type = StorageType::kF32) {
  auto t = b.Alloc(shape, type);
  REQUIRE(t.ok());
  REQUIRE(b.Upload(*t, data).ok());
  return *t;
}

std::vector<float> Get(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  REQUIRE(b.Download(t, v).ok());
  return v;
}

void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, double atol,
                 double rtol, const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::fabs(double{got[i]} - want[i]) <= atol + rtol * std::fabs(double{want[i]}))) {
      if (bad++ == 0) first = i;
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " out of tolerance"
            << (bad ? ", first at " + std::to_string(first) + ": got " +
                          std::to_string(got[first]) + " want " + std::to_string(want[first])
                    : ""));
  CHECK(bad == 0);
}

TEST_CASE("ListCudaDevices describes every device, or says why there is none") {
  auto devs = ListCudaDevices();
  if (!devs.ok()) {
    WARN("skipped: " << devs.status().ToString());
    CHECK(devs.status().code() == StatusCode::kUnavailable);
    CHECK(devs.status().message().find("cuda") != std::string::npos);
    return;
  }
  REQUIRE(!devs->empty());
  for (const CudaDeviceInfo& d : *devs) {
    INFO(d.ToString());
    CHECK(d.index == static_cast<int>(&d - devs->data()));
    CHECK(!d.name.empty());
    CHECK(d.compute_major >= 3);
    CHECK(d.memory_bytes > 0);
    CHECK(d.free_bytes <= d.memory_bytes);
    CHECK(d.multiprocessors > 0);
    CHECK(!d.pci_bus_id.empty());
    CHECK(d.ToString().find(d.name) == 0);
    if (d.temperature_c) CHECK((*d.temperature_c > 0 && *d.temperature_c < 130));
    if (d.utilization_percent)
      CHECK((*d.utilization_percent >= 0 && *d.utilization_percent <= 100));
    WARN("cuda device " << d.index << ": " << d.ToString() << ", " << d.pci_bus_id
                        << ", utilization "
                        << (d.utilization_percent ? std::to_string(*d.utilization_percent)
                                                  : "n/a")
                        << ", temperature "
                        << (d.temperature_c ? std::to_string(*d.temperature_c) : "n/a"));
  }
  CHECK(GetCudaVersions().driver > 0);
}

TEST_CASE("CUDA score and creation: 0 and kUnavailable without a device, above Vulkan with one") {
  const auto names = RegisteredBackendNames();
  CHECK(std::find(names.begin(), names.end(), "cuda") != names.end());
  CHECK(GetCudaVersions().runtime > 0);  // the linked runtime answers without a driver
  auto devs = ListCudaDevices();
  BackendOptions opt;
  if (!devs.ok()) {
    CHECK(CudaBackendScore(opt) == 0);
    auto b = CreateBackend("cuda", opt);
    REQUIRE(!b.ok());
    CHECK(b.status().code() == StatusCode::kUnavailable);
    CHECK(b.status().message().find("cuda") != std::string::npos);
    // CreateBestBackend falls back to another backend.
    auto best = CreateBestBackend(opt);
    REQUIRE(best.ok());
    CHECK((*best)->name() != "cuda");
    WARN("skipped (the device half of this test): " << devs.status().ToString());
    return;
  }
  CHECK(CudaBackendScore(opt) > 40);  // VulkanBackendScore's best is 40
  opt.device_index = static_cast<int>(devs->size());
  CHECK(CudaBackendScore(opt) == 0);
  auto b = CreateCudaBackend(opt);
  CHECK(b.status().code() == StatusCode::kUnavailable);
  CHECK(b.status().message().find("device_index") != std::string::npos);
  auto best = CreateBestBackend({});
  REQUIRE(best.ok());
  CHECK((*best)->name() == "cuda");
}

TEST_CASE("An impossible allocation is kResourceExhausted and the backend stays usable") {
  auto b = OpenOrSkip();
  if (!b) return;
  auto huge = b->Alloc({int64_t{1} << 48}, StorageType::kF32);  // 1 PiB
  REQUIRE(!huge.ok());
  CHECK(huge.status().code() == StatusCode::kResourceExhausted);
  Tensor t = Put(*b, {3}, {1, 2, 3});
  REQUIRE(b->Scale(t, 2).ok());
  CHECK(Get(*b, t) == std::vector<float>{2, 4, 6});

  BackendOptions limited;
  limited.memory_limit_bytes = 1 << 20;
  auto small = OpenOrSkip(limited);
  REQUIRE(small);
  auto over = small->Alloc({1 << 19}, StorageType::kF32);  // 2 MiB
  CHECK(over.status().code() == StatusCode::kResourceExhausted);
  CHECK(small->info().memory_bytes == (1u << 20));
  {
    auto fits = small->Alloc({1 << 17}, StorageType::kF32);  // 512 KiB
    CHECK(fits.ok());
  }
  CHECK(small->Alloc({1 << 17}, StorageType::kF32).ok());  // the first was returned
}

TEST_CASE("CUDA Gemm paths match the CPU: sgemm, widened 16-bit tiles, GemmEx, gemv") {
  auto b = OpenOrSkip();
  if (!b) return;
  auto cpu = Cpu();
  const int64_t m = 37, n = 300, k = 129;
  const auto x = Values(m * k, 1), w = Values(n * k, 2), c0 = Values(m * n, 3);
  for (StorageType wt : {StorageType::kF32, StorageType::kF16, StorageType::kBF16}) {
    for (StorageType xt : {StorageType::kF32, wt}) {
      for (int64_t rows : {m, int64_t{1}, int64_t{8}}) {
        INFO("w " << StorageTypeName(wt) << " x " << StorageTypeName(xt) << " rows " << rows);
        std::vector<float> xs(x.begin(), x.begin() + rows * k), cs(c0.begin(),
                                                                   c0.begin() + rows * n);
        auto run = [&](Backend& be) {
          Tensor xt_t = Put(be, {rows, k}, xs, xt), wt_t = Put(be, {n, k}, w, wt);
          Tensor c = Put(be, {rows, n}, cs);
          REQUIRE(be.Gemm(c, xt_t, false, wt_t, true, 0.5f, -1.0f).ok());
          return Get(be, c);
        };
        // K = 129 products of magnitude <= 1 in f32.
        ExpectClose(run(*b), run(*cpu), 1e-4, 1e-4, "gemm");
      }
    }
  }
}

TEST_CASE("CUDA attention over long packed sequences (several 32-key tiles) matches the CPU") {
  auto b = OpenOrSkip();
  if (!b) return;
  auto cpu = Cpu();
  const std::vector<int32_t> starts = {0, 70, 71, 150};
  const int64_t n = 150, hq = 6, hkv = 2, d = 40;
  const auto q = Values(n * hq * d, 4, -2, 2), k = Values(n * hkv * d, 5, -2, 2);
  const auto v = Values(n * hkv * d, 6), r = Values(n * hq * d, 7);
  auto run = [&](Backend& be) {
    Tensor qt = Put(be, {n, hq, d}, q), kt = Put(be, {n, hkv, d}, k);
    Tensor vt = Put(be, {n, hkv, d}, v), rt = Put(be, {n, hq, d}, r);
    Tensor out = *be.Alloc({n, hq, d}, StorageType::kF32);
    Tensor lse = *be.Alloc({n, hq}, StorageType::kF32);
    Tensor dq = *be.Alloc({n, hq, d}, StorageType::kF32);
    Tensor dk = *be.Alloc({n, hkv, d}, StorageType::kF32);
    Tensor dv = *be.Alloc({n, hkv, d}, StorageType::kF32);
    for (const Tensor* t : {&dq, &dk, &dv}) REQUIRE(be.Fill(*t, 0).ok());
    REQUIRE(be.AttentionForward(out, &lse, qt, kt, vt, starts).ok());
    REQUIRE(be.AttentionBackward(dq, dk, dv, rt, qt, kt, vt, out, lse, starts).ok());
    // Decode: every row against a cache holding the sequences in slots 2, 0, 1.
    Tensor kc = *be.Alloc({3, 80, hkv, d}, StorageType::kF32);
    Tensor vc = *be.Alloc({3, 80, hkv, d}, StorageType::kF32);
    Tensor dec = *be.Alloc({n, hq, d}, StorageType::kF32);
    std::vector<int32_t> slots, pos;
    for (int32_t i = 0; i < n; ++i) {
      const int s = i < 70 ? 0 : i < 71 ? 1 : 2;
      slots.push_back(s == 0 ? 2 : s == 1 ? 0 : 1);
      pos.push_back(i - starts[static_cast<size_t>(s)]);
    }
    REQUIRE(be.KvCacheWrite(kc, kt, slots, pos).ok());
    REQUIRE(be.KvCacheWrite(vc, vt, slots, pos).ok());
    REQUIRE(be.AttentionDecode(dec, qt, kc, vc, slots, pos).ok());
    return std::vector<std::vector<float>>{Get(be, out), Get(be, lse), Get(be, dq),
                                           Get(be, dk),  Get(be, dv),  Get(be, dec)};
  };
  const auto got = run(*b), want = run(*cpu);
  const char* names[] = {"out", "lse", "dq", "dk", "dv", "decode"};
  // Softmax over up to 79 keys, dot products of 40 terms, f32.
  for (size_t i = 0; i < got.size(); ++i) ExpectClose(got[i], want[i], 1e-4, 1e-4, names[i]);
  // Deterministic: the same call gives the same bits.
  const auto again = run(*b);
  for (size_t i = 0; i < got.size(); ++i) CHECK(again[i] == got[i]);
}

TEST_CASE("CUDA row ops on long rows match the CPU") {
  auto b = OpenOrSkip();
  if (!b) return;
  auto cpu = Cpu();
  const int64_t rows = 9, c = 3000, vocab = 5003;
  const auto x = Values(rows * c, 8, -3, 3), w = Values(c, 9), dy = Values(rows * c, 10);
  const auto logits = Values(rows * vocab, 11, -8, 8);
  const std::vector<int32_t> targets = {0, 5002, 17, -1, 4000, 3, 3, 2500, 1};
  const std::vector<float> weights = {1, 0.5f, 2, 0, 1, 1, 1, 1, 0.25f};
  const std::vector<int32_t> ids = {3, 1, 3, 3, 0, 8, 1, 3, 2};
  auto run = [&](Backend& be, double* loss) {
    Tensor xt = Put(be, {rows, c}, x), wt = Put(be, {c}, w, StorageType::kBF16);
    Tensor dyt = Put(be, {rows, c}, dy), out = *be.Alloc({rows, c}, StorageType::kF32);
    Tensor dx = *be.Alloc({rows, c}, StorageType::kF32), dw = *be.Alloc({c}, StorageType::kF32);
    REQUIRE(be.Fill(dx, 0).ok());
    REQUIRE(be.Fill(dw, 0).ok());
    REQUIRE(be.RmsNormForward(out, xt, wt, 1e-5f).ok());
    REQUIRE(be.RmsNormBackward(dx, &dw, dyt, xt, wt, 1e-5f).ok());
    Tensor lt = Put(be, {rows, vocab}, logits), dl = *be.Alloc({rows, vocab}, StorageType::kF32);
    Tensor losses = *be.Alloc({rows}, StorageType::kF32);
    REQUIRE(be.Fill(dl, 0).ok());
    auto sums = be.CrossEntropyForward(&losses, lt, targets, weights);
    REQUIRE(sums.ok());
    *loss = sums->mean();
    REQUIRE(be.CrossEntropyBackward(dl, lt, targets, weights, 0.1f).ok());
    Tensor table = *be.Alloc({10, c}, StorageType::kF32);
    REQUIRE(be.Fill(table, 0.5f).ok());
    REQUIRE(be.EmbeddingBackward(table, dyt, ids).ok());
    auto ss = be.SumSquares(xt);
    REQUIRE(ss.ok());
    return std::vector<std::vector<float>>{Get(be, out),    Get(be, dx),
                                           Get(be, dw),     Get(be, losses),
                                           Get(be, dl),     Get(be, table),
                                           {static_cast<float>(*ss)}};
  };
  double loss_gpu = 0, loss_cpu = 0;
  const auto got = run(*b, &loss_gpu), want = run(*cpu, &loss_cpu);
  const char* names[] = {"rmsnorm", "rmsnorm dx", "rmsnorm dw", "ce losses",
                         "ce dlogits", "embedding dtable", "sum squares"};
  for (size_t i = 0; i < got.size(); ++i) ExpectClose(got[i], want[i], 1e-4, 1e-4, names[i]);
  CHECK(std::fabs(loss_gpu - loss_cpu) < 1e-4);
}

TEST_CASE("CUDA holds GGML quantized weights and its products equal the CPU's on the dequantized weights") {
  auto cb = OpenOrSkip();
  if (!cb) return;
  auto cpu = Cpu();
  testing::CheckQuantizedWeightOps(*cb, *cpu, 7);
}

}  // namespace
}  // namespace pcfarm
