// The DRM usage source (idle_sources.h, DrmUsageGpuSource): other processes'
// use of AMD, Intel and other DRM GPUs from the counters the kernel keeps
// per DRM client and shows in /proc/<pid>/fdinfo/<fd> of each open
// /dev/dri node (Documentation/gpu/drm-usage-stats.rst):
//   drm-pdev: 0000:03:00.0           the device (optional)
//   drm-client-id: 42                one client may sit behind several fds
//   drm-engine-gfx: 123456789 ns     busy time of an engine, cumulative
//   drm-engine-capacity-gfx: 2       engines of that kind (default 1)
//   drm-cycles-rcs: 123              xe: busy cycles of an engine class ...
//   drm-total-cycles-rcs: 456        ... and the GPU's cycles meanwhile
// A client's share of an engine between two readings is Δns / Δwall /
// capacity (or Δcycles / Δtotal-cycles); a device's use is its busiest
// engine's sum over clients; the reading is the busiest device's, in %.
//
// Only processes whose fdinfo this process may read count: the same user's
// (and everyone's for root). A worker run by the desktop's user sees its
// games; the packaged service (user pcfarm) sees no one else's, and there
// NVML reads an NVIDIA GPU's other users and AmdgpuBusyGpuSource (below)
// an AMD GPU's, from the device's own busy figure less this process's use.
// Intel GPUs have no such figure that a user may read.
//
// Cost: a pass over /proc/*/fd (a readlink of every fd) every kRescanNs,
// spread over the reads kPidsPerRead processes at a time (a full pass took
// 4-13 ms for 600 fds on a 2-core VM, ~10 µs an fd: a desktop's ~15,000
// fds in one go would hold the worker's loop 0.1-0.2 s); and the fdinfo
// of the fds found to be DRM nodes, at most every kSampleNs. Reads between
// samples return the last value.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "worker/idle_sources.h"

namespace pcfarm {

namespace {

namespace fs = std::filesystem;

constexpr int64_t kSampleNs = 1'000'000'000;
constexpr int64_t kRescanNs = 10'000'000'000;
constexpr size_t kPidsPerRead = 32;

// One engine of one client: its counters in one reading.
struct EngineCount {
  uint64_t busy = 0;   // ns, or cycles when total != 0
  uint64_t total = 0;  // xe's total cycles; 0 for the ns form
  uint64_t capacity = 1;
};

// (device, client id) -> engine name -> counters.
using ClientKey = std::pair<std::string, uint64_t>;
using Reading = std::map<ClientKey, std::map<std::string, EngineCount>>;

bool ParseUnsigned(const std::string& s, uint64_t* v) {
  size_t i = s.find_first_not_of(" \t");
  if (i == std::string::npos || s[i] < '0' || s[i] > '9') return false;
  uint64_t x = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) x = x * 10 + uint64_t(s[i] - '0');
  *v = x;
  return true;
}

// Adds the client behind one fdinfo file to *r (nothing when it is not a
// DRM client). False when the file cannot be read (the fd or its process
// is gone).
bool ReadFdinfo(const std::string& path, Reading* r) {
  std::ifstream f(path);
  if (!f) return false;
  std::string line, pdev;
  std::optional<uint64_t> client;
  std::map<std::string, EngineCount> engines;
  while (std::getline(f, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon), value = line.substr(colon + 1);
    uint64_t v = 0;
    auto starts = [&](const char* p) { return key.rfind(p, 0) == 0; };
    if (key == "drm-pdev") {
      pdev = value.substr(std::min(value.find_first_not_of(" \t"), value.size()));
    } else if (key == "drm-client-id") {
      if (ParseUnsigned(value, &v)) client = v;
    } else if (starts("drm-engine-capacity-")) {
      if (ParseUnsigned(value, &v) && v > 0) engines[key.substr(20)].capacity = v;
    } else if (starts("drm-engine-")) {
      if (ParseUnsigned(value, &v)) engines[key.substr(11)].busy = v;
    } else if (starts("drm-total-cycles-")) {
      if (ParseUnsigned(value, &v)) engines[key.substr(17)].total = v;
    } else if (starts("drm-cycles-")) {
      if (ParseUnsigned(value, &v)) engines[key.substr(11)].busy = v;
    }
  }
  // Several fds of one client (dup, fork) show the same counters: once.
  if (client && !engines.empty()) r->emplace(ClientKey{pdev, *client}, std::move(engines));
  return true;
}

bool IsDrmNode(const fs::path& link) {
  std::error_code ec;
  const fs::path target = fs::read_symlink(link, ec);
  return !ec && target.string().rfind("/dev/dri/", 0) == 0;
}

// Each (device, engine)'s use between two readings, as a share of the
// engine (summed over clients, may pass 1), from the clients present in
// both; *any: whether there was such a client.
std::map<std::pair<std::string, std::string>, double> EngineShares(const Reading& now,
                                                                   const Reading& before,
                                                                   double dt_ns, bool* any) {
  std::map<std::pair<std::string, std::string>, double> use;
  *any = false;
  if (dt_ns <= 0) return use;
  for (const auto& [client, engines] : now) {
    auto b = before.find(client);
    if (b == before.end()) continue;
    *any = true;
    for (const auto& [name, c] : engines) {
      auto e = b->second.find(name);
      if (e == b->second.end() || c.busy < e->second.busy) continue;
      double share;
      if (c.total != 0) {
        if (c.total <= e->second.total) continue;
        share = double(c.busy - e->second.busy) / double(c.total - e->second.total);
      } else {
        share = double(c.busy - e->second.busy) / dt_ns;
      }
      use[{client.first, name}] += share / double(c.capacity);
    }
  }
  return use;
}

class DrmUsageGpu final : public GpuSensorSource {
 public:
  DrmUsageGpu(std::string proc, std::function<int64_t()> clock_ns)
      : proc_(std::move(proc)), clock_ns_(std::move(clock_ns)),
        self_(std::to_string(getpid())) {}

