// The NVML GPU source (idle_sources.h, NvmlGpuSource): NVIDIA's management
// library, which the driver installs as libnvidia-ml.so.1, opened with
// dlopen so that the worker neither links nor needs it. NVIDIA's own
// driver reports no hwmon sensors, so without NVML an NVIDIA card's
// temperature and power caps would not apply.
//
// The few declarations below are NVML's C ABI as its API reference
// documents it (return codes, the opaque device handle, one struct); no
// NVML header is needed to build.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "worker/idle_sources.h"

namespace pcfarm {

namespace {

using NvmlReturn = int;
using NvmlDevice = void*;  // nvmlDevice_t: a pointer to an opaque struct
constexpr NvmlReturn kNvmlSuccess = 0;
constexpr NvmlReturn kNvmlErrorNotFound = 6;         // no samples since lastSeenTimeStamp
constexpr NvmlReturn kNvmlErrorInsufficientSize = 7;  // the buffer is too small
constexpr int kNvmlTemperatureGpu = 0;              // NVML_TEMPERATURE_GPU

// nvmlProcessUtilizationSample_t: one process's use of one GPU over the
// driver's last sample period, in % of the device.
struct NvmlProcessSample {
  unsigned int pid;
  unsigned long long time_stamp_us;  // CPU timestamp, microseconds
  unsigned int sm_util;              // SM (3D and compute)
  unsigned int mem_util;
  unsigned int enc_util;
  unsigned int dec_util;
};
static_assert(sizeof(NvmlProcessSample) == 32, "NVML's layout on LP64");

// Process samples are read over this window, ending at the newest sample
// seen: the driver samples every 1/6 s to 1 s, more slowly than the idle
// policy asks (every 250 ms), so "no sample since the last call" does not
// mean "no use", and a window keeps the reading steady.
constexpr unsigned long long kProcessWindowUs = 2'000'000;

class NvmlGpu final : public GpuSensorSource {
 public:
  ~NvmlGpu() override {
    if (shutdown_ != nullptr) shutdown_();
    if (lib_ != nullptr) dlclose(lib_);
  }

  // Opens `library` and every device; null with the reason in *why.
  static std::unique_ptr<NvmlGpu> Open(const std::string& library, std::string* why) {
    std::unique_ptr<NvmlGpu> g(new NvmlGpu());
    g->lib_ = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (g->lib_ == nullptr) {
      const char* e = dlerror();
      *why = "cannot open " + library + ": " + (e != nullptr ? e : "unknown error");
      return nullptr;
    }
    bool ok = true;
    auto sym = [&](const char* name, auto& fn) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(g->lib_, name));
      if (fn == nullptr && ok) {
        ok = false;
        *why = library + " has no " + name;
      }
    };
    NvmlReturn (*init)() = nullptr;
    NvmlReturn (*count)(unsigned int*) = nullptr;
    NvmlReturn (*handle)(unsigned int, NvmlDevice*) = nullptr;
    sym("nvmlInit_v2", init);
    sym("nvmlShutdown", g->shutdown_);
    sym("nvmlDeviceGetCount_v2", count);
    sym("nvmlDeviceGetHandleByIndex_v2", handle);
    sym("nvmlDeviceGetTemperature", g->temperature_);
    sym("nvmlDeviceGetPowerUsage", g->power_);
    sym("nvmlDeviceGetProcessUtilization", g->processes_);
    if (!ok) {
      g->shutdown_ = nullptr;  // never initialised
      return nullptr;
    }
    if (NvmlReturn r = init(); r != kNvmlSuccess) {
      *why = "nvmlInit_v2 failed with NVML error " + std::to_string(r);
      g->shutdown_ = nullptr;
      return nullptr;
    }
    unsigned int n = 0;
    if (NvmlReturn r = count(&n); r != kNvmlSuccess) {
      *why = "nvmlDeviceGetCount_v2 failed with NVML error " + std::to_string(r);
      return nullptr;
    }
    for (unsigned int i = 0; i < n; ++i) {
      NvmlDevice d = nullptr;
      if (handle(i, &d) == kNvmlSuccess) g->devices_.push_back(d);
    }
    if (g->devices_.empty()) {
      *why = "NVML sees no NVIDIA GPU";
      return nullptr;
    }
    g->newest_us_.assign(g->devices_.size(), 0);
    g->self_ = static_cast<unsigned int>(getpid());
    return g;
  }

