// BlobStore: content-addressed files (model weights, datasets, gradients).
//
// A blob is named by the lowercase hex BLAKE2b-256 of its bytes and lives at
// DIR/blobs/<first 2 hex>/<hex>. Uploads in progress live in DIR/partial
// (kept across restarts, see ResumeWriter). Writes go to DIR/tmp, are fsynced, renamed
// into place and the directory fsynced, so after a crash a blob is either
// whole or absent; Open() clears temp files a crash left behind. Blobs are
// immutable once written; the coordinator's collector removes the ones no
// job needs (RemoveUnlessTouched).
//
// Hashes given to any method are checked (64 hex digits, either case);
// InvalidArgument otherwise, so a peer's hash can never name another path.
//
// Thread-safety: methods may be called from several threads; two writers of
// the same blob both succeed and leave one file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "crypto/hash.h"

namespace pcfarm {

// The largest chunk ReadChunk returns (and the largest message a blob
// transfer needs).
constexpr int64_t kBlobMaxChunkBytes = int64_t(8) << 20;
// An upload id (ResumeUnnamedWriter) has this many bytes, 2x as hex digits.
constexpr size_t kUploadIdBytes = 16;

class BlobWriter;

class BlobStore {
 public:
  // Creates DIR/blobs and DIR/tmp when missing; removes stale temp files.
  static Result<std::unique_ptr<BlobStore>> Open(const std::string& dir);

  // Stores `bytes`; returns their hash (hex). Storing a present blob is OK.
  Result<std::string> Put(std::string_view bytes);
  // Stores the file at `path`, streaming it; returns its hash (hex).
  Result<std::string> PutFile(const std::string& path);

  bool Has(std::string_view hash_hex) const;
  // Removes the blob's file unless it was modified at or after
  // `unused_since_unix_ms`: Put and Commit of a blob already stored touch
  // it, so one stored again after a collector found it unused stays.
  // Returns whether it removed the file (false: absent, or kept).
  Result<bool> RemoveUnlessTouched(std::string_view hash_hex, int64_t unused_since_unix_ms);
  // True iff a stored blob has exactly `size` bytes. Lists the store (a
  // stat per blob).
  bool HasBlobOfSize(int64_t size) const;
  // NotFound when absent.
  Result<int64_t> Size(std::string_view hash_hex) const;
  // Up to `length` bytes from `offset`; fewer only at the end of the blob
  // (empty at offset == size). InvalidArgument: negative values or offset
  // past the end; ResourceExhausted: length > kBlobMaxChunkBytes.
  Result<std::string> ReadChunk(std::string_view hash_hex, int64_t offset,
                                int64_t length) const;
  // Re-hashes the file: OK iff its bytes still hash to its name, Corruption
  // otherwise, NotFound when absent.
  Status Verify(std::string_view hash_hex) const;
  // Moves a damaged blob's file out of the store, to DIR/damaged/<hex>
  // (replacing one there) for its operator to look at; returns that path.
  // The store then has no such blob, so an upload stores it afresh.
  // NotFound when absent.
  Result<std::string> SetAside(std::string_view hash_hex);

  // A writer for a blob arriving chunk by chunk whose hash and size are
  // announced up front. InvalidArgument for a bad hash or negative size.
  Result<std::unique_ptr<BlobWriter>> NewWriter(std::string_view hash_hex,
                                                int64_t size);

  // A writer for an upload that may be interrupted and continued: its bytes
  // go to DIR/partial/<hash>, which Open() keeps, so a later ResumeWriter
  // for the same hash continues at written() (the bytes already held are
  // hashed again to rebuild the hash state: a restart costs one read of
  // them). Destroying the writer without Commit() keeps the partial file; a
  // failed Commit() (size or hash wrong) removes it. A partial file longer
  // than `size` is started over. InvalidArgument for a bad hash or size.
  Result<std::unique_ptr<BlobWriter>> ResumeWriter(std::string_view hash_hex,
                                                   int64_t size);
  // The same for an upload whose hash the sender does not know yet, named by
  // an upload id it chose (kUploadIdBytes random bytes, as hex): its bytes go
  // to DIR/partial/<upload id>, and Commit() names the blob by the hash of
  // what arrived. InvalidArgument for a bad id or size.
  Result<std::unique_ptr<BlobWriter>> ResumeUnnamedWriter(std::string_view upload_id_hex,
                                                          int64_t size);
  // Bytes held of a partial upload, named by its hash or upload id (0 when
  // there is none).
  int64_t PartialSize(std::string_view partial_name) const;
  // Removes a partial upload (OK when there is none).
  Status DropPartial(std::string_view partial_name);

  // DIR/blobs/ab/abcd...; REQUIRES: hash_hex is a valid hash.
  std::string PathOf(std::string_view hash_hex) const;

 private:
  explicit BlobStore(std::string dir) : dir_(std::move(dir)) {}
  friend class BlobWriter;
  // Has(), and when stored sets the file's modification time to now
  // (RemoveUnlessTouched).
  bool HasTouched(std::string_view hash_hex) const;
  // DIR/partial/<name> for a hash or an upload id; InvalidArgument otherwise.
  Result<std::string> PartialPath(std::string_view partial_name) const;
  Result<std::unique_ptr<BlobWriter>> Resume(std::string path, std::string expected_hex,
                                             int64_t size);
  std::string dir_;
};

// Receives one blob in order. The temp file is discarded unless Commit()
// succeeds (also when the writer is destroyed first).
class BlobWriter {
 public:
  ~BlobWriter();
  BlobWriter(const BlobWriter&) = delete;
  BlobWriter& operator=(const BlobWriter&) = delete;

  // ResourceExhausted when the bytes would exceed the announced size. The
  // disk's writeback is started every 8 MiB (sync_file_range), so that
  // Commit's fsync has little left to write. After a failure the writer
  // must not be used again (the file may hold part of `data`).
  Status Append(std::string_view data);
  int64_t written() const { return written_; }
  // Checks size and hash, then makes the blob durable under its name.
  // Corruption when they do not match (the bytes are discarded). A writer
  // without an expected hash whose bytes are a stored blob drops them.
  // Returns the hash (hex).
  Result<std::string> Commit();

 private:
  friend class BlobStore;
  // `expected_hex` "" = name the blob by what arrives; size < 0 = any size.
  BlobWriter(BlobStore* store, std::string expected_hex, int64_t size,
             std::string tmp_path, int fd, bool keep_partial = false);
  void Discard();

  BlobStore* store_;
  std::string expected_hex_;
  int64_t expected_size_;
  std::string tmp_path_;
  int fd_;
  int64_t written_ = 0;
  int64_t writeback_from_ = 0;  // bytes before this had their writeback started
  Blake2bHasher hasher_;
  bool done_ = false;
  bool keep_partial_ = false;  // an unfinished writer leaves its file
};

}  // namespace pcfarm
