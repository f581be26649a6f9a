// BlobFetcher: downloads blobs from the coordinator in chunks with
// credit-based flow control (the ZeroMQ guide's fileio3 pattern): up to
// `credit` BLOB_GET requests are in flight; each BLOB_CHUNK that arrives is
// appended to the cache's download and buys the next request. Downloads
// resume from the partial file after a restart, and a finished blob is
// hash-verified by the cache before anyone may use it.
//
// The fetcher does not own a socket: it emits WorkerFrames through `send`
// and is fed the BLOB_CHUNKs the caller receives.
//
// Thread-safety: not thread-safe; one event loop owns it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "crypto/hash.h"
#include "proto/pcfarm.pb.h"
#include "worker/blob_cache.h"

namespace pcfarm {

class BlobFetcher {
 public:
  using Send = std::function<void(wire::WorkerFrame)>;

  BlobFetcher(BlobCache* cache, Send send, int credit, int chunk_bytes);

  // Starts fetching `hash` unless it is cached or already being fetched.
  void Want(const Hash256& hash);
  // Feeds a BLOB_CHUNK. Returns the hash of a blob that just completed
  // (verified and in the cache), nullopt otherwise; an error for a chunk
  // that breaks the transfer (a gap, a size that changed, bytes that do
  // not hash to the blob): the download is abandoned and begun again at
  // once, up to kMaxTries times in a row for one blob; after that the blob
  // is given up (TakeFailed) until the next Want. A chunk for bytes already
  // written (the answer to a request sent before a Reset, or to a second
  // probe) is ignored.
  Result<std::optional<Hash256>> OnChunk(const wire::BlobChunk& chunk);
  // The coordinator says it does not hold `hash` (a REJECT naming it): a
  // transfer of it is given up at once (TakeFailed, with `why`).
  void OnMissing(const Hash256& hash, const std::string& why);
  // A blob given up, and why its last transfer broke.
  struct Failure {
    Hash256 hash;
    std::string why;
  };
  // The blobs given up since the last call: whoever waits for one will not
  // get it from this fetcher unless it asks again.
  std::vector<Failure> TakeFailed();
  // Called now and then while connected (`now_ms` monotonic): a transfer
  // that received no chunk for kStallMs (a request or answer lost, a
  // coordinator that stopped answering it) is broken like a bad chunk:
  // begun again, or given up after kMaxTries. Returns why, one per such
  // transfer. A waiting shard's lease is renewed by every heartbeat, so
  // without this a silent transfer would hold it until --max-attempt-ms.
  std::vector<Status> Tick(int64_t now_ms);
  // Forgets every transfer in flight (after a reconnect); partial files stay
  // and later transfers resume from them.
  void Reset();
  // Re-requests everything Want()ed but not complete (after a reconnect).
  void Restart();

  static constexpr int kMaxTries = 3;
  static constexpr int64_t kStallMs = 60'000;

  bool Busy() const { return !transfers_.empty(); }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  struct Transfer {
    std::unique_ptr<BlobDownload> download;  // null until the size is known
    uint64_t next_offset = 0;  // of the next request to send
    int in_flight = 0;
    int tries = 1;  // transfers begun for this blob in a row
    bool heard = false;        // a chunk arrived since the last Tick
    int64_t progress_ms = -1;  // the Tick that last saw it move
  };
  void Request(const Hash256& hash, Transfer& t);
  // Ends a broken transfer: begins it again, or gives the blob up after
  // kMaxTries (failed_); returns `why` with which it was.
  Status Abandon(std::map<Hash256, Transfer>::iterator it, Status why);

  BlobCache* cache_;
  Send send_;
  int credit_;
  int chunk_bytes_;
  std::map<Hash256, Transfer> transfers_;
  std::vector<Failure> failed_;
  uint64_t bytes_received_ = 0;
};

}  // namespace pcfarm
