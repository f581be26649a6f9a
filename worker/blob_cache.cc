#include "worker/blob_cache.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/file.h"

namespace pcfarm {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

bool IsHex64(std::string_view s) {
  return s.size() == 64 &&
         s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// Sets the file's mtime (and atime) to `ms` since the epoch.
void SetMtime(const std::string& path, int64_t ms) {
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = ms / 1000;
  ts[0].tv_nsec = ts[1].tv_nsec = (ms % 1000) * 1000000;
  if (::utimensat(AT_FDCWD, path.c_str(), ts, 0) != 0) {
    // Only recency after a restart suffers; the blob itself is fine.
    spdlog::warn("blob cache: cannot set mtime of {}: {}", path,
                 std::strerror(errno));
  }
}

}  // namespace

Result<std::unique_ptr<BlobCache>> BlobCache::Open(const std::string& dir,
                                                   uint64_t capacity_bytes,
                                                   Clock* clock) {
  assert(clock != nullptr);
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  CryptoInit();
  std::unique_ptr<BlobCache> cache(new BlobCache(dir, capacity_bytes, clock));
  struct Found {
    int64_t mtime_ns;
    std::string hex;
    uint64_t size;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (const auto& de : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = de.path().filename().string();
    const std::string path = de.path().string();
    if (IsHex64(name)) {
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) return IoError(Errno("stat", path));
      if (!S_ISREG(st.st_mode)) {
        spdlog::warn("blob cache {}: ignoring {}: not a regular file", dir, name);
        continue;
      }
      found.push_back({int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                       name, uint64_t(st.st_size)});
    } else if (name.size() == 69 && IsHex64(name.substr(0, 64)) &&
               name.substr(64) == ".part") {
      // A download to resume.
    } else if (name.find(".tmp.") != std::string::npos) {
      spdlog::warn("blob cache {}: deleting {} left by an interrupted write",
                   dir, name);
      std::filesystem::remove(de.path(), ec);
      ec.clear();
    } else {
      spdlog::warn("blob cache {}: ignoring unexpected file {}", dir, name);
    }
  }
  if (ec) return IoError("list blob cache " + dir + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    return a.mtime_ns != b.mtime_ns ? a.mtime_ns < b.mtime_ns : a.hex < b.hex;
  });
  std::lock_guard<std::mutex> lock(cache->mu_);
  for (const Found& f : found) {
    cache->InsertLocked(*HashFromHex(f.hex), f.size, /*verified=*/false);
  }
  PCFARM_RETURN_IF_ERROR(cache->MakeRoomLocked(0));
  return cache;
}

BlobCache::~BlobCache() {
  assert(downloading_.empty() && "a BlobDownload outlived its BlobCache");
}

std::string BlobCache::BlobPath(const Hash256& hash) const {
  return dir_ + "/" + HashToHex(hash);
}

std::string BlobCache::PartPath(const Hash256& hash) const {
  return BlobPath(hash) + ".part";
}

void BlobCache::InsertLocked(const Hash256& hash, uint64_t size, bool verified) {
  lru_.push_back(hash);
  blobs_[hash] = Blob{size, std::prev(lru_.end()), verified};
  size_bytes_ += size;
}

void BlobCache::DropLocked(const Hash256& hash, const std::string& why) {
  const std::string path = BlobPath(hash);
  spdlog::warn("blob cache: dropping {}: {}", path, why);
  ::unlink(path.c_str());
  EraseLocked(hash);
}

void BlobCache::EraseLocked(const Hash256& hash) {
  auto it = blobs_.find(hash);
  if (it == blobs_.end()) return;
  size_bytes_ -= it->second.size;
  lru_.erase(it->second.lru_pos);
  blobs_.erase(it);
  pins_.erase(hash);
}

void BlobCache::TouchLocked(const Hash256& hash) {
  auto it = blobs_.find(hash);
  assert(it != blobs_.end());
  lru_.splice(lru_.end(), lru_, it->second.lru_pos);
  SetMtime(BlobPath(hash), clock_->NowMs());
}

Status BlobCache::MakeRoomLocked(uint64_t need) {
  auto it = lru_.begin();
  while (size_bytes_ + need > capacity_bytes_) {
    while (it != lru_.end() && pins_.count(*it) != 0) ++it;
    if (it == lru_.end()) {
      return ResourceExhausted(
          "blob cache " + dir_ + ": " + std::to_string(need) +
          " bytes do not fit: " + std::to_string(size_bytes_) + " of " +
          std::to_string(capacity_bytes_) + " bytes are used by pinned blobs");
    }
    Hash256 victim = *it++;
    const std::string path = BlobPath(victim);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return IoError(Errno("evict", path));
    }
    spdlog::info("blob cache: evicted {} ({} bytes)", HashToHex(victim),
                 blobs_[victim].size);
    EraseLocked(victim);
    ++evictions_;
  }
  return Status::Ok();
}

