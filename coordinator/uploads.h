// Uploads: the coordinator's side of `pcfarm` uploads into its blob store
// (UploadBegin / UploadChunk client requests, DESIGN.md §7).
//
// An upload is named one of two ways by Begin, with its size:
// - by its BLAKE2b-256 hash, when the client knows it (its hash cache): a
//   blob the store holds is not sent again (`present`);
// - by an upload id (kUploadIdBytes the client chose at random), when it
//   does not: the client sends at once, without reading the file twice, and
//   the blob is named by the hash of the bytes that arrive (the last chunk's
//   reply says it). A client can only ever make a blob whose bytes hash to
//   its name. A Begin for an id that completed lately answers `present`
//   with the hash (a client that lost the last reply does not send again);
//   one for a new id answers `maybe_present` when a stored blob has that
//   size (a stat per blob), so that the client hashes the file and asks by
//   hash instead of sending what may be stored.
// A partial upload continues from the bytes already held (BlobStore::
// ResumeWriter: kept on disk across restarts). Chunks must arrive in order
// (the CLI keeps several in flight on one connection, which ZeroMQ delivers
// in order): a chunk at the accepted offset is appended, one wholly before
// it is a repeat and is acknowledged, one past it is refused naming the
// offset to resume from. The last chunk commits the blob: size and (for an
// upload named by its hash) hash are checked (a mismatch discards the whole
// upload, Corruption), then it is fsynced and renamed into place. An upload
// that would leave less than `min_free_disk_bytes` free on the data
// directory's disk is refused (ResourceExhausted) before its bytes are
// written.
//
// Chunks are written and hashed on a writer thread of this object, so that
// the event loop only queues them: a chunk's reply says it was accepted
// (queued, at most `writer_queue_bytes` behind the disk), not written. A
// write that fails is reported (IoError) in the reply to a later chunk of
// that upload, at the latest the last one, whose reply is sent only once
// every byte is written and the blob is committed; a Begin after it
// continues from the bytes on disk. A chunk that finds the queue full waits
// for room.
//
// Thread-safety: Begin, Chunk and Flush from one thread (the server's event
// loop); the writer thread is internal.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

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
  // Accepted chunk bytes not yet written, at most (one chunk more when a
  // single chunk is larger): the CLI's window of 8 chunks of 1 MiB.
  int64_t writer_queue_bytes = int64_t(8) << 20;
};

class Uploads {
 public:
  // `free_bytes` reports the free bytes of the blob store's disk (tests
  // inject one; FreeDiskBytes(dir) otherwise). Starts the writer thread.
  Uploads(BlobStore* blobs, UploadOptions options,
          std::function<Result<int64_t>()> free_bytes);
  // Writes what is queued, then stops the writer thread (the files of
  // unfinished uploads stay on disk).
  ~Uploads();
  Uploads(const Uploads&) = delete;
  Uploads& operator=(const Uploads&) = delete;

  Result<wire::UploadBeginReply> Begin(const wire::UploadBeginRequest& request);
  // `*stored_hex` and `*stored_size` are set to the blob's hex hash and size
  // when this chunk completed it (the reply's `hash` too).
  // The rvalue form moves the chunk's bytes into the writer's queue
  // instead of copying them (the event loop's share of an upload).
  Result<wire::UploadChunkReply> Chunk(wire::UploadChunkRequest&& request,
                                       std::string* stored_hex, int64_t* stored_size);
  Result<wire::UploadChunkReply> Chunk(const wire::UploadChunkRequest& request,
                                       std::string* stored_hex, int64_t* stored_size) {
    return Chunk(wire::UploadChunkRequest(request), stored_hex, stored_size);
  }
  // Returns once every accepted chunk is written (or its write failed).
  void Flush();

 private:
  struct Open {
    std::string name;  // the partial's name: the hash or the upload id, hex
    bool by_id = false;
    std::unique_ptr<BlobWriter> writer;  // the writer thread's while pending > 0
    int64_t size = 0;
    int64_t accepted = 0;  // bytes written or queued
    uint64_t last_use = 0;
    // Guarded by mu_.
    int pending = 0;  // queued chunks not yet written
    Status failed;    // the first failed write; later chunks are dropped
  };
  struct QueuedChunk {
    Open* open;
    std::string data;
  };
  // The partial's name of a request: its hash, or its upload id.
  static Result<std::string> NameOf(const std::string& hash, const std::string& upload_id,
                                    bool* by_id);
  void RememberCompleted(const std::string& id, const std::string& hex, int64_t size);
  Status CheckSpace(int64_t more_bytes);
  Result<Open*> GetOpen(const std::string& name, bool by_id, int64_t size);
  // Waits for `o`'s queued chunks; returns its first failed write.
  Status Settle(Open* o);
  // Settles `o`, then forgets it (its bytes stay on disk).
  void Close(const std::string& name);
  void Enqueue(Open* o, std::string data);
  void WriterLoop();

  BlobStore* blobs_;
  UploadOptions options_;
  std::function<Result<int64_t>()> free_bytes_;
  std::map<std::string, std::unique_ptr<Open>> open_;
  uint64_t uses_ = 0;
  // Uploads by id that completed lately (id -> hash hex, size), oldest
  // first in completed_order_.
  std::map<std::string, std::pair<std::string, int64_t>> completed_;
  std::deque<std::string> completed_order_;

  std::mutex mu_;
  std::condition_variable work_cv_;  // the writer thread waits for chunks
  std::condition_variable done_cv_;  // the loop waits for room or a settle
  std::deque<QueuedChunk> queue_;    // guarded by mu_
  int64_t queued_bytes_ = 0;         // guarded by mu_: queued or being written
  bool stopping_ = false;            // guarded by mu_
  std::thread writer_;
};

// statvfs: bytes available to an unprivileged writer on the disk of `dir`.
Result<int64_t> FreeDiskBytes(const std::string& dir);

}  // namespace pcfarm
