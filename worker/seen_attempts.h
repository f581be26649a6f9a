// SeenAttempts: the attempt ids this worker has already accepted, so a
// replayed ASSIGN (the same signed shard sent again) is refused. Entries are
// kept until their shard's deadline passes (after that the deadline check
// refuses the shard anyway) and persisted in one small file so a restart
// does not forget them.
//
// Thread-safety: not thread-safe; the worker's event loop owns it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "base/status.h"

namespace pcfarm {

class SeenAttempts {
 public:
  // Loads `path` if present; a damaged file is logged and started afresh.
  static std::unique_ptr<SeenAttempts> Open(const std::string& path);

  // Returns true and records the attempt iff it was not seen before.
  // Entries whose deadline is before `now_ms` are dropped first.
  Result<bool> Insert(uint64_t attempt_id, int64_t deadline_ms, int64_t now_ms);
  size_t size() const { return seen_.size(); }

 private:
  explicit SeenAttempts(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::map<uint64_t, int64_t> seen_;  // attempt id -> deadline
};

}  // namespace pcfarm
