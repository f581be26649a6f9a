#include "worker/idle_sources.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "base/file.h"

namespace pcfarm {

namespace {

std::vector<std::string> ListDir(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) == 0 && name != "." && name != "..") out.push_back(name);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> ReadLine(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  if (!f || !std::getline(f, line)) return std::nullopt;
  return line;
}

std::optional<double> ReadNumber(const std::string& path) {
  auto line = ReadLine(path);
  if (!line) return std::nullopt;
  try {
    return std::stod(*line);
  } catch (...) {
    return std::nullopt;
  }
}

// ---- input: evdev, then logind

class EvdevInput final : public InputActivitySource {
 public:
  // Opens every readable /dev/input/event*; none: empty.
  static std::unique_ptr<EvdevInput> Open(int64_t now_ms) {
    auto in = std::unique_ptr<EvdevInput>(new EvdevInput);
    for (const auto& name : ListDir("/dev/input", "event")) {
      int fd = ::open(("/dev/input/" + name).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd >= 0) in->fds_.push_back(fd);
    }
    if (in->fds_.empty()) return nullptr;
    // Started just now: count that as input, so a worker that starts while
    // someone works waits the idle time first.
    in->last_input_ms_ = now_ms;
    return in;
  }
  ~EvdevInput() override {
    for (int fd : fds_) ::close(fd);
  }
  std::optional<int64_t> IdleMs(int64_t now_ms) override {
    char buf[4096];
    for (auto it = fds_.begin(); it != fds_.end();) {
      bool gone = false;
      for (;;) {
        ssize_t n = ::read(*it, buf, sizeof buf);
        if (n > 0) {
          last_input_ms_ = now_ms;
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        gone = n == 0 || (n < 0 && errno != EAGAIN);
        break;
      }
      if (gone) {  // unplugged
        ::close(*it);
        it = fds_.erase(it);
      } else {
        ++it;
      }
    }
    return std::max<int64_t>(0, now_ms - last_input_ms_);
  }
  std::string Describe() const override {
    return "evdev (" + std::to_string(fds_.size()) + " input devices)";
  }

 private:
  std::vector<int> fds_;
  int64_t last_input_ms_ = 0;
};

class LogindInput final : public InputActivitySource {
 public:
  static std::unique_ptr<LogindInput> Open() {
    sd_bus* bus = nullptr;
    if (sd_bus_open_system(&bus) < 0) return nullptr;
    auto in = std::unique_ptr<LogindInput>(new LogindInput(bus));
    if (!in->Query()) return nullptr;
    return in;
  }
  ~LogindInput() override { sd_bus_flush_close_unref(bus_); }
  std::optional<int64_t> IdleMs(int64_t now_ms) override {
    auto since_us = Query();
    if (!since_us) return std::nullopt;
    if (*since_us == 0) return 0;  // not idle
    return std::max<int64_t>(0, now_ms - int64_t(*since_us / 1000));
  }
  std::string Describe() const override { return "logind IdleHint"; }

