// Uploads: the coordinator's side of `pcfarm` uploads into its blob store
// (UploadBegin / UploadChunk client requests, DESIGN.md §7).
//
// A file is named by its BLAKE2b-256 hash, announced with its size by
// Begin: a blob the store holds is not sent again (`present`), and a partial
// upload continues from the bytes already held (BlobStore::ResumeWriter:
// kept on disk across restarts). Chunks must arrive in order (the CLI keeps
// several in flight on one connection, which ZeroMQ delivers in order): a
// chunk at the held offset is appended, one wholly before it is a repeat
// and is acknowledged, one past it is refused naming the offset to resume
// from. The last chunk commits the blob: size and hash are checked (a
// mismatch discards the whole upload, Corruption), then it is fsynced and
// renamed into place. An upload that would leave less than
// `min_free_disk_bytes` free on the data directory's disk is refused
// (ResourceExhausted) before its bytes are written.
//
// Thread-safety: one thread (the server's event loop).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/blob_store.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

struct UploadOptions {
  int64_t min_free_disk_bytes = int64_t(1) << 30;
  // The largest chunk accepted (wire limit: WireLimits::upload_chunk_bytes).
  int64_t chunk_bytes = int64_t(1) << 20;
  // Uploads with an open file at once; the least recently used one is
  // closed (its bytes stay on disk) when a new one begins.
  size_t max_open = 16;
};

class Uploads {
 public:
  // `free_bytes` reports the free bytes of the blob store's disk (tests
  // inject one; FreeDiskBytes(dir) otherwise).
  Uploads(BlobStore* blobs, UploadOptions options,
          std::function<Result<int64_t>()> free_bytes);

  Result<wire::UploadBeginReply> Begin(const wire::UploadBeginRequest& request);
  // `*stored` is set to the blob's hex hash and size when this chunk
  // completed it.
  Result<wire::UploadChunkReply> Chunk(const wire::UploadChunkRequest& request,
                                       std::string* stored_hex, int64_t* stored_size);

 private:
  struct Open {
    std::unique_ptr<BlobWriter> writer;
    int64_t size = 0;
    uint64_t last_use = 0;
  };
  Status CheckSpace(int64_t more_bytes) const;
  Result<Open*> GetOpen(const std::string& hex, int64_t size);

  BlobStore* blobs_;
  UploadOptions options_;
  std::function<Result<int64_t>()> free_bytes_;
  std::map<std::string, Open> open_;
  uint64_t uses_ = 0;
};

// statvfs: bytes available to an unprivileged writer on the disk of `dir`.
Result<int64_t> FreeDiskBytes(const std::string& dir);

}  // namespace pcfarm
