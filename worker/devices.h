// Devices: what this PC can compute on, and how fast.
//
// For now the CPU only: its model name (/proc/cpuinfo), logical cores, total
// memory (/proc/meminfo), and a measured f32 GEMM speed from a short run of
// the `bench` task kind. GPU backends (cuda, vulkan) will add entries with
// their own backend string; the struct already carries what they need.
// The worker reports these in HELLO; `pcfarm-worker devices` prints them.
//
// Thread-safety: all functions are reentrant. DiscoverDevices with
// measure=true keeps the CPU busy for a moment (well under a second at the
// default probe size).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

struct WorkerDevice {
  int index = 0;              // position in the list, stable within a run
  std::string backend;        // "cpu"; later "cuda", "vulkan"
  std::string name;           // e.g. "AMD Ryzen 7 5800X 8-Core Processor"
  uint64_t memory_bytes = 0;  // RAM for the CPU, VRAM for a GPU
  // What this worker could use of it now (wire::DeviceInfo.free_bytes says
  // how each backend counts it); 0 = unknown. RefreshFreeMemory renews it.
  uint64_t free_bytes = 0;
  int cores = 0;              // logical cores, or compute units of a GPU
  double gflops = 0;          // measured f32 GEMM speed; 0 when not measured
  bool fp16 = false;          // fast half-precision math
  // A device that computes on this PC's CPU (a CPU-type Vulkan device such
  // as Mesa's lavapipe): the CPU's cores and memory again, only slower.
  bool emulated = false;
};

struct DeviceProbeOptions {
  std::string proc_dir = "/proc";  // where cpuinfo and meminfo are read
  bool measure = true;             // run the bench probe to fill gflops
  int probe_n = 512;               // bench matrix size of the probe
  int probe_reps = 3;              // timed GEMMs; the fastest counts
};

// The value of the first "model name" line (x86), else of "Model",
// "Hardware" or "Processor" (ARM). NotFound when there is none.
Result<std::string> ParseCpuModelName(std::string_view cpuinfo);

// The number of "processor : N" lines. InvalidArgument when there are none.
Result<int> ParseCpuLogicalCores(std::string_view cpuinfo);

// The "key: N kB" field of /proc/meminfo (or of /proc/PID/status) in
// bytes. InvalidArgument naming the line when it is missing, not a number,
// overflows or is not in kB.
Result<uint64_t> ParseMeminfoBytes(std::string_view meminfo, std::string_view key);
// ParseMeminfoBytes(meminfo, "MemTotal").
Result<uint64_t> ParseMemTotalBytes(std::string_view meminfo);

// Renews every device's free_bytes: the CPU's from proc_dir/meminfo
// (MemAvailable) plus this process's own anonymous memory
// (proc_dir/self/status RssAnon), which it would reuse; a GPU's from its
// backend. A fact that cannot be read leaves 0 (unknown) and logs once at
// debug level; it is never an error. Cheap for the CPU (two small reads);
// a GPU's costs a driver query (Vulkan: an instance), so callers space it.
void RefreshFreeMemory(std::vector<WorkerDevice>* devices,
                       const DeviceProbeOptions& options = {});

// Runs the bench kind with {"n": n, "seed": 1, "reps": reps}; returns gflops.
Result<double> MeasureCpuGflops(int n, int reps);

// The devices of this PC, the CPU first. Facts that cannot be read from
// proc_dir fall back to sysconf() with a log line; a failing probe is an
// error.
Result<std::vector<WorkerDevice>> DiscoverDevices(
    const DeviceProbeOptions& options = {});

// What the owner lends of a device's `bytes` (its memory or free memory):
// a GPU's are capped at max_gpu_memory_bytes (0: no cap); the CPU's are not.
uint64_t LentBytes(const WorkerDevice& device, uint64_t bytes, uint64_t max_gpu_memory_bytes);

// What a shard may use of a device now: its lent memory, or its lent free
// memory when that is known (non-zero) and smaller. The coordinator reads
// the figures a worker declares the same way (coordinator/device_caps.h).
uint64_t UsableBytes(const WorkerDevice& device, uint64_t max_gpu_memory_bytes);

// The devices a worker runs shards on, and so declares to its coordinator,
// of all those this PC has: every one but the emulated ones when the
// backend is chosen automatically (--backend auto: a shard that does not
// fit the CPU must not go to lavapipe, which holds the same memory and
// computes slower on the same cores); else those of `backend`, a GPU
// backend's only when its index is `index` (an emulated device too: the
// owner asked for it). The CPU when that leaves none (a forced GPU that did
// not start runs shards on the CPU).
std::vector<WorkerDevice> DevicesForShards(const std::vector<WorkerDevice>& all,
                                           bool automatic, const std::string& backend,
                                           int index);

// Which of `devices` runs a shard that needs `needs_backend` ("" = any) and
// `needs_memory_bytes` (0 = unknown): `preferred` when it fits (its backend
// matches and the need is within UsableBytes), else the fastest device that
// fits (measured gflops; the first of equals), else `preferred` (the
// coordinator leased it against figures that have moved since: the run will
// tell). `preferred` must be an index of `devices`.
size_t ChooseShardDevice(const std::vector<WorkerDevice>& devices, size_t preferred,
                         const std::string& needs_backend, uint64_t needs_memory_bytes,
                         uint64_t max_gpu_memory_bytes);

// A table for people: a header line, then one line per device.
std::string FormatDevicesTable(const std::vector<WorkerDevice>& devices);

// A JSON array of objects with the fields of WorkerDevice, same names.
std::string DevicesToJson(const std::vector<WorkerDevice>& devices);

}  // namespace pcfarm
