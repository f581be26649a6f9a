// ResultSpool: results a worker has computed but the coordinator has not yet
// ACKed, kept in a directory so that a worker killed (or a coordinator
// unreachable) after the computation still delivers them later.
//
// One file per attempt, "<attempt_id as 16 hex digits>.result", written with
// WriteFileAtomic, holding a 64-byte header then the body:
//   magic "PCFSPOL1" | attempt_id u64 | seq u64 | body length u64 |
//   BLAKE2b-256 of the body (32 bytes)        (integers little-endian)
// `seq` orders entries oldest first across restarts. An entry whose header,
// length or hash does not check out is logged, deleted and counted in
// discarded(); stray temp files of an interrupted write are deleted at
// Open(); files with other names are left alone.
//
// Thread-safety: all methods may be called from several threads. One
// ResultSpool per directory per process; two processes must not share a
// directory.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

// Bodies larger than this are refused by Put and treated as corrupt on read.
inline constexpr uint64_t kMaxSpoolEntryBytes = uint64_t(1) << 30;

class ResultSpool {
 public:
  struct Entry {
    uint64_t attempt_id = 0;
    uint64_t size_bytes = 0;  // of the body
  };

  // Opens (creating if missing, mode 0700) the spool in `dir`, deletes
  // leftover temp files and learns the next sequence number.
  static Result<std::unique_ptr<ResultSpool>> Open(const std::string& dir);

  // Stores `body` for `attempt_id`, durably (fsynced) before returning.
  // Replaces an earlier entry of the same attempt, which becomes the newest.
  Status Put(uint64_t attempt_id, std::string_view body);

  // The intact pending entries, oldest Put first. Verifies every entry and
  // discards the corrupt ones (see above).
  Result<std::vector<Entry>> List();

  // The body of `attempt_id`. NotFound when absent; Corruption when it is
  // damaged (the entry is then discarded).
  Result<std::string> Get(uint64_t attempt_id);

  // An entry's output when it travels as a blob (ResultBody.output_blob):
  // "<attempt_id as 16 hex digits>.output", the raw bytes (the result names
  // their hash; the caller checks it). Written durably before the entry's
  // Put; one without an entry (a crash between the two) is deleted at Open.
  Status PutOutput(uint64_t attempt_id, std::string_view output);
  // NotFound when absent.
  Result<std::string> GetOutput(uint64_t attempt_id);

  // Deletes the entry and its output (the coordinator ACKed it). OK if it
  // was absent.
  Status Remove(uint64_t attempt_id);

  // How many corrupt entries and stray temp files this instance discarded.
  uint64_t discarded() const;

  const std::string& dir() const { return dir_; }

 private:
  explicit ResultSpool(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(uint64_t attempt_id) const;
  std::string OutputPathOf(uint64_t attempt_id) const;
  struct Parsed {
    uint64_t seq = 0;
    std::string body;
  };
  // Reads and verifies one entry file; discards it when corrupt.
  // REQUIRES: mu_ held.
  Result<Parsed> ReadEntryLocked(uint64_t attempt_id);
  void DiscardLocked(const std::string& path, const std::string& why);

  const std::string dir_;
  mutable std::mutex mu_;
  uint64_t next_seq_ = 1;  // guarded by mu_
  uint64_t discarded_ = 0;  // guarded by mu_
};

}  // namespace pcfarm