  GpuReading Read() override {
    const int64_t now = clock_ns_();
    if (pending_.empty() && (!scanning_ || now - last_scan_ns_ >= kRescanNs)) {
      StartScan();
      last_scan_ns_ = now;
    }
    ScanSome();
    if (sampled_ && now - last_sample_ns_ < kSampleNs) return {{}, {}, value_};
    Reading r;
    std::vector<std::pair<std::string, std::string>> gone;
    for (const auto& [pid, fd] : drm_fds_) {
      if (!ReadFdinfo(proc_ + "/" + pid + "/fdinfo/" + fd, &r)) gone.emplace_back(pid, fd);
    }
    for (const auto& g : gone) drm_fds_.erase(g);
    value_ = sampled_ ? Use(r, double(now - last_sample_ns_)) : std::nullopt;
    previous_ = std::move(r);
    sampled_ = true;
    last_sample_ns_ = now;
    return {{}, {}, value_};
  }

 private:
  // A pass looks for every (pid, fd) but this process's whose fd is a
  // /dev/dri node: the processes to look at, then kPidsPerRead of them a
  // read; the fds found replace drm_fds_ when the pass ends.
  void StartScan() {
    scanning_ = true;
    found_.clear();
    std::error_code ec;
    for (const auto& p : fs::directory_iterator(proc_, ec)) {
      std::string pid = p.path().filename().string();
      if (!pid.empty() && pid.find_first_not_of("0123456789") == std::string::npos &&
          pid != self_)
        pending_.push_back(std::move(pid));
    }
    if (pending_.empty()) drm_fds_.clear();
  }

  void ScanSome() {
    for (size_t n = 0; n < kPidsPerRead && !pending_.empty(); ++n) {
      const std::string pid = std::move(pending_.back());
      pending_.pop_back();
      std::error_code ec;
      for (const auto& fd : fs::directory_iterator(proc_ + "/" + pid + "/fd", ec)) {
        if (IsDrmNode(fd.path())) found_.emplace(pid, fd.path().filename().string());
      }
      if (pending_.empty()) drm_fds_ = std::move(found_);
    }
  }

  // The busiest device's busiest engine, summed over the clients present in
  // both readings, in % (capped at 100); nullopt with no such client.
  std::optional<double> Use(const Reading& now, double dt_ns) const {
    if (dt_ns <= 0) return value_;
    bool any = false;
    double most = 0;
    for (const auto& [key, use] : EngineShares(now, previous_, dt_ns, &any))
      most = std::max(most, use);
    if (!any) return std::nullopt;
    return std::min(100.0, 100.0 * most);
  }

  std::string proc_;
  std::function<int64_t()> clock_ns_;
  std::string self_;
  std::set<std::pair<std::string, std::string>> drm_fds_;  // (pid, fd)
  std::vector<std::string> pending_;                        // pids the pass has left
  std::set<std::pair<std::string, std::string>> found_;     // the pass's fds so far
  bool scanning_ = false, sampled_ = false;
  int64_t last_scan_ns_ = 0, last_sample_ns_ = 0;
  Reading previous_;
  std::optional<double> value_;
};

// amdgpu's whole-device figure, for the processes the DRM usage source
// cannot read (other users', when the worker runs as the service): each
// card's device/gpu_busy_percent (0444, the graphics block's activity as
// the power management firmware reports it), averaged over the reads of
// the last second, less this process's own share of that device's gfx or
// compute engine over the same second (its own fdinfo, always readable).
// A card whose device/power/runtime_status says "suspended" is idle and is
// not read (a read would wake it). A device where this process has a DRM
// client that the previous sample did not have gives no figure until the
// next sample (its own share is not known yet).
class AmdgpuBusyGpu final : public GpuSensorSource {
 public:
  AmdgpuBusyGpu(std::string drm_class, std::string self_proc, std::function<int64_t()> clock_ns)
      : drm_class_(std::move(drm_class)), self_proc_(std::move(self_proc)),
        clock_ns_(std::move(clock_ns)) {}