Status BlobCache::Put(const Hash256& hash, std::string_view bytes) {
  if (Blake2b256(bytes) != hash) {
    return Corruption("blob " + HashToHex(hash) +
                      ": bytes hash to " + HashToHex(Blake2b256(bytes)));
  }
  if (bytes.size() > capacity_bytes_) {
    return ResourceExhausted("blob " + HashToHex(hash) + ": " +
                             std::to_string(bytes.size()) +
                             " bytes is over worker_blob_cache_bytes (" +
                             std::to_string(capacity_bytes_) + ")");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (blobs_.count(hash) != 0) {
    TouchLocked(hash);
    return Status::Ok();
  }
  PCFARM_RETURN_IF_ERROR(MakeRoomLocked(bytes.size()));
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(BlobPath(hash), bytes, 0644));
  InsertLocked(hash, bytes.size(), /*verified=*/true);
  TouchLocked(hash);
  return Status::Ok();
}

bool BlobCache::Has(const Hash256& hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return blobs_.count(hash) != 0;
}

Result<std::string> BlobCache::Get(const Hash256& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  if (blobs_.count(hash) == 0) {
    return NotFound("blob " + HashToHex(hash) + " is not cached");
  }
  const std::string path = BlobPath(hash);
  auto bytes = ReadFile(path, SIZE_MAX);
  if (bytes.ok() && Blake2b256(*bytes) == hash) {
    TouchLocked(hash);
    return bytes;
  }
  if (!bytes.ok() && bytes.status().code() != StatusCode::kNotFound) {
    return bytes.status();
  }
  std::string why = bytes.ok() ? "contents no longer match the hash"
                               : "file disappeared";
  DropLocked(hash, why);
  return Corruption("cached blob " + path + ": " + why);
}

Result<std::string> BlobCache::Path(const Hash256& hash) {
  const std::string path = BlobPath(hash);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = blobs_.find(hash);
    if (it == blobs_.end()) return NotFound("blob " + HashToHex(hash) + " is not cached");
    TouchLocked(hash);
    if (it->second.verified) return path;
  }
  // Hashed without the lock (a model takes seconds); two callers may both.
  auto got = Blake2b256File(path);
  if (!got.ok() && got.status().code() != StatusCode::kNotFound) return got.status();
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blobs_.find(hash);
  if (got.ok() && *got == hash) {
    if (it != blobs_.end()) it->second.verified = true;
    return path;
  }
  if (it != blobs_.end() && it->second.verified) return path;  // stored again meanwhile
  const std::string why = got.ok() ? "was damaged on this PC's disk (its bytes hash to " +
                                         HashToHex(*got) + ")"
                                   : "disappeared";
  DropLocked(hash, "it " + why);
  return Corruption("cached blob " + HashToHex(hash) + " " + why +
                    "; deleted, to be fetched again");
}

std::vector<Hash256> BlobCache::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::vector<Hash256>(lru_.begin(), lru_.end());
}

Status BlobCache::Remove(const Hash256& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& path : {BlobPath(hash), PartPath(hash)}) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return IoError(Errno("delete", path));
    }
  }
  EraseLocked(hash);
  return Status::Ok();
}

Status BlobCache::Pin(const Hash256& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  if (blobs_.count(hash) == 0) {
    return NotFound("blob " + HashToHex(hash) + " is not cached");
  }
  ++pins_[hash];
  return Status::Ok();
}

void BlobCache::Unpin(const Hash256& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pins_.find(hash);
  if (it != pins_.end() && --it->second <= 0) pins_.erase(it);
}

uint64_t BlobCache::size_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_bytes_;
}

uint64_t BlobCache::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}

