#include "worker/idle_policy.h"

#include <cstdio>

namespace pcfarm {

namespace {

std::string Fmt(const char* format, double a, double b = 0) {
  char buf[160];
  std::snprintf(buf, sizeof buf, format, a, b);
  return buf;
}

}  // namespace

IdlePolicy::IdlePolicy(const WorkerConfig& config, IdleSources sources)
    : config_(config), sources_(std::move(sources)) {}

IdleVerdict IdlePolicy::Evaluate(int64_t now_ms) {
  // Read every source each time, also after the first "no": the CPU
  // source measures between two calls.
  int minute = sources_.time->MinuteOfDay();
  std::optional<int64_t> idle_ms = sources_.input->IdleMs(now_ms);
  if (auto cpu = sources_.cpu->OtherCpuPercent()) {
    cpu_readings_.push_back(*cpu);
    if (cpu_readings_.size() > 4) cpu_readings_.pop_front();
  }
  bool on_ac = sources_.power->OnAc();
  GpuReading gpu = sources_.gpu->Read();

  IdleVerdict v;
  auto no = [&](std::string why) {
    v.may_run = false;
    v.reason = std::move(why);
    return v;
  };
  if (!InsideSchedule(config_.run_between, minute)) {
    int wait = MinutesUntilScheduleOpens(config_.run_between, minute);
    return no(Fmt("outside run_between (opens in %.0f h %02.0f min)", wait / 60,
                  wait % 60));
  }
  if (!on_ac && !config_.run_on_battery) return no("on battery");
  int64_t need_ms = int64_t(config_.idle_minutes) * 60'000;
  if (idle_ms && need_ms > 0 && *idle_ms < need_ms) {
    return no(Fmt("keyboard or mouse used %.0f s ago (idle_minutes %.0f)",
                  double(*idle_ms / 1000), config_.idle_minutes));
  }
  if (!cpu_readings_.empty()) {
    double sum = 0;
    for (double r : cpu_readings_) sum += r;
    double mean = sum / double(cpu_readings_.size());
    if (mean > config_.max_other_cpu_percent) {
      return no(Fmt("other programs use %.0f%% CPU (max_other_cpu_percent %.0f)", mean,
                    config_.max_other_cpu_percent));
    }
  }
  if (gpu.other_gpu_percent && *gpu.other_gpu_percent > config_.max_other_gpu_percent) {
    return no(Fmt("other programs use %.0f%% of the GPU (max_other_gpu_percent %.0f)",
                  *gpu.other_gpu_percent, config_.max_other_gpu_percent));
  }
  if (config_.max_temperature_c > 0 && gpu.temperature_c &&
      *gpu.temperature_c >= config_.max_temperature_c) {
    return no(Fmt("GPU at %.0f C (max_temperature_c %.0f)", *gpu.temperature_c,
                  config_.max_temperature_c));
  }
  if (config_.max_power_w > 0 && gpu.power_w && *gpu.power_w >= config_.max_power_w) {
    return no(Fmt("GPU draws %.0f W (max_power_w %.0f)", *gpu.power_w, config_.max_power_w));
  }
  return v;
}

}  // namespace pcfarm
