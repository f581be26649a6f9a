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

// A table for people: a header line, then one line per device.
std::string FormatDevicesTable(const std::vector<WorkerDevice>& devices);

// A JSON array of objects with the fields of WorkerDevice, same names.
std::string DevicesToJson(const std::vector<WorkerDevice>& devices);

}  // namespace pcfarm
