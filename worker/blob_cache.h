// BlobCache: the worker's content-addressed, size-capped cache of blobs
// (model files, datasets, adapters), named by their BLAKE2b-256 hash.
//
// Layout of the directory:
//   <64 hex>          a complete, verified blob
//   <64 hex>.part     a download in progress; its length is the offset at
//                     which it resumes, also after a restart
//   *.tmp.*           leftovers of an interrupted write; deleted by Open()
// Nothing enters the cache unverified: Put and BlobDownload::Finish hash the
// bytes and refuse (Corruption, nothing stored) when the hash differs.
//
// Eviction: when complete blobs would exceed capacity_bytes, the least
// recently used unpinned blobs are deleted. "Used" means Put, Get, Path or a
// finished download. Recency is kept in each blob's mtime (set from the
// injected Clock), so the LRU order survives a restart. Partial downloads do
// not count against the cap.
//
// Thread-safety: BlobCache's methods may be called from several threads.
// A BlobDownload belongs to one thread at a time; the cache must outlive it.
// One BlobCache per directory per process.
#pragma once

#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "crypto/hash.h"

namespace pcfarm {

// worker_blob_cache_bytes: the most bytes of complete blobs the worker keeps
// on disk before it evicts the least recently used ones.
inline constexpr uint64_t kDefaultWorkerBlobCacheBytes = uint64_t(20) << 30;

class BlobDownload;

class BlobCache {
 public:
  // Opens (creating if missing) the cache in `dir`, learns the blobs there
  // and their recency, deletes temp files and evicts down to the cap.
  // `clock` is not owned and must outlive the cache.
  static Result<std::unique_ptr<BlobCache>> Open(
      const std::string& dir, uint64_t capacity_bytes,
      Clock* clock = SystemClock::Get());
  ~BlobCache();

  // Stores `bytes` as blob `hash`. Corruption when they do not hash to
  // `hash`; ResourceExhausted when they are larger than the cap or pinned
  // blobs leave no room. Storing a blob already present only marks it used.
  Status Put(const Hash256& hash, std::string_view bytes);

  // True iff the complete blob is cached.
  bool Has(const Hash256& hash) const;

  // Reads the blob, verifies it, and marks it used. NotFound when absent;
  // Corruption when the file no longer matches its hash (it is deleted).
  Result<std::string> Get(const Hash256& hash);

  // The path of the blob's file, for memory-mapping; marks it used. A blob
  // this process did not store itself (found by Open) is re-hashed the
  // first time: a file damaged on this PC's disk would otherwise give
  // wrong results, which the farm's checks take for cheating. Corruption
  // when it no longer matches its hash (it is deleted, so the next shard
  // fetches it again). The file stays until the blob is evicted: Pin it
  // meanwhile.
  Result<std::string> Path(const Hash256& hash);

  // Complete blobs, least recently used first.
  std::vector<Hash256> List() const;

  // Deletes the blob (and any partial download of it). OK if absent.
  Status Remove(const Hash256& hash);

  // A pinned blob is never evicted. Pins nest; Unpin undoes one Pin.
  // NotFound when the blob is not cached.
  Status Pin(const Hash256& hash);
  void Unpin(const Hash256& hash);

  // Starts or resumes downloading blob `hash` of `size` bytes. The writer's
  // offset() is where the transfer must continue. AlreadyExists when the blob
  // is cached; FailedPrecondition when another writer for it is open;
  // ResourceExhausted when `size` is over the cap.
  Result<std::unique_ptr<BlobDownload>> BeginDownload(const Hash256& hash,
                                                      uint64_t size);

  // Bytes of complete blobs.
  uint64_t size_bytes() const;
  uint64_t capacity_bytes() const { return capacity_bytes_; }
  // Blobs deleted to stay under the cap, since Open.
  uint64_t evictions() const;

 private:
  friend class BlobDownload;
  struct Blob {
    uint64_t size = 0;
    std::list<Hash256>::iterator lru_pos;
    bool verified = false;  // hashed by this process (stored, or by Path)
  };

  BlobCache(std::string dir, uint64_t capacity_bytes, Clock* clock)
      : dir_(std::move(dir)), capacity_bytes_(capacity_bytes), clock_(clock) {}
  std::string BlobPath(const Hash256& hash) const;
  std::string PartPath(const Hash256& hash) const;
  // REQUIRES: mu_ held, for all *Locked methods.
  void TouchLocked(const Hash256& hash);
  Status MakeRoomLocked(uint64_t need);
  void InsertLocked(const Hash256& hash, uint64_t size, bool verified);
  void EraseLocked(const Hash256& hash);
  // Deletes a damaged or vanished blob's file and forgets it, saying why.
  void DropLocked(const Hash256& hash, const std::string& why);
  // Moves a verified, synced .part file into the cache.
  Status AdoptPart(const Hash256& hash, uint64_t size);
  void EndDownload(const Hash256& hash);

  const std::string dir_;
  const uint64_t capacity_bytes_;
  Clock* const clock_;
  mutable std::mutex mu_;
  std::map<Hash256, Blob> blobs_;         // guarded by mu_
  std::list<Hash256> lru_;                // guarded by mu_; front = oldest
  std::map<Hash256, int> pins_;           // guarded by mu_
  std::set<Hash256> downloading_;         // guarded by mu_
  uint64_t size_bytes_ = 0;               // guarded by mu_
  uint64_t evictions_ = 0;                // guarded by mu_
};

// Writes one blob chunk by chunk, in order, from wherever it left off.
class BlobDownload {
 public:
  ~BlobDownload();  // keeps the .part file so a later BeginDownload resumes
  BlobDownload(const BlobDownload&) = delete;
  BlobDownload& operator=(const BlobDownload&) = delete;

  const Hash256& hash() const { return hash_; }
  uint64_t size() const { return size_; }
  // Bytes received so far: the offset of the next chunk.
  uint64_t offset() const { return offset_; }

  // Appends a chunk. InvalidArgument when `offset` is not offset() (a chunk
  // out of order, repeated or overlapping) or the chunk runs past size().
  Status Append(uint64_t offset, std::string_view bytes);

  // REQUIRES offset() == size(), else FailedPrecondition. Verifies the hash:
  // on a mismatch the partial file is deleted and Corruption returned; on a
  // match the blob enters the cache (evicting others if needed). The writer
  // is spent either way.
  Status Finish();

 private:
  friend class BlobCache;
  BlobDownload(BlobCache* cache, const Hash256& hash, uint64_t size, int fd,
               uint64_t offset, Blake2bHasher hasher)
      : cache_(cache), hash_(hash), size_(size), fd_(fd), offset_(offset),
        hasher_(hasher) {}

  BlobCache* const cache_;
  const Hash256 hash_;
  const uint64_t size_;
  int fd_;  // of the .part file, -1 once spent
  uint64_t offset_;
  uint64_t writeback_from_ = 0;  // bytes before this were handed to writeback
  Blake2bHasher hasher_;
};

}  // namespace pcfarm
