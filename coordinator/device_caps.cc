#include "coordinator/device_caps.h"

#include <algorithm>

namespace pcfarm {

namespace {

// A device's memory as JSON stores it (non-numbers and negatives: 0).
uint64_t Bytes(const nlohmann::json& d, const char* key) {
  auto it = d.find(key);
  if (it == d.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) return uint64_t(std::max<int64_t>(0, it->get<int64_t>()));
  double v = it->get<double>();
  return v > 0 && v < 1.8e19 ? uint64_t(v) : 0;
}

}  // namespace

void CapsFromDevices(const std::string& devices_json, DeviceCaps* caps, double* gflops) {
  CapsFromDevices(nlohmann::json::parse(devices_json, nullptr, false), caps, gflops);
}

void CapsFromDevices(const nlohmann::json& devices, DeviceCaps* caps, double* gflops) {
  *caps = DeviceCaps{};
  *gflops = 0;
  if (devices.is_array()) {
    for (const auto& d : devices) {
      if (!d.is_object()) continue;
      DeviceCap cap;
      if (auto it = d.find("backend"); it != d.end() && it->is_string())
        cap.backend = it->get<std::string>();
      uint64_t usable = Bytes(d, "memory_bytes");
      const uint64_t free = Bytes(d, "free_bytes");
      if (free > 0) usable = std::min(usable, free);
      cap.memory_bytes = int64_t(std::min<uint64_t>(usable, uint64_t(INT64_MAX)));
      caps->devices.push_back(std::move(cap));
      if (auto it = d.find("gflops"); it != d.end() && it->is_number())
        *gflops = std::max(*gflops, it->get<double>());
    }
  }
  if (caps->devices.empty()) caps->devices = {DeviceCap{}};
}

Status ApplyDeviceFree(const nlohmann::json& stored, std::span<const uint64_t> free,
                       nlohmann::json* updated, bool* material) {
  *material = false;
  if (!stored.is_array() || stored.size() != free.size())
    return InvalidArgument("READY gives free memory of " + std::to_string(free.size()) +
                           " devices; HELLO declared " +
                           std::to_string(stored.is_array() ? stored.size() : 0));
  *updated = stored;
  constexpr uint64_t kMinMove = uint64_t(64) << 20;
  for (size_t i = 0; i < free.size(); ++i) {
    nlohmann::json& d = (*updated)[i];
    if (!d.is_object()) continue;
    const uint64_t before = Bytes(d, "free_bytes");
    const uint64_t now = free[i];
    const uint64_t threshold = std::max(kMinMove, Bytes(d, "memory_bytes") / 32);
    const uint64_t moved = now > before ? now - before : before - now;
    if ((before == 0) != (now == 0) || moved > threshold) *material = true;
    d["free_bytes"] = now;
  }
  return Status::Ok();
}

}  // namespace pcfarm
