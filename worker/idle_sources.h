// IdleSources: what the idle policy (worker/idle_policy.h) reads about the
// PC, each behind a small interface with the PC's own implementation and a
// file-driven one for tests (DESIGN.md §11, issue 13).
//
// The PC's own sources:
//   - input: logind's IdleHint/IdleSinceHint over D-Bus (sd-bus) — what the
//     desktop reports, covering X11, Wayland and the console — falling back
//     to /dev/input/event* (evdev): any event read there is input. evdev is
//     exact (one event per key or mouse move, no guessing which interrupt
//     line is a keyboard, as /proc/interrupts would need) and cheap (the
//     fds are drained at each check; reading does not take events from the
//     desktop). The service is given the `input` group for it. With neither
//     (a headless server), input is unknown and does not hold the worker.
//   - CPU: other processes' share of all cores from /proc/stat minus this
//     process's /proc/self/stat, between two readings.
//   - power: /sys/class/power_supply: on AC when any Mains/USB supply is
//     online, or when there is no battery at all (a desktop).
//   - GPU: NVML (NVIDIA's libnvidia-ml.so.1, opened with dlopen where the
//     driver installed it: temperature, power, and other processes' share
//     of the GPU), hwmon (/sys/class/hwmon/*/temp1_input, power1_average)
//     of the amdgpu, radeon, nouveau, nvidia, i915 or xe driver, and the
//     kernel's DRM client counters in /proc/*/fdinfo (other processes' use
//     of AMD and Intel GPUs); the hottest / most drawn / busiest wins.
//   - local time: localtime_r.
//
// Thread-safety: one thread (the worker's loop) uses a set of sources.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace pcfarm {

class InputActivitySource {
 public:
  virtual ~InputActivitySource() = default;
  // Milliseconds since the last keyboard or mouse input at `now_ms`
  // (wall clock); nullopt when this PC has no way to tell.
  virtual std::optional<int64_t> IdleMs(int64_t now_ms) = 0;
  // What it reads, for `pcfarm-worker status` ("logind", "evdev (3 devices)").
  virtual std::string Describe() const = 0;
};

class CpuLoadSource {
 public:
  virtual ~CpuLoadSource() = default;
  // Other processes' CPU use since the previous call, in % of all cores;
  // nullopt on the first call or when /proc cannot be read.
  virtual std::optional<double> OtherCpuPercent() = 0;
};

class PowerSource {
 public:
  virtual ~PowerSource() = default;
  // True iff the PC runs on mains power (also: it has no battery).
  virtual bool OnAc() = 0;
};

struct GpuReading {
  std::optional<double> temperature_c;
  std::optional<double> power_w;
  // Other processes' use of the GPU, in % of the device (NVML: their SM
  // use; this process excluded); nullopt where no source can tell.
  std::optional<double> other_gpu_percent;
};

class GpuSensorSource {
 public:
  virtual ~GpuSensorSource() = default;
  virtual GpuReading Read() = 0;
};

class LocalTimeSource {
 public:
  virtual ~LocalTimeSource() = default;
  // Minutes after local midnight, 0..1439.
  virtual int MinuteOfDay() = 0;
};

struct IdleSources {
  std::unique_ptr<InputActivitySource> input;
  std::unique_ptr<CpuLoadSource> cpu;
  std::unique_ptr<PowerSource> power;
  std::unique_ptr<GpuSensorSource> gpu;
  std::unique_ptr<LocalTimeSource> time;
};

// This PC's own sources (see the top of this file).
IdleSources SystemIdleSources();

// The sysfs sources over another root (the real ones read
// /sys/class/power_supply and /sys/class/hwmon), for tests with a fake tree.
std::unique_ptr<PowerSource> SysfsPowerSource(const std::string& root);
std::unique_ptr<GpuSensorSource> HwmonGpuSource(const std::string& root);
// NVML from `library` (the driver's libnvidia-ml.so.1 by default; tests
// pass a fake one): every NVIDIA GPU's temperature (C), power (mW → W) and
// the SM use of other processes over the driver's last ~2 s of samples.
// Null, with the reason in *why when given, where the library, one of its
// functions or an NVIDIA GPU is missing or nvmlInit_v2 fails.
std::unique_ptr<GpuSensorSource> NvmlGpuSource(const std::string& library = "libnvidia-ml.so.1",
                                               std::string* why = nullptr);
// Other processes' use of DRM GPUs (amdgpu, i915, xe, ...) from the
// per-client busy counters in <proc_root>/<pid>/fdinfo (see drm_usage.cc):
// other_gpu_percent only, the busiest engine of the busiest device, over
// the last second; processes this one may not read (other users', as a
// service) do not count. clock_ns: a monotonic clock (default steady_clock),
// for tests.
std::unique_ptr<GpuSensorSource> DrmUsageGpuSource(
    const std::string& proc_root = "/proc", std::function<int64_t()> clock_ns = nullptr);
// Other processes' use of amdgpu GPUs, whoever runs them: each card's
// device-wide <drm_class>/cardN/device/gpu_busy_percent, averaged over the
// last second's reads, less this process's own gfx/compute share of that
// device from <self_proc>/fdinfo (see drm_usage.cc); other_gpu_percent
// only, the busiest card. Suspended cards count as idle and are not read.
std::unique_ptr<GpuSensorSource> AmdgpuBusyGpuSource(
    const std::string& drm_class = "/sys/class/drm", const std::string& self_proc = "/proc/self",
    std::function<int64_t()> clock_ns = nullptr);
// The readings of `parts` combined, each field the largest any part gives.
std::unique_ptr<GpuSensorSource> MaxGpuSource(
    std::vector<std::unique_ptr<GpuSensorSource>> parts);

// Sources read from files in `dir`, for tests (selected by the config key
// `testing.idle_source_dir`). Each file holds one number; a missing file
// means the neutral value:
//   input_idle_ms      ms since the last input at the moment the file was
//                      written (its mtime is added), missing: no input source
//   other_cpu_percent  missing: 0
//   on_ac              1 or 0, missing: 1
//   gpu_temperature_c, gpu_power_w, other_gpu_percent   missing: no reading
//   minute_of_day      missing: the real local time
IdleSources FileIdleSources(const std::string& dir);

}  // namespace pcfarm
