// Uploads from the CLI into the coordinator's blob store (the coordinator's
// side: coordinator/uploads.h).
//
// A file whose hash the CLI knows is announced by it, so that a file the
// coordinator already holds is not sent at all; the hash is remembered per
// file (device, inode, size, mtime) in $XDG_CACHE_HOME/pcfarm/file-hashes
// (default ~/.cache), so uploading the same unchanged file again costs no
// read. A file not in that cache is not hashed first (that would read it
// twice, before the first byte leaves): it is sent at once under a random
// upload id, remembered in the same cache so that a run killed midway
// continues, and the coordinator, which hashes what arrives anyway, names
// the blob and says its hash, which the cache then keeps (unless the
// coordinator holds a blob of the file's size: then the file is hashed
// first, as it may be stored already). UploadBegin says
// what the coordinator holds, and chunks go from there in order,
// kUploadWindow in flight. When the coordinator stops answering or restarts
// mid-upload, the upload begins again from what it holds (after a backoff)
// until `patience_s` passes without progress.
//
// Progress goes to stderr: a bar on a terminal, a line per 10% otherwise.
//
// Thread-safety: one thread.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "coordinator/cli/client.h"

namespace pcfarm {

inline constexpr int kUploadWindow = 8;

struct UploadReport {
  std::string hash_hex;
  int64_t size = 0;
  int64_t sent = 0;          // bytes sent this time (0: deduplicated)
  bool deduplicated = false;
};

struct CliUploadOptions {
  std::string label;        // shown in progress lines (e.g. the file name)
  bool progress = true;     // print progress to stderr
  double patience_s = 120;  // give up after this long without progress
};

// Uploads the file at `path`. FailedPrecondition when it changed (size or
// mtime) while it was sent by id.
Result<UploadReport> UploadFile(CoordinatorClient* client, const std::string& path,
                                const CliUploadOptions& options);
// Uploads `bytes` (a file made in memory, e.g. normalized prompts).
Result<UploadReport> UploadBytes(CoordinatorClient* client, const std::string& bytes,
                                 const CliUploadOptions& options);

}  // namespace pcfarm