  GpuReading Read() override {
    GpuReading r;
    for (size_t i = 0; i < devices_.size(); ++i) {
      unsigned int v = 0;
      if (temperature_(devices_[i], kNvmlTemperatureGpu, &v) == kNvmlSuccess) {
        const double c = v;  // degrees C
        r.temperature_c = std::max(r.temperature_c.value_or(c), c);
      }
      if (power_(devices_[i], &v) == kNvmlSuccess) {
        const double w = v / 1000.0;  // milliwatts
        r.power_w = std::max(r.power_w.value_or(w), w);
      }
      if (auto other = OtherProcessesPercent(i)) {
        r.other_gpu_percent = std::max(r.other_gpu_percent.value_or(*other), *other);
      }
    }
    return r;
  }

 private:
  NvmlGpu() = default;

  // The SM use of every process but this one on device i over the last
  // kProcessWindowUs (each process's newest sample), capped at 100;
  // nullopt when NVML cannot tell (an old GPU, no permission).
  std::optional<double> OtherProcessesPercent(size_t i) {
    const unsigned long long newest = newest_us_[i];
    const unsigned long long since = newest > kProcessWindowUs ? newest - kProcessWindowUs : 0;
    unsigned int n = 0;
    NvmlReturn rc = processes_(devices_[i], nullptr, &n, since);
    if (rc == kNvmlErrorNotFound) return 0.0;  // no process used it
    if (rc != kNvmlSuccess && rc != kNvmlErrorInsufficientSize) return std::nullopt;
    // Room for processes that start between the two calls.
    samples_.resize(n + 8);
    n = static_cast<unsigned int>(samples_.size());
    rc = processes_(devices_[i], samples_.data(), &n, since);
    if (rc == kNvmlErrorNotFound) return 0.0;
    if (rc != kNvmlSuccess) return std::nullopt;
    std::map<unsigned int, const NvmlProcessSample*> latest;
    for (unsigned int k = 0; k < n && k < samples_.size(); ++k) {
      const NvmlProcessSample& s = samples_[k];
      newest_us_[i] = std::max(newest_us_[i], s.time_stamp_us);
      auto& slot = latest[s.pid];
      if (slot == nullptr || slot->time_stamp_us < s.time_stamp_us) slot = &s;
    }
    double sum = 0;
    for (const auto& [pid, s] : latest)
      if (pid != self_) sum += s->sm_util;
    return std::min(sum, 100.0);
  }

  void* lib_ = nullptr;
  NvmlReturn (*shutdown_)() = nullptr;
  NvmlReturn (*temperature_)(NvmlDevice, int, unsigned int*) = nullptr;
  NvmlReturn (*power_)(NvmlDevice, unsigned int*) = nullptr;
  NvmlReturn (*processes_)(NvmlDevice, NvmlProcessSample*, unsigned int*,
                           unsigned long long) = nullptr;
  std::vector<NvmlDevice> devices_;
  std::vector<unsigned long long> newest_us_;  // per device: the newest sample's time
  std::vector<NvmlProcessSample> samples_;
  unsigned int self_ = 0;
};

}  // namespace

std::unique_ptr<GpuSensorSource> NvmlGpuSource(const std::string& library, std::string* why) {
  std::string ignored;
  return NvmlGpu::Open(library, why != nullptr ? why : &ignored);
}

}  // namespace pcfarm
