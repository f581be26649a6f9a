#include "worker/devices.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "base/file.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

constexpr const char* kX86Cpuinfo =
    "processor\t: 0\n"
    "vendor_id\t: AuthenticAMD\n"
    "model name\t: AMD Ryzen 7 5800X 8-Core Processor\n"
    "flags\t\t: fpu vme de\n"
    "\n"
    "processor\t: 1\n"
    "model name\t: AMD Ryzen 7 5800X 8-Core Processor\n"
    "\n"
    "processor\t: 2\n"
    "model name\t: AMD Ryzen 7 5800X 8-Core Processor\n";

constexpr const char* kArmCpuinfo =
    "processor\t: 0\n"
    "BogoMIPS\t: 108.00\n"
    "CPU implementer\t: 0x41\n"
    "\n"
    "processor\t: 1\n"
    "BogoMIPS\t: 108.00\n"
    "\n"
    "Hardware\t: BCM2835\n"
    "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n";

TEST_CASE("cpuinfo parsing") {
  CHECK(*ParseCpuModelName(kX86Cpuinfo) == "AMD Ryzen 7 5800X 8-Core Processor");
  CHECK(*ParseCpuLogicalCores(kX86Cpuinfo) == 3);
  CHECK(*ParseCpuModelName(kArmCpuinfo) == "Raspberry Pi 4 Model B Rev 1.4");
  CHECK(*ParseCpuLogicalCores(kArmCpuinfo) == 2);
  CHECK(*ParseCpuModelName("Hardware : Qualcomm\n") == "Qualcomm");
  // Bad input: empty, garbage, truncated.
  CHECK(ParseCpuModelName("").status().code() == StatusCode::kNotFound);
  CHECK(ParseCpuModelName("model name\t:\n").status().code() ==
        StatusCode::kNotFound);
  CHECK(ParseCpuModelName("\x01\x02garbage\xff").status().code() ==
        StatusCode::kNotFound);
  CHECK(ParseCpuLogicalCores("").status().code() == StatusCode::kInvalidArgument);
  CHECK(*ParseCpuLogicalCores("processor\t: 0\nmodel na") == 1);
}

TEST_CASE("meminfo parsing") {
  CHECK(*ParseMemTotalBytes("MemTotal:       16318512 kB\nMemFree: 1 kB\n") ==
        16318512ull * 1024);
  CHECK(*ParseMemTotalBytes("MemFree: 1 kB\nMemTotal: 2 kB") == 2048);
  struct Case {
    std::string text, needle;
  };
  std::vector<Case> bad = {
      {"", "no MemTotal"},
      {"MemFree: 5 kB\n", "no MemTotal"},
      {"MemTotal: abc kB\n", "line 1: MemTotal \"abc kB\" is not a number"},
      {"MemTotal:\n", "is not a number"},
      {"MemTotal: 1234\n", "unit \"\", expected kB"},
      {"MemTotal: 1234 MB\n", "unit \"MB\""},
      {"X: 1\nMemTotal: 99999999999999999999999 kB\n", "line 2: MemTotal "
                                                       "99999999999999999999999 kB is too large"},
  };
  for (const auto& c : bad) {
    INFO(c.text);
    auto r = ParseMemTotalBytes(c.text);
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains(c.needle));
  }
  // Any key, of meminfo or of /proc/PID/status (tab-separated); a key is
  // whole, not a prefix.
  const char* status = "Name:\tw\nRssAnonX:\t9 kB\nRssAnon:\t  4 kB\nMemAvailable: x kB\n";
  CHECK(*ParseMeminfoBytes(status, "RssAnon") == 4096);
  CHECK(*ParseMeminfoBytes("MemAvailable:  7 kB", "MemAvailable") == 7168);
  auto r = ParseMeminfoBytes(status, "MemAvailable");
  CHECK_THAT(r.status().message(),
             Catch::Contains("line 4: MemAvailable \"x kB\" is not a number"));
  CHECK_THAT(ParseMeminfoBytes(status, "Rss").status().message(),
             Catch::Contains("no Rss line"));
}

