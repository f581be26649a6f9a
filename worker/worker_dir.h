// The worker's data directory (made by `pcfarm-worker enroll`):
//   worker.key         the worker's Ed25519 + Curve25519 identity (0600)
//   coordinator.json   the coordinator it enrolled with: endpoint and both
//                      public keys, pinned from the enrollment token
//   spool/             results kept until the coordinator ACKs them
//   blobs/             the verified, size-capped blob cache
//   seen.json          attempt ids already accepted (replay protection)
//   status.json        what `pcfarm-worker run` is doing, for
//                      `pcfarm-worker status` (rewritten as it changes)
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace pcfarm {

struct WorkerPaths {
  explicit WorkerPaths(std::string dir);
  std::string dir, key_file, coordinator_file, spool_dir, blob_dir, seen_file,
      status_file;
};

// What a worker pins about its coordinator.
struct CoordinatorPin {
  std::string endpoint;
  std::string sign_pk;   // Ed25519, 32 raw bytes: signs every shard
  std::string curve_pk;  // Curve25519, 32 raw bytes: the CurveZMQ server key
  int64_t worker_id = 0;
  std::string name;
};

Status SaveCoordinatorPin(const std::string& path, const CoordinatorPin& pin);
Result<CoordinatorPin> LoadCoordinatorPin(const std::string& path);

}  // namespace pcfarm