  GpuReading Read() override {
    const int64_t now = clock_ns_();
    SampleCards();
    if (sampled_ && now - last_sample_ns_ < kSampleNs) return {{}, {}, value_};
    Reading own;
    std::error_code ec;
    for (const auto& fd : fs::directory_iterator(self_proc_ + "/fd", ec)) {
      if (IsDrmNode(fd.path()))
        ReadFdinfo(self_proc_ + "/fdinfo/" + fd.path().filename().string(), &own);
    }
    bool any = false;
    const auto shares =
        EngineShares(own, previous_own_, sampled_ ? double(now - last_sample_ns_) : 0, &any);
    auto share = [&](const std::string& dev, const char* engine) {
      auto it = shares.find({dev, engine});
      return it == shares.end() ? 0.0 : it->second;
    };
    std::optional<double> most;
    for (const auto& [dev, b] : busy_) {
      bool known = true;
      for (const auto& [client, engines] : own) {
        if (client.first == dev && (!sampled_ || !previous_own_.count(client))) known = false;
      }
      if (!known || b.reads == 0) continue;
      const double mine = 100.0 * std::max(share(dev, "gfx"), share(dev, "compute"));
      const double other = std::clamp(b.sum / b.reads - mine, 0.0, 100.0);
      most = std::max(most.value_or(other), other);
    }
    busy_.clear();
    previous_own_ = std::move(own);
    sampled_ = true;
    last_sample_ns_ = now;
    value_ = most;
    return {{}, {}, value_};
  }

 private:
  struct Busy {
    double sum = 0;
    int reads = 0;
  };

  // One reading of every amdgpu card (cardN with a gpu_busy_percent),
  // added to busy_ under the card's PCI address (its device link's name,
  // as fdinfo's drm-pdev names it).
  void SampleCards() {
    std::error_code ec;
    for (const auto& card : fs::directory_iterator(drm_class_, ec)) {
      const std::string name = card.path().filename().string();
      if (name.size() < 5 || name.rfind("card", 0) != 0 ||
          name.find_first_not_of("0123456789", 4) != std::string::npos)
        continue;  // connectors (card0-DP-1), render nodes
      const std::string dev = card.path().string() + "/device";
      std::error_code ec2;
      const std::string pdev = fs::read_symlink(dev, ec2).filename().string();
      if (ec2 || pdev.empty()) continue;
      std::string line;
      {
        std::ifstream f(dev + "/power/runtime_status");
        if (f && std::getline(f, line) && line == "suspended") {
          if (fs::exists(dev + "/gpu_busy_percent", ec2)) busy_[pdev].reads++;
          continue;
        }
      }
      std::ifstream f(dev + "/gpu_busy_percent");
      uint64_t v = 0;
      if (!f || !std::getline(f, line) || !ParseUnsigned(line, &v)) continue;
      Busy& b = busy_[pdev];
      b.sum += double(std::min<uint64_t>(v, 100));
      b.reads++;
    }
  }

  std::string drm_class_, self_proc_;
  std::function<int64_t()> clock_ns_;
  std::map<std::string, Busy> busy_;  // PCI address -> reads since the last sample
  Reading previous_own_;
  bool sampled_ = false;
  int64_t last_sample_ns_ = 0;
  std::optional<double> value_;
};

std::function<int64_t()> SteadyNs() {
  return [] {
    return int64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::steady_clock::now().time_since_epoch())
                       .count());
  };
}

}  // namespace

std::unique_ptr<GpuSensorSource> DrmUsageGpuSource(const std::string& proc_root,
                                                   std::function<int64_t()> clock_ns) {
  return std::make_unique<DrmUsageGpu>(proc_root, clock_ns ? std::move(clock_ns) : SteadyNs());
}

std::unique_ptr<GpuSensorSource> AmdgpuBusyGpuSource(const std::string& drm_class,
                                                     const std::string& self_proc,
                                                     std::function<int64_t()> clock_ns) {
  return std::make_unique<AmdgpuBusyGpu>(drm_class, self_proc,
                                         clock_ns ? std::move(clock_ns) : SteadyNs());
}

}  // namespace pcfarm