TEST_CASE("discovery reads a given proc dir and falls back when it is bad") {
  fs::path dir = fs::temp_directory_path() /
                 ("pcfarm_devices_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  REQUIRE(MakeDirs(dir.string()).ok());
  REQUIRE(WriteFileAtomic((dir / "cpuinfo").string(), kX86Cpuinfo).ok());
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(),
                          "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n")
              .ok());
  REQUIRE(MakeDirs((dir / "self").string()).ok());
  REQUIRE(WriteFileAtomic((dir / "self" / "status").string(),
                          "Name:\tpcfarm-worker\nVmRSS:\t  300 kB\nRssAnon:\t  100 kB\n")
              .ok());
  DeviceProbeOptions opts;
  opts.proc_dir = dir.string();
  opts.measure = false;
  auto devs = DiscoverDevices(opts);
  REQUIRE(devs.ok());
  // The CPU first; GPUs (Vulkan, CUDA) follow where this machine has them.
  REQUIRE(devs->size() >= 1);
  for (size_t i = 1; i < devs->size(); ++i) CHECK((*devs)[i].backend != "cpu");
  const WorkerDevice& cpu = (*devs)[0];
  CHECK(cpu.index == 0);
  CHECK(cpu.backend == "cpu");
  CHECK(cpu.name == "AMD Ryzen 7 5800X 8-Core Processor");
  CHECK(cpu.cores == 3);
  CHECK(cpu.memory_bytes == 1024000);
  // Free: MemAvailable plus what this process holds (RssAnon).
  CHECK(cpu.free_bytes == 700 * 1024);
  CHECK(cpu.gflops == 0);

  // RefreshFreeMemory reads them again: no RssAnon counts as 0 ...
  REQUIRE(WriteFileAtomic((dir / "self" / "status").string(), "Name:\tx\n").ok());
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(),
                          "MemTotal: 1000 kB\nMemAvailable: 200 kB\n").ok());
  std::vector<WorkerDevice> refreshed = *devs;
  RefreshFreeMemory(&refreshed, opts);
  CHECK(refreshed[0].free_bytes == 200 * 1024);
  CHECK(refreshed[0].memory_bytes == 1024000);  // only free memory changes
  // ... more than the total is the total ...
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(),
                          "MemTotal: 1000 kB\nMemAvailable: 5000 kB\n").ok());
  RefreshFreeMemory(&refreshed, opts);
  CHECK(refreshed[0].free_bytes == 1024000);
  // ... and no MemAvailable (a kernel before 3.14) is unknown, not an error.
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(), "MemTotal: 1000 kB\n").ok());
  RefreshFreeMemory(&refreshed, opts);
  CHECK(refreshed[0].free_bytes == 0);
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(),
                          "MemTotal: 1000 kB\nMemAvailable: 12 MB\n").ok());
  RefreshFreeMemory(&refreshed, opts);
  CHECK(refreshed[0].free_bytes == 0);

  // Garbage files: sysconf fills in, nothing crashes.
  REQUIRE(WriteFileAtomic((dir / "cpuinfo").string(), "\xff\xfe junk").ok());
  REQUIRE(WriteFileAtomic((dir / "meminfo").string(), "MemTotal: lots\n").ok());
  devs = DiscoverDevices(opts);
  REQUIRE(devs.ok());
  CHECK((*devs)[0].name == "unknown cpu");
  CHECK((*devs)[0].cores >= 1);
  CHECK((*devs)[0].memory_bytes > 0);
  // Missing files likewise.
  fs::remove_all(dir);
  devs = DiscoverDevices(opts);
  REQUIRE(devs.ok());
  CHECK((*devs)[0].cores >= 1);
}