Result<std::unique_ptr<BlobDownload>> BlobCache::BeginDownload(
    const Hash256& hash, uint64_t size) {
  const std::string hex = HashToHex(hash);
  if (size > capacity_bytes_) {
    return ResourceExhausted("blob " + hex + ": " + std::to_string(size) +
                             " bytes is over worker_blob_cache_bytes (" +
                             std::to_string(capacity_bytes_) + ")");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (blobs_.count(hash) != 0) {
    return AlreadyExists("blob " + hex + " is already cached");
  }
  if (downloading_.count(hash) != 0) {
    return FailedPrecondition("blob " + hex + " is already being downloaded");
  }
  const std::string part = PartPath(hash);
  int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(Errno("open", part));
  // Re-hash what an earlier attempt received, to continue after it.
  Blake2bHasher hasher;
  uint64_t have = 0;
  std::string buf(1 << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = IoError(Errno("read", part));
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buf.data(), size_t(n)));
    have += uint64_t(n);
  }
  if (have > size) {
    spdlog::warn("blob cache: {} holds {} bytes, more than the blob's {}; "
                 "starting over", part, have, size);
    if (::ftruncate(fd, 0) != 0 || ::lseek(fd, 0, SEEK_SET) != 0) {
      Status s = IoError(Errno("truncate", part));
      ::close(fd);
      return s;
    }
    hasher = Blake2bHasher();
    have = 0;
  }
  downloading_.insert(hash);
  return std::unique_ptr<BlobDownload>(
      new BlobDownload(this, hash, size, fd, have, hasher));
}

void BlobCache::EndDownload(const Hash256& hash) {
  std::lock_guard<std::mutex> lock(mu_);
  downloading_.erase(hash);
}

Status BlobCache::AdoptPart(const Hash256& hash, uint64_t size) {
  std::lock_guard<std::mutex> lock(mu_);
  PCFARM_RETURN_IF_ERROR(MakeRoomLocked(size));
  const std::string part = PartPath(hash);
  const std::string path = BlobPath(hash);
  if (::rename(part.c_str(), path.c_str()) != 0) {
    return IoError(Errno("rename " + part + " to", path));
  }
  PCFARM_RETURN_IF_ERROR(SyncDir(dir_));
  InsertLocked(hash, size, /*verified=*/true);
  TouchLocked(hash);
  return Status::Ok();
}

BlobDownload::~BlobDownload() {
  if (fd_ >= 0) ::close(fd_);
  cache_->EndDownload(hash_);
}

Status BlobDownload::Append(uint64_t offset, std::string_view bytes) {
  const std::string part = cache_->PartPath(hash_);
  if (fd_ < 0) return FailedPrecondition(part + ": download already finished");
  if (offset != offset_) {
    return InvalidArgument(part + ": chunk at offset " + std::to_string(offset) +
                           ", expected " + std::to_string(offset_) +
                           " (out of order or overlapping)");
  }
  if (bytes.size() > size_ - offset_) {
    return InvalidArgument(part + ": chunk of " + std::to_string(bytes.size()) +
                           " bytes at offset " + std::to_string(offset) +
                           " runs past the blob's size " +
                           std::to_string(size_));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pwrite(fd_, bytes.data() + done, bytes.size() - done,
                         off_t(offset_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(Errno("write", part));
    done += size_t(n);
  }
  hasher_.Update(bytes);
  offset_ += bytes.size();
  // Start writing back every few MiB instead of leaving a whole blob of
  // dirty pages to Finish's fsync (a 1 GiB blob's fsync took 0.4 s at the
  // end of the download). Only a hint: Finish still fsyncs.
  constexpr uint64_t kWritebackBytes = 8 << 20;
  if (offset_ - writeback_from_ >= kWritebackBytes) {
    ::sync_file_range(fd_, off_t(writeback_from_), off_t(offset_ - writeback_from_),
                      SYNC_FILE_RANGE_WRITE);
    writeback_from_ = offset_;
  }
  return Status::Ok();
}

Status BlobDownload::Finish() {
  const std::string part = cache_->PartPath(hash_);
  if (fd_ < 0) return FailedPrecondition(part + ": download already finished");
  if (offset_ != size_) {
    return FailedPrecondition(part + ": have " + std::to_string(offset_) +
                              " of " + std::to_string(size_) + " bytes");
  }
  int fd = fd_;
  fd_ = -1;
  Hash256 got = hasher_.Final();
  if (got != hash_) {
    ::close(fd);
    ::unlink(part.c_str());
    return Corruption("downloaded blob " + HashToHex(hash_) +
                      " hashes to " + HashToHex(got) + "; discarded");
  }
  if (::fsync(fd) != 0) {
    Status s = IoError(Errno("fsync", part));
    ::close(fd);
    return s;
  }
  ::close(fd);
  return cache_->AdoptPart(hash_, size_);
}

}  // namespace pcfarm
