#include "worker/seen_attempts.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "base/file.h"

namespace pcfarm {

std::unique_ptr<SeenAttempts> SeenAttempts::Open(const std::string& path) {
  std::unique_ptr<SeenAttempts> s(new SeenAttempts(path));
  auto text = ReadFile(path, 64 << 20);
  if (!text.ok()) return s;
  try {
    for (const auto& e : nlohmann::json::parse(*text)) {
      s->seen_[e.at(0).get<uint64_t>()] = e.at(1).get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    spdlog::warn("{} is damaged ({}); starting a new replay list", path, e.what());
    s->seen_.clear();
  }
  return s;
}

Result<bool> SeenAttempts::Insert(uint64_t attempt_id, int64_t deadline_ms,
                                  int64_t now_ms) {
  for (auto it = seen_.begin(); it != seen_.end();) {
    it = it->second < now_ms ? seen_.erase(it) : std::next(it);
  }
  if (!seen_.emplace(attempt_id, deadline_ms).second) return false;
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& [id, deadline] : seen_) arr.push_back({id, deadline});
  Status s = WriteFileAtomic(path_, arr.dump(), 0600);
  if (!s.ok()) {
    seen_.erase(attempt_id);
    return s;
  }
  return true;
}

}  // namespace pcfarm
