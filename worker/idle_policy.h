// IdlePolicy: whether this PC is idle enough for shards to run now (DESIGN.md
// §11, issue 13), from the config's rules and the IdleSources.
//
// Shards may run iff all hold: the local time is inside a `run_between`
// window (or there is none); no keyboard or mouse input for `idle_minutes`
// (when the PC can tell, see InputActivitySource); other processes use at
// most `max_other_cpu_percent` of all cores (the mean of the last four
// readings, so that one busy instant does not pause a shard); the PC is on
// AC power (unless `run_on_battery`); other processes use at most
// `max_other_gpu_percent` of a GPU, and the GPU is below
// `max_temperature_c` and `max_power_w`, where a source reports them. The worker evaluates it every
// `check_interval_ms`: it takes shards only while it says yes, and pauses
// the running ones when it says no.
//
// Thread-safety: one thread (the worker's loop).
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "worker/idle_sources.h"
#include "worker/worker_config.h"

namespace pcfarm {

struct IdleVerdict {
  bool may_run = true;
  // Why not, for people and the coordinator ("keyboard or mouse used 3 s
  // ago", "on battery", ...); empty when may_run.
  std::string reason;
};

class IdlePolicy {
 public:
  IdlePolicy(const WorkerConfig& config, IdleSources sources);

  // Reads every source once. `now_ms`: wall-clock ms.
  IdleVerdict Evaluate(int64_t now_ms);

  // What the input source is, for `pcfarm-worker status`.
  std::string InputDescription() const { return sources_.input->Describe(); }
  int check_interval_ms() const { return config_.check_interval_ms; }
  int64_t max_pause_ms() const { return int64_t(config_.max_pause_s) * 1000; }

 private:
  WorkerConfig config_;
  IdleSources sources_;
  std::deque<double> cpu_readings_;
};

}  // namespace pcfarm