TEST_CASE("discovery on this machine measures the cpu") {
  DeviceProbeOptions opts;
  opts.probe_n = 256;
  auto devs = DiscoverDevices(opts);
  REQUIRE(devs.ok());
  const WorkerDevice& cpu = (*devs)[0];
  CHECK(cpu.backend == "cpu");
  CHECK_FALSE(cpu.name.empty());
  CHECK(cpu.cores >= 1);
  CHECK(cpu.memory_bytes > (uint64_t(64) << 20));
  // This process holds some memory and Linux reports MemAvailable.
  CHECK(cpu.free_bytes > (uint64_t(16) << 20));
  CHECK(cpu.free_bytes <= cpu.memory_bytes);
  CHECK(cpu.gflops > 0);
  // /proc files report size 0; the reader must still see their contents.
  std::ifstream proc("/proc/cpuinfo");
  std::string text((std::istreambuf_iterator<char>(proc)), {});
  if (text.find("model name") != std::string::npos) {
    CHECK(cpu.name == *ParseCpuModelName(text));
    CHECK(cpu.cores == *ParseCpuLogicalCores(text));
  }
  INFO(FormatDevicesTable(*devs));
  // A bad probe size is an error, not a silent zero.
  opts.probe_n = 8;
  CHECK(DiscoverDevices(opts).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("device table and JSON") {
  std::vector<WorkerDevice> devs(2);
  devs[0] = {0, "cpu", "Intel(R) Core(TM) i5-8250U", uint64_t(16) << 30, uint64_t(9) << 30,
             8, 123.456, false};
  devs[1] = {1, "cuda", "NVIDIA GeForce RTX 3060", uint64_t(12) << 30, 0, 28, 0, true};
  std::string table = FormatDevicesTable(devs);
  CHECK(table ==
        "#  BACKEND  NAME                        MEMORY    FREE     CORES  GFLOPS  FP16\n"
        "0  cpu      Intel(R) Core(TM) i5-8250U  16.0 GiB  9.0 GiB  8      123.5   no\n"
        "1  cuda     NVIDIA GeForce RTX 3060     12.0 GiB  -        28     -       yes\n");
  auto j = nlohmann::json::parse(DevicesToJson(devs));
  REQUIRE(j.is_array());
  REQUIRE(j.size() == 2);
  CHECK(j[0]["name"] == "Intel(R) Core(TM) i5-8250U");
  CHECK(j[0]["memory_bytes"] == uint64_t(16) << 30);
  CHECK(j[0]["free_bytes"] == uint64_t(9) << 30);
  CHECK(j[1]["free_bytes"] == 0);
  CHECK(j[0]["gflops"] == Approx(123.456));
  CHECK(j[1]["backend"] == "cuda");
  CHECK(j[1]["fp16"] == true);
  CHECK(j[1]["cores"] == 28);
  CHECK(j[1]["index"] == 1);
  // Invalid UTF-8 from a strange cpuinfo does not throw.
  devs[0].name = "bad \xff name";
  CHECK_FALSE(DevicesToJson(devs).empty());
  CHECK(FormatDevicesTable({}) == "#  BACKEND  NAME  MEMORY  FREE  CORES  GFLOPS  FP16\n");
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

constexpr uint64_t kGiB = uint64_t(1) << 30;

WorkerDevice Dev(int index, const char* backend, uint64_t memory, uint64_t free, double gflops) {
  WorkerDevice d;
  d.index = index;
  d.backend = backend;
  d.memory_bytes = memory;
  d.free_bytes = free;
  d.gflops = gflops;
  return d;
}

// A PC with 32 GiB of RAM (16 free), an 8 GiB GPU (6 free) seen through
// both CUDA and Vulkan, and a second 4 GiB CUDA GPU.
std::vector<WorkerDevice> Pc() {
  return {Dev(0, "cpu", 32 * kGiB, 16 * kGiB, 100), Dev(0, "cuda", 8 * kGiB, 6 * kGiB, 20000),
          Dev(1, "cuda", 4 * kGiB, 0, 9000), Dev(0, "vulkan", 8 * kGiB, 0, 5000)};
}

TEST_CASE("the devices a worker declares for shards") {
  const auto all = Pc();
  auto names = [](const std::vector<WorkerDevice>& ds) {
    std::vector<std::string> out;
    for (const auto& d : ds) out.push_back(d.backend + ":" + std::to_string(d.index));
    return out;
  };
  using V = std::vector<std::string>;
  CHECK(names(DevicesForShards(all, true, "cuda", 0)) == V{"cpu:0", "cuda:0", "cuda:1", "vulkan:0"});
  CHECK(names(DevicesForShards(all, false, "cuda", 1)) == V{"cuda:1"});
  CHECK(names(DevicesForShards(all, false, "vulkan", 0)) == V{"vulkan:0"});
  CHECK(names(DevicesForShards(all, false, "cpu", 3)) == V{"cpu:0"});
  // A forced device this PC lacks (it did not start: shards run on the CPU).
  CHECK(names(DevicesForShards(all, false, "cuda", 5)) == V{"cpu:0"});
  // lavapipe (a CPU-type Vulkan device) computes on the same cores and
  // memory as the CPU: not declared under auto, where a shard too big for
  // the CPU would go to it; declared when the owner names it.
  auto with_lavapipe = all;
  WorkerDevice lavapipe = Dev(1, "vulkan", 32 * kGiB, 16 * kGiB, 40);
  lavapipe.emulated = true;
  with_lavapipe.push_back(lavapipe);
  CHECK(names(DevicesForShards(with_lavapipe, true, "cpu", 0)) ==
        V{"cpu:0", "cuda:0", "cuda:1", "vulkan:0"});
  CHECK(names(DevicesForShards(with_lavapipe, false, "vulkan", 1)) == V{"vulkan:1"});
}

TEST_CASE("usable memory: lent, and at most the free memory when known") {
  const auto pc = Pc();
  CHECK(UsableBytes(pc[0], 0) == 16 * kGiB);
  CHECK(UsableBytes(pc[0], 1 * kGiB) == 16 * kGiB);  // the cap is for GPUs
  CHECK(UsableBytes(pc[1], 0) == 6 * kGiB);
  CHECK(UsableBytes(pc[1], 2 * kGiB) == 2 * kGiB);
  CHECK(UsableBytes(pc[2], 0) == 4 * kGiB);  // free unknown: the total
  CHECK(LentBytes(pc[1], 8 * kGiB, 3 * kGiB) == 3 * kGiB);
  CHECK(LentBytes(pc[0], 8 * kGiB, 3 * kGiB) == 8 * kGiB);
}

TEST_CASE("a shard runs on the preferred device when it fits, else the fastest that fits") {
  const auto pc = Pc();
  const size_t cuda0 = 1;
  // Fits the preferred GPU.
  CHECK(ChooseShardDevice(pc, cuda0, "", 5 * kGiB, 0) == cuda0);
  CHECK(ChooseShardDevice(pc, cuda0, "cuda", 0, 0) == cuda0);
  // Over its 6 GiB free: the fastest device that holds 7 GiB is Vulkan's
  // view of the same GPU (8 GiB, free unknown), not the CPU.
  CHECK(ChooseShardDevice(pc, cuda0, "", 7 * kGiB, 0) == 3);
  // The owner lends at most 2 GiB of each GPU: a 3 GiB shard goes to the CPU.
  CHECK(ChooseShardDevice(pc, cuda0, "", 3 * kGiB, 2 * kGiB) == 0);
  // A shard that names the CPU, or needs more than any GPU has.
  CHECK(ChooseShardDevice(pc, cuda0, "cpu", 0, 0) == 0);
  CHECK(ChooseShardDevice(pc, cuda0, "", 12 * kGiB, 0) == 0);
  // Vulkan only, and the preferred is the CPU.
  CHECK(ChooseShardDevice(pc, 0, "vulkan", 1 * kGiB, 0) == 3);
  // CUDA, 5 GiB, preferred the small GPU: the big one.
  CHECK(ChooseShardDevice(pc, 2, "cuda", 5 * kGiB, 0) == cuda0);
  // Nothing fits (free memory moved since the lease): the preferred.
  CHECK(ChooseShardDevice(pc, cuda0, "", 40 * kGiB, 0) == cuda0);
  CHECK(ChooseShardDevice(pc, 0, "metal", 0, 0) == 0);
}

}  // namespace
}  // namespace pcfarm
