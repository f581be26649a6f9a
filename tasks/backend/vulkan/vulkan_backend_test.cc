// Vulkan-specific tests: device discovery, registry score, allocation
// failures, pipeline reuse and batching. Every op is compared with the CPU
// backend in tasks/backend/backend_ops_test.cc, which runs on Vulkan too.
//
// These run on whatever Vulkan device 0 is (lavapipe in CI). On a machine
// without a Vulkan loader or device they check that the failure is a clear
// kUnavailable status, and skip the rest with a printed reason.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

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

std::vector<float> Get(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  REQUIRE(b.Download(t, v).ok());
  return v;
}

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
    WARN("vulkan device " << d.index << ": " << d.ToString());
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