 private:
  explicit LogindInput(sd_bus* bus) : bus_(bus) {}
  // IdleSinceHint (µs, wall clock) when IdleHint is set, 0 when it is not;
  // nullopt when logind does not answer.
  std::optional<uint64_t> Query() {
    sd_bus_error err = SD_BUS_ERROR_NULL;
    int hint = 0;
    uint64_t since = 0;
    int r = sd_bus_get_property_trivial(bus_, "org.freedesktop.login1",
                                        "/org/freedesktop/login1",
                                        "org.freedesktop.login1.Manager", "IdleHint",
                                        &err, 'b', &hint);
    if (r >= 0) {
      r = sd_bus_get_property_trivial(bus_, "org.freedesktop.login1",
                                      "/org/freedesktop/login1",
                                      "org.freedesktop.login1.Manager", "IdleSinceHint",
                                      &err, 't', &since);
    }
    sd_bus_error_free(&err);
    if (r < 0) return std::nullopt;
    return hint ? std::max<uint64_t>(since, 1) : 0;
  }
  sd_bus* bus_;
};

class NoInput final : public InputActivitySource {
 public:
  std::optional<int64_t> IdleMs(int64_t) override { return std::nullopt; }
  std::string Describe() const override {
    return "none (no readable /dev/input, no logind): input is not watched";
  }
};

// ---- CPU

class ProcCpuLoad final : public CpuLoadSource {
 public:
  std::optional<double> OtherCpuPercent() override {
    auto stat = ReadLine("/proc/stat");
    auto self = ReadLine("/proc/self/stat");
    if (!stat || !self) return std::nullopt;
    std::istringstream s(*stat);
    std::string cpu;
    uint64_t v[8] = {0};
    s >> cpu;
    for (auto& x : v) s >> x;
    uint64_t total = 0;
    for (auto x : v) total += x;
    uint64_t busy = total - v[3] - v[4];  // less idle and iowait
    // /proc/self/stat: the comm field may hold spaces; fields after ')'.
    size_t close = self->rfind(')');
    if (close == std::string::npos) return std::nullopt;
    std::istringstream f(self->substr(close + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && f >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    uint64_t mine = utime + stime;
    std::optional<double> out;
    if (have_ && total > total_) {
      double other = double(busy - busy_) - double(mine - mine_);
      out = std::clamp(100.0 * other / double(total - total_), 0.0, 100.0);
    }
    have_ = true;
    total_ = total;
    busy_ = busy;
    mine_ = mine;
    return out;
  }

 private:
  bool have_ = false;
  uint64_t total_ = 0, busy_ = 0, mine_ = 0;
};

// ---- power

class SysfsPower final : public PowerSource {
 public:
  explicit SysfsPower(std::string root) : root_(std::move(root)) {}
  bool OnAc() override {
    bool battery = false, mains_online = false;
    for (const auto& name : ListDir(root_, "")) {
      std::string dir = root_ + "/" + name;
      auto type = ReadLine(dir + "/type");
      if (!type) continue;
      if (*type == "Battery") {
        // A peripheral's battery (a mouse) has scope Device.
        auto scope = ReadLine(dir + "/scope");
        if (!scope || *scope != "Device") battery = true;
      } else if (*type == "Mains" || *type == "USB" || *type == "UPS") {
        auto online = ReadNumber(dir + "/online");
        if (online && *online > 0) mains_online = true;
      }
    }
    return mains_online || !battery;
  }

 private:
  std::string root_;
};

// ---- GPU

class HwmonGpu final : public GpuSensorSource {
 public:
  explicit HwmonGpu(std::string root) : root_(std::move(root)) {}
  GpuReading Read() override {
    GpuReading r;
    for (const auto& name : ListDir(root_, "hwmon")) {
      std::string dir = root_ + "/" + name;
      auto driver = ReadLine(dir + "/name");
      if (!driver || (*driver != "amdgpu" && *driver != "radeon" && *driver != "nouveau" &&
                      *driver != "nvidia" && *driver != "i915" && *driver != "xe")) {
        continue;
      }
      // A card the kernel powered down is cool and idle, and reading its
      // sensors would wake it (a laptop's dGPU would never sleep).
      if (ReadLine(dir + "/device/power/runtime_status") == "suspended") continue;
      if (auto t = ReadNumber(dir + "/temp1_input")) {
        double c = *t / 1000.0;  // millidegrees
        r.temperature_c = std::max(r.temperature_c.value_or(c), c);
      }
      for (const char* f : {"/power1_average", "/power1_input"}) {
        if (auto p = ReadNumber(dir + f)) {
          double w = *p / 1e6;  // microwatts
          r.power_w = std::max(r.power_w.value_or(w), w);
          break;
        }
      }
    }
    return r;
  }

 private:
  std::string root_;
};

class MaxGpu final : public GpuSensorSource {
 public:
  explicit MaxGpu(std::vector<std::unique_ptr<GpuSensorSource>> parts)
      : parts_(std::move(parts)) {}
  GpuReading Read() override {
    GpuReading r;
    auto max = [](std::optional<double>& into, const std::optional<double>& v) {
      if (v) into = std::max(into.value_or(*v), *v);
    };
    for (const auto& p : parts_) {
      const GpuReading g = p->Read();
      max(r.temperature_c, g.temperature_c);
      max(r.power_w, g.power_w);
      max(r.other_gpu_percent, g.other_gpu_percent);
    }
    return r;
  }

 private:
  std::vector<std::unique_ptr<GpuSensorSource>> parts_;
};

class SystemLocalTime final : public LocalTimeSource {
 public:
  int MinuteOfDay() override {
    time_t now = time(nullptr);
    struct tm tm {};
    localtime_r(&now, &tm);
    return tm.tm_hour * 60 + tm.tm_min;
  }
};

// ---- file-driven sources (tests)

int64_t WallMs() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

class FileInput final : public InputActivitySource {
 public:
  explicit FileInput(std::string dir) : path_(dir + "/input_idle_ms") {}
  std::optional<int64_t> IdleMs(int64_t now_ms) override {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return std::nullopt;
    auto v = ReadNumber(path_);
    if (!v) return std::nullopt;
    int64_t written_ms = int64_t(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
    return std::max<int64_t>(0, int64_t(*v) + now_ms - written_ms);
  }
  std::string Describe() const override { return "test file " + path_; }

 private:
  std::string path_;
};

class FileCpu final : public CpuLoadSource {
 public:
  explicit FileCpu(std::string dir) : path_(dir + "/other_cpu_percent") {}
  std::optional<double> OtherCpuPercent() override {
    return ReadNumber(path_).value_or(0.0);
  }

 private:
  std::string path_;
};

class FilePower final : public PowerSource {
 public:
  explicit FilePower(std::string dir) : path_(dir + "/on_ac") {}
  bool OnAc() override { return ReadNumber(path_).value_or(1.0) != 0; }

 private:
  std::string path_;
};

class FileGpu final : public GpuSensorSource {
 public:
  explicit FileGpu(std::string dir) : dir_(std::move(dir)) {}
  GpuReading Read() override {
    return {ReadNumber(dir_ + "/gpu_temperature_c"), ReadNumber(dir_ + "/gpu_power_w"),
            ReadNumber(dir_ + "/other_gpu_percent")};
  }

 private:
  std::string dir_;
};

class FileLocalTime final : public LocalTimeSource {
 public:
  explicit FileLocalTime(std::string dir) : path_(dir + "/minute_of_day") {}
  int MinuteOfDay() override {
    if (auto v = ReadNumber(path_)) return std::clamp(int(*v), 0, 24 * 60 - 1);
    return real_.MinuteOfDay();
  }

 private:
  std::string path_;
  SystemLocalTime real_;
};

}  // namespace

IdleSources SystemIdleSources() {
  IdleSources s;
  if (auto ev = EvdevInput::Open(WallMs())) {
    s.input = std::move(ev);
  } else if (auto li = LogindInput::Open()) {
    s.input = std::move(li);
  } else {
    s.input = std::make_unique<NoInput>();
  }
  s.cpu = std::make_unique<ProcCpuLoad>();
  s.power = std::make_unique<SysfsPower>("/sys/class/power_supply");
  std::vector<std::unique_ptr<GpuSensorSource>> gpus;
  if (auto nvml = NvmlGpuSource()) gpus.push_back(std::move(nvml));
  gpus.push_back(std::make_unique<HwmonGpu>("/sys/class/hwmon"));
  gpus.push_back(DrmUsageGpuSource());
  gpus.push_back(AmdgpuBusyGpuSource());
  s.gpu = MaxGpuSource(std::move(gpus));
  s.time = std::make_unique<SystemLocalTime>();
  return s;
}

IdleSources FileIdleSources(const std::string& dir) {
  IdleSources s;
  s.input = std::make_unique<FileInput>(dir);
  s.cpu = std::make_unique<FileCpu>(dir);
  s.power = std::make_unique<FilePower>(dir);
  s.gpu = std::make_unique<FileGpu>(dir);
  s.time = std::make_unique<FileLocalTime>(dir);
  return s;
}

std::unique_ptr<PowerSource> SysfsPowerSource(const std::string& root) {
  return std::make_unique<SysfsPower>(root);
}
std::unique_ptr<GpuSensorSource> HwmonGpuSource(const std::string& root) {
  return std::make_unique<HwmonGpu>(root);
}
std::unique_ptr<GpuSensorSource> MaxGpuSource(
    std::vector<std::unique_ptr<GpuSensorSource>> parts) {
  return std::make_unique<MaxGpu>(std::move(parts));
}

}  // namespace pcfarm
