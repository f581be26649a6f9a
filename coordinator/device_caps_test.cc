#include "coordinator/device_caps.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

namespace pcfarm {
namespace {

constexpr int64_t kGiB = int64_t(1) << 30;

DeviceCaps Caps(const std::string& json, double* gflops = nullptr) {
  DeviceCaps caps;
  double g = 0;
  CapsFromDevices(json, &caps, gflops ? gflops : &g);
  return caps;
}

// "backend=GiB" per device, e.g. {"cpu=16", "cuda=2"}.
std::vector<std::string> Described(const DeviceCaps& caps) {
  std::vector<std::string> out;
  for (const DeviceCap& d : caps.devices) {
    char gib[32];
    std::snprintf(gib, sizeof gib, "%g", double(d.memory_bytes) / double(kGiB));
    out.push_back(d.backend + "=" + gib);
  }
  return out;
}

using Names = std::vector<std::string>;

TEST_CASE("a device's usable memory is at most the free memory it reported",
          "[device_caps]") {
  double gflops = 0;
  DeviceCaps c = Caps(R"([{"backend":"cpu","memory_bytes":17179869184,"gflops":50},
                          {"backend":"cuda","memory_bytes":8589934592,
                           "free_bytes":2147483648,"gflops":900}])",
                      &gflops);
  CHECK(Described(c) == Names{"cpu=16", "cuda=2"});  // the CPU's: nothing free said
  CHECK(c.MemoryFor("") == 16 * kGiB);
  CHECK(c.MemoryFor("cuda") == 2 * kGiB);
  CHECK(c.MemoryFor("vulkan") == -1);
  CHECK(gflops == 900);
  // The CPU says 3 GiB are free: the GPU's 2 GiB and the CPU's 3 GiB.
  c = Caps(R"([{"backend":"cpu","memory_bytes":17179869184,"free_bytes":3221225472},
               {"backend":"cuda","memory_bytes":8589934592,"free_bytes":2147483648}])");
  CHECK(Described(c) == Names{"cpu=3", "cuda=2"});
  // Free above the total (a confused worker) counts as the total.
  c = Caps(R"([{"backend":"vulkan","memory_bytes":1073741824,"free_bytes":4294967296}])");
  CHECK(Described(c) == Names{"vulkan=1"});
  // 0 free is unknown, not empty.
  c = Caps(R"([{"backend":"vulkan","memory_bytes":1073741824,"free_bytes":0}])");
  CHECK(Described(c) == Names{"vulkan=1"});
  // No backend is the CPU; entries that are not objects are skipped.
  c = Caps(R"([{"memory_bytes":1073741824},7,{"backend":"cuda","memory_bytes":"x"}])");
  CHECK(Described(c) == Names{"cpu=1", "cuda=0"});
}

TEST_CASE("devices that are not a device list are the CPU of unknown memory",
          "[device_caps]") {
  for (const char* bad : {"", "{not json", "{}", "[]", "[1,\"x\",null]",
                          R"([{"backend":7,"memory_bytes":"lots","free_bytes":-5}])"}) {
    INFO(bad);
    DeviceCaps c = Caps(bad);
    CHECK(Described(c) == Names{"cpu=0"});
    CHECK(c.MemoryFor("cpu") == 0);
  }
}

TEST_CASE("READY's free memory updates the devices; big moves are material",
          "[device_caps]") {
  const nlohmann::json stored = nlohmann::json::parse(
      R"([{"backend":"cpu","memory_bytes":17179869184,"free_bytes":8589934592},
          {"backend":"cuda","memory_bytes":8589934592}])");
  nlohmann::json updated;
  bool material = true;
  // 100 MiB less on a 16 GiB CPU (threshold 512 MiB), unknown stays unknown.
  std::vector<uint64_t> free = {uint64_t(8 * kGiB) - (100 << 20), 0};
  REQUIRE(ApplyDeviceFree(stored, free, &updated, &material).ok());
  CHECK_FALSE(material);
  CHECK(updated[0]["free_bytes"] == free[0]);
  CHECK(updated[1]["free_bytes"] == 0);
  CHECK(updated[0]["name"].is_null());  // nothing else added or lost
  CHECK(updated[1]["backend"] == "cuda");
  // The GPU's free memory becomes known: material.
  free = {uint64_t(8 * kGiB), uint64_t(6 * kGiB)};
  REQUIRE(ApplyDeviceFree(stored, free, &updated, &material).ok());
  CHECK(material);
  CHECK(Described(Caps(updated.dump())) == Names{"cpu=8", "cuda=6"});
  // The CPU's drops by 6 GiB (a game started): material, and caps shrink.
  free = {uint64_t(2 * kGiB), 0};
  REQUIRE(ApplyDeviceFree(stored, free, &updated, &material).ok());
  CHECK(material);
  CHECK(Described(Caps(updated.dump())) == Names{"cpu=2", "cuda=8"});  // the GPU's total
  // A count that is not HELLO's is refused and changes nothing.
  free = {1};
  Status s = ApplyDeviceFree(stored, free, &updated, &material);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("HELLO declared 2") != std::string::npos);
  CHECK_FALSE(material);
  CHECK(ApplyDeviceFree(nlohmann::json(), {}, &updated, &material).ok() == false);
}

}  // namespace
}  // namespace pcfarm
