// WorkerConfig: the worker's config file (`/etc/pcfarm/worker.toml`, or
// `pcfarm-worker run --config PATH`), parsed with toml++ (DESIGN.md §11).
//
// What the PC's owner lends and when: which devices and how much of them,
// the hours the worker may run (`[schedule] run_between`), what counts as
// idle (`[idle]`), and caps on GPU temperature and power and on battery use.
// Every key is optional; a missing key keeps the default written next to it
// below. An unknown key, a value of the wrong type or out of range is an
// error whose one line names the file and the key (`worker.toml: idle.
// idle_minutes must be 0..1440, got -3`), and the worker does not start: a
// typo must not silently let the worker compute while the owner works.
//
// docs/worker-config.md lists the keys for people.
//
// Thread-safety: plain values; the functions are pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

// One `run_between` entry, "HH:MM-HH:MM" in local time. The end is not
// included; an end before the start crosses midnight ("22:00-07:00" runs
// from 22:00 to 06:59); equal ends ("00:00-00:00") mean the whole day.
struct ScheduleWindow {
  int start_minute = 0;  // minutes after local midnight, 0..1439
  int end_minute = 0;

  // True iff `minute_of_day` (0..1439) lies inside the window.
  bool Contains(int minute_of_day) const;
};

// Parses "HH:MM-HH:MM". InvalidArgument says what is wrong with `text`.
Result<ScheduleWindow> ParseScheduleWindow(std::string_view text);

// True iff `windows` is empty (no schedule: any time) or one contains
// `minute_of_day`.
bool InsideSchedule(const std::vector<ScheduleWindow>& windows, int minute_of_day);

// Minutes until the schedule next opens, from `minute_of_day`; 0 when it is
// open now; -1 when it never opens (cannot happen for a parsed schedule).
int MinutesUntilScheduleOpens(const std::vector<ScheduleWindow>& windows,
                              int minute_of_day);

struct WorkerConfig {
  // The worker's state directory: keys, pinned coordinator, spool, cache.
  std::string data_dir = "/var/lib/pcfarm-worker";

  // [devices]
  std::string backend = "auto";  // auto, cpu, vulkan, cuda
  int device = 0;                // device index for the backend
  int slots = 1;                 // shards run at once, 1..64
  int cpu_threads = 0;           // CPU backend threads; 0 = all cores
  uint64_t max_gpu_memory_mib = 0;  // GPU memory shards may use; 0 = no cap
  uint64_t blob_cache_mib = 20480;  // blob cache size cap

  // [schedule]: the worker takes and runs shards only inside one of these
  // windows; empty = any time.
  std::vector<ScheduleWindow> run_between;

  // [idle]
  // No keyboard or mouse input for this long before shards run; 0 = input
  // does not matter (a server nobody sits at).
  int idle_minutes = 5;
  // Pause while other processes use more than this share of all cores.
  double max_other_cpu_percent = 25;
  // Pause while other processes use more than this share of a GPU (where a
  // source can tell: NVML on NVIDIA cards, the kernel's DRM counters for
  // this user's processes), e.g. a game; 100 = never.
  double max_other_gpu_percent = 20;
  // How often the idle rules are evaluated; a returning owner pauses the
  // shard within about this long plus the engine's next check point.
  int check_interval_ms = 250;
  // A pause longer than this releases the paused shards (another worker
  // takes them); it also releases them before their lease runs out.
  int max_pause_s = 600;

  // [power]
  bool run_on_battery = false;

  // [gpu]: 0 = no cap.
  double max_temperature_c = 85;
  double max_power_w = 0;

  // [testing] Read the idle inputs from files in this directory instead of
  // the PC's own (see FileIdleSources in worker/idle_sources.h). For tests.
  std::string idle_source_dir;
};

// Parses TOML text. `source` names it in errors (a path or "worker.toml").
Result<WorkerConfig> ParseWorkerConfig(std::string_view text, std::string_view source);

// Reads and parses the file at `path`. NotFound when it does not exist.
Result<WorkerConfig> LoadWorkerConfig(const std::string& path);

// The TOML a system-mode `enroll` writes: every key with its default and a
// comment, data_dir set to `data_dir`. ParseWorkerConfig accepts it.
std::string DefaultWorkerConfigText(const std::string& data_dir);

}  // namespace pcfarm
