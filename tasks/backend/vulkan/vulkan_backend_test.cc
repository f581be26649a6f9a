// Vulkan-specific tests: device discovery, registry score, allocation
// failures, pipeline reuse and batching. Every op is compared with the CPU
// backend in tasks/backend/backend_ops_test.cc, which runs on Vulkan too.
//
// These run on whatever Vulkan device 0 is (lavapipe in CI). On a machine
// without a Vulkan loader or device they check that the failure is a clear
// kUnavailable status, and skip the rest with a printed reason.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "tasks/backend/quantized_ops_check.h"
#include "tasks/backend/registry.h"
#include "tasks/backend/vulkan/vulkan_backend.h"
#include "tasks/backend/vulkan/vulkan_devices.h"
#include "tasks/backend/vulkan/vulkan_internal.h"

namespace pcfarm {
namespace {

// The Vulkan backend on device 0, or null (with a printed reason).
std::unique_ptr<vk::VulkanBackend> OpenOrSkip(BackendOptions options = {}) {
  auto b = vk::VulkanBackend::Create(options);
  if (!b.ok()) {
    WARN("no Vulkan device here, skipping: " << b.status().ToString());
    CHECK(b.status().code() == StatusCode::kUnavailable);
    return nullptr;
  }
  return std::move(b).value();
}

using testing::backend_check::Close;
using testing::backend_check::Get;
using testing::backend_check::Put;

TEST_CASE("ListVulkanDevices describes every device") {
  auto devs = ListVulkanDevices();
  if (!devs.ok()) {
    WARN("no Vulkan here: " << devs.status().ToString());
    CHECK(devs.status().code() == StatusCode::kUnavailable);
    return;
  }
  for (const VulkanDeviceInfo& d : *devs) {
    INFO(d.ToString());
    CHECK(d.index == static_cast<int>(&d - devs->data()));
    CHECK(!d.name.empty());
    CHECK(!d.vendor.empty());
    CHECK(d.memory_bytes > 0);
    CHECK(d.max_buffer_bytes >= (uint64_t{1} << 27));  // Vulkan's minimum is 128 MiB
    CHECK(d.api_version >= VK_API_VERSION_1_0);
    CHECK(d.ToString().find(d.name) == 0);
    CHECK(!d.driver.empty());
    WARN("vulkan device " << d.index << ": " << d.ToString() << ", " << d.driver
                          << ", subgroup arithmetic " << d.subgroup_arithmetic
                          << ", largest buffer " << d.max_buffer_bytes);
  }
}

TEST_CASE("Vulkan score: a CPU implementation is never preferred over the CPU backend") {
  auto devs = ListVulkanDevices();
  BackendOptions opt;
  if (!devs.ok() || devs->empty()) {
    CHECK(VulkanBackendScore(opt) == 0);
    return;
  }
  const int score = VulkanBackendScore(opt);
  if ((*devs)[0].type == VulkanDeviceType::kCpu) CHECK(score == 0);
  if ((*devs)[0].type == VulkanDeviceType::kDiscreteGpu) CHECK(score > 1);
  opt.device_index = static_cast<int>(devs->size());  // out of range
  CHECK(VulkanBackendScore(opt) == 0);
  auto b = CreateVulkanBackend(opt);
  CHECK(b.status().code() == StatusCode::kUnavailable);
  CHECK(b.status().message().find("device_index") != std::string::npos);
  // The registry knows it by name.
  const auto names = RegisteredBackendNames();
  CHECK(std::find(names.begin(), names.end(), "vulkan") != names.end());
}

TEST_CASE("Vulkan impossible allocations are ResourceExhausted, not a crash") {
  auto b = OpenOrSkip();
  if (!b) return;
  // 4 TiB: beyond any heap and any buffer the device allows.
  auto huge = b->Alloc({int64_t{1} << 40}, StorageType::kF32);
  CHECK(huge.status().code() == StatusCode::kResourceExhausted);
  CHECK(huge.status().message().find("vulkan") != std::string::npos);
  // Just beyond the largest buffer.
  const int64_t too_big = static_cast<int64_t>(b->device_info().max_buffer_bytes / 4) + 1;
  auto over = b->Alloc({too_big}, StorageType::kF32);
  CHECK(over.status().code() == StatusCode::kResourceExhausted);
  // The backend still works afterwards.
  auto t = b->Alloc({4}, StorageType::kF32);
  REQUIRE(t.ok());
  REQUIRE(b->Fill(*t, 3).ok());
  CHECK(Get(*b, *t) == std::vector<float>(4, 3.0f));
}

TEST_CASE("Vulkan memory limit is enforced and freed memory is returned") {
  BackendOptions opt;
  opt.memory_limit_bytes = 1000;
  auto b = OpenOrSkip(opt);
  if (!b) return;
  {
    auto t = b->Alloc({200}, StorageType::kF32);
    REQUIRE(t.ok());
    REQUIRE(b->Fill(*t, 1).ok());  // in flight when the handle goes
    auto t2 = b->Alloc({101}, StorageType::kF16);
    CHECK(t2.status().code() == StatusCode::kResourceExhausted);
    CHECK(t2.status().message().find("memory limit") != std::string::npos);
    CHECK(b->Alloc({100}, StorageType::kF16).ok());
  }
  CHECK(b->Alloc({250}, StorageType::kF32).ok());
  CHECK(b->info().memory_bytes == 1000);
}

TEST_CASE("Vulkan pipelines are created once and reused; ops are batched") {
  auto b = OpenOrSkip();
  if (!b) return;
  auto x = b->Alloc({1000}, StorageType::kF32);
  REQUIRE(x.ok());
  REQUIRE(b->Fill(*x, 1).ok());
  const int pipelines = b->pipelines_created();
  const int64_t submits = b->submits();
  for (int i = 0; i < 100; ++i) REQUIRE(b->Axpy(*x, 0.5f, *x).ok());  // x *= 1.5
  CHECK(b->pipelines_created() == pipelines);  // elementwise already built
  CHECK(b->submits() == submits);              // nothing submitted yet
  REQUIRE(b->Scale(*x, 0.0f).ok());
  REQUIRE(b->Synchronize().ok());
  CHECK(b->submits() == submits + 1);  // 101 ops, one submit
  CHECK(Get(*b, *x) == std::vector<float>(1000, 0.0f));
  // More dispatches than one batch holds are split, not lost.
  REQUIRE(b->Fill(*x, 0).ok());
  const int n = static_cast<int>(vk::VulkanBackend::kMaxDispatchesPerBatch) + 10;
  auto one = b->Alloc({1000}, StorageType::kF32);
  REQUIRE(one.ok());
  REQUIRE(b->Fill(*one, 1).ok());
  for (int i = 0; i < n; ++i) REQUIRE(b->Add(*x, *x, *one).ok());
  CHECK(Get(*b, *x) == std::vector<float>(1000, static_cast<float>(n)));
  CHECK(!b->info().description.empty());
}

TEST_CASE("Vulkan reports its device in info()") {
  auto b = OpenOrSkip();
  if (!b) return;
  const DeviceInfo info = b->info();
  CHECK(info.description.find(b->device_info().name) != std::string::npos);
  CHECK(info.memory_bytes == b->device_info().memory_bytes);
  CHECK(b->name() == "vulkan");
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

// Larger shapes than backend_ops_test uses, so that every shader runs more
// than one chunk / workgroup per row (attention over > 64 keys, rows wider
// than 256, more blocks than one), compared with the CPU backend, with both
// the subgroup and the shared-memory reductions.
class Lcg {
 public:
  explicit Lcg(uint64_t s) : s_(s) {}
  float Next(float lo = -1, float hi = 1) {
    s_ = s_ * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * static_cast<float>(s_ >> 40) / static_cast<float>(1 << 24);
  }
  std::vector<float> Values(size_t n, float lo = -1, float hi = 1) {
    std::vector<float> v(n);
    for (auto& x : v) x = Next(lo, hi);
    return v;
  }

 private:
  uint64_t s_;
};

using Named = std::vector<std::pair<const char*, std::vector<float>>>;

Named RunLargeOps(Backend& be) {
  Lcg rng(42);
  Named out;
  // Attention: sequences of 150 and 70 rows (3 and 2 key chunks), GQA 8:2,
  // D = 80 (more than one column per invocation of a 64-wide workgroup).
  const std::vector<int32_t> starts = {0, 150, 220};
  const int64_t n = 220, hq = 8, hkv = 2, d = 80;
  Tensor q = Put(be, {n, hq, d}, rng.Values(n * hq * d, -2, 2));
  Tensor k = Put(be, {n, hkv, d}, rng.Values(n * hkv * d, -2, 2));
  Tensor v = Put(be, {n, hkv, d}, rng.Values(n * hkv * d));
  Tensor r = Put(be, {n, hq, d}, rng.Values(n * hq * d));
  Tensor o = Put(be, {n, hq, d}, std::vector<float>(n * hq * d, 0));
  Tensor lse = Put(be, {n, hq}, std::vector<float>(n * hq, 0));
  Tensor dq = Put(be, {n, hq, d}, std::vector<float>(n * hq * d, 0));
  Tensor dk = Put(be, {n, hkv, d}, std::vector<float>(n * hkv * d, 0));
  Tensor dv = Put(be, {n, hkv, d}, std::vector<float>(n * hkv * d, 0));
  REQUIRE(be.AttentionForward(o, &lse, q, k, v, starts).ok());
  REQUIRE(be.AttentionBackward(dq, dk, dv, r, q, k, v, o, lse, starts).ok());
  out.push_back({"attn out", Get(be, o)});
  out.push_back({"attn lse", Get(be, lse)});
  out.push_back({"attn dq", Get(be, dq)});
  out.push_back({"attn dk", Get(be, dk)});
  out.push_back({"attn dv", Get(be, dv)});
  // Decode of the last row of sequence 0 against a cache written in slot 1.
  Tensor kc = Put(be, {2, 160, hkv, d}, std::vector<float>(2 * 160 * hkv * d, 0));
  Tensor vc = Put(be, {2, 160, hkv, d}, std::vector<float>(2 * 160 * hkv * d, 0));
  std::vector<int32_t> slots(150, 1), pos(150);
  for (int32_t i = 0; i < 150; ++i) pos[static_cast<size_t>(i)] = i;
  const std::vector<float> kall = Get(be, k), vall = Get(be, v);
  Tensor k0 = Put(be, {150, hkv, d}, std::vector<float>(kall.begin(), kall.begin() + 150 * hkv * d));
  Tensor v0 = Put(be, {150, hkv, d}, std::vector<float>(vall.begin(), vall.begin() + 150 * hkv * d));
  REQUIRE(be.KvCacheWrite(kc, k0, slots, pos).ok());
  REQUIRE(be.KvCacheWrite(vc, v0, slots, pos).ok());
  std::vector<float> qall = Get(be, q);
  Tensor q1 = Put(be, {1, hq, d},
                  std::vector<float>(qall.begin() + 149 * hq * d, qall.begin() + 150 * hq * d));
  Tensor o1 = Put(be, {1, hq, d}, std::vector<float>(hq * d, 0));
  REQUIRE(be.AttentionDecode(o1, q1, kc, vc, std::vector<int32_t>{1},
                             std::vector<int32_t>{149})
              .ok());
  out.push_back({"decode", Get(be, o1)});
  // RMSNorm over rows of 1000, and its backward.
  const int64_t rows = 7, c = 1000;
  Tensor x = Put(be, {rows, c}, rng.Values(rows * c));
  Tensor w = Put(be, {c}, rng.Values(c, 0.5, 1.5));
  Tensor y = Put(be, {rows, c}, std::vector<float>(rows * c, 0));
  Tensor dy = Put(be, {rows, c}, rng.Values(rows * c));
  Tensor dx = Put(be, {rows, c}, std::vector<float>(rows * c, 0));
  Tensor dw = Put(be, {c}, std::vector<float>(c, 0));
  REQUIRE(be.RmsNormForward(y, x, w, 1e-5f).ok());
  REQUIRE(be.RmsNormBackward(dx, &dw, dy, x, w, 1e-5f).ok());
  out.push_back({"rmsnorm y", Get(be, y)});
  out.push_back({"rmsnorm dx", Get(be, dx)});
  out.push_back({"rmsnorm dw", Get(be, dw)});
  // Cross-entropy over a vocabulary of 3000.
  const int64_t tokens = 5, vocab = 3000;
  Tensor logits = Put(be, {tokens, vocab}, rng.Values(tokens * vocab, -8, 8));
  const std::vector<int32_t> targets = {0, 2999, 17, 1500, 3};
  const std::vector<float> weights = {1, 0.5f, 0, 2, 1};
  Tensor losses = Put(be, {tokens}, std::vector<float>(tokens, 0));
  Tensor dl = Put(be, {tokens, vocab}, std::vector<float>(tokens * vocab, 0));
  Tensor lp = Put(be, {tokens}, std::vector<float>(tokens, 0));
  auto sums = be.CrossEntropyForward(&losses, logits, targets, weights);
  REQUIRE(sums.ok());
  REQUIRE(be.CrossEntropyBackward(dl, logits, targets, weights, 0.25f).ok());
  REQUIRE(be.LogProbs(lp, logits, targets).ok());
  out.push_back({"ce losses", Get(be, losses)});
  out.push_back({"ce mean", {static_cast<float>(sums->mean())}});
  out.push_back({"ce dlogits", Get(be, dl)});
  out.push_back({"logprobs", Get(be, lp)});
  // RoPE at positions up to 8191 (large angles).
  const int64_t rt = 6, rh = 2, rd = 64;
  std::vector<float> inv(rd / 2);
  for (int64_t j = 0; j < rd / 2; ++j)
    inv[static_cast<size_t>(j)] = static_cast<float>(std::pow(10000.0, -2.0 * j / rd));
  Tensor ft = Put(be, {rd / 2}, inv);
  Tensor rx = Put(be, {rt, rh, rd}, rng.Values(rt * rh * rd));
  Tensor ry = Put(be, {rt, rh, rd}, std::vector<float>(rt * rh * rd, 0));
  REQUIRE(be.RopeForward(ry, rx, ft, std::vector<int32_t>{0, 1, 100, 1000, 4097, 8191}).ok());
  out.push_back({"rope", Get(be, ry)});
  // Gemm: decode-shaped (gemv path, M = 1 and 8, BF16 weight, beta != 0)
  // and prefill-shaped (tiled, M = 70), K = 700.
  for (int64_t m : {1, 8, 70}) {
    const int64_t gk = 700, gn = 300;
    Tensor ga = Put(be, {m, gk}, rng.Values(m * gk));
    auto gw = be.Alloc({gn, gk}, StorageType::kBF16);
    REQUIRE(gw.ok());
    REQUIRE(be.Upload(*gw, rng.Values(gn * gk)).ok());
    Tensor gc = Put(be, {m, gn}, rng.Values(m * gn));
    REQUIRE(be.Gemm(gc, ga, false, *gw, true, 0.5f, 2.0f).ok());
    out.push_back({"gemm", Get(be, gc)});
  }
  // SumSquares over several blocks.
  Tensor big = Put(be, {70000}, rng.Values(70000));
  auto ss = be.SumSquares(big);
  REQUIRE(ss.ok());
  out.push_back({"sumsq", {static_cast<float>(*ss)}});
  return out;
}

TEST_CASE("Vulkan matches the CPU on larger shapes, with and without subgroups") {
  auto vb = OpenOrSkip();
  if (!vb) return;
  auto cpu = CreateBackend("cpu");
  REQUIRE(cpu.ok());
  const Named want = RunLargeOps(**cpu);
  for (bool subgroups : {true, false}) {
    if (subgroups && !vb->device_info().subgroup_arithmetic) continue;
    vb->set_use_subgroups(subgroups);
    INFO("subgroups " << subgroups);
    const Named got = RunLargeOps(*vb);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      // f32 with sums of up to a few thousand terms: 1e-4 relative + absolute
      // (the ops' own tolerances in backend_ops_test are 1e-5 on small shapes).
      Close(got[i].second, want[i].second, 1e-4, 1e-4, got[i].first);
    }
  }
}

TEST_CASE("Vulkan holds GGML quantized weights and its products equal the CPU's on the dequantized weights") {
  auto vb = OpenOrSkip();
  if (!vb) return;
  auto cpu = CreateBackend("cpu");
  REQUIRE(cpu.ok());
  for (bool subgroups : {true, false}) {
    if (subgroups && !vb->device_info().subgroup_arithmetic) continue;
    vb->set_use_subgroups(subgroups);
    INFO("subgroups " << subgroups);
    testing::CheckQuantizedWeightOps(*vb, **cpu, 7);
  }
}

}  // namespace
}  // namespace pcfarm
