#include "coordinator/blob_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "base/file.h"
#include "base/hex.h"

namespace pcfarm {
namespace {

constexpr size_t kIoBufferBytes = 1 << 20;
// Writers start the disk's writeback every this many bytes, so that the
// fsync of Commit has little left to write (as BlobDownload does).
constexpr int64_t kWritebackBytes = int64_t(8) << 20;

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// The canonical (lowercase) form of a hash given by a caller.
Result<std::string> CanonicalHex(std::string_view hex) {
  Result<Hash256> h = HashFromHex(hex);
  if (!h.ok()) return InvalidArgument("bad blob hash '" + std::string(hex.substr(0, 80)) + "'");
  return HashToHex(*h);
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(Errno("write", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& dir) {
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir + "/blobs"));
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir + "/tmp"));
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir + "/partial"));
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/tmp", ec)) {
    std::filesystem::remove(e.path(), ec);
  }
  if (ec) return IoError("clear " + dir + "/tmp: " + ec.message());
  return std::unique_ptr<BlobStore>(new BlobStore(dir));
}

std::string BlobStore::PathOf(std::string_view hash_hex) const {
  Result<std::string> hex = CanonicalHex(hash_hex);
  assert(hex.ok());
  return dir_ + "/blobs/" + hex->substr(0, 2) + "/" + *hex;
}

Result<std::string> BlobStore::Put(std::string_view bytes) {
  std::string hex = HashToHex(Blake2b256(bytes));
  if (HasTouched(hex)) return hex;
  PCFARM_ASSIGN_OR_RETURN(auto w, NewWriter(hex, int64_t(bytes.size())));
  PCFARM_RETURN_IF_ERROR(w->Append(bytes));
  return w->Commit();
}

Result<std::string> BlobStore::PutFile(const std::string& path) {
  int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    if (errno == ENOENT) return NotFound("no such file: " + path);
    return IoError(Errno("open", path));
  }
  static std::atomic<uint64_t> counter{0};
  std::string tmp = dir_ + "/tmp/" + std::to_string(::getpid()) + "." +
                    std::to_string(counter++) + "." +
                    std::to_string(std::random_device{}());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    ::close(in);
    return IoError(Errno("create", tmp));
  }
  std::unique_ptr<BlobWriter> w(new BlobWriter(this, "", -1, tmp, fd));
  std::string buf(kIoBufferBytes, '\0');
  for (;;) {
    ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = IoError(Errno("read", path));
      ::close(in);
      return st;
    }
    if (n == 0) break;
    Status st = w->Append(std::string_view(buf.data(), size_t(n)));
    if (!st.ok()) {
      ::close(in);
      return st;
    }
  }
  ::close(in);
  return w->Commit();
}

bool BlobStore::Has(std::string_view hash_hex) const {
  if (!CanonicalHex(hash_hex).ok()) return false;
  struct stat st;
  return ::stat(PathOf(hash_hex).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool BlobStore::HasTouched(std::string_view hash_hex) const {
  if (!Has(hash_hex)) return false;
  // A failure (a read-only file system) only weakens the collector's guard.
  ::utimensat(AT_FDCWD, PathOf(hash_hex).c_str(), nullptr, 0);
  return Has(hash_hex);  // a collector may have removed it meanwhile
}

Result<bool> BlobStore::RemoveUnlessTouched(std::string_view hash_hex,
                                            int64_t unused_since_unix_ms) {
  if (!CanonicalHex(hash_hex).ok()) return InvalidArgument("bad blob hash");
  const std::string path = PathOf(hash_hex);
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    return IoError(Errno("stat", path));
  }
  const int64_t mtime_ms = int64_t(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000;
  if (mtime_ms >= unused_since_unix_ms) return false;
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return false;
    return IoError(Errno("unlink", path));
  }
  return true;
}

bool BlobStore::HasBlobOfSize(int64_t size) const {
  std::error_code ec;
  for (const auto& shard : std::filesystem::directory_iterator(dir_ + "/blobs", ec)) {
    std::error_code ec2;
    for (const auto& e : std::filesystem::directory_iterator(shard.path(), ec2)) {
      std::error_code ec3;
      if (e.is_regular_file(ec3) && int64_t(e.file_size(ec3)) == size && !ec3) return true;
    }
  }
  return false;
}

Result<int64_t> BlobStore::Size(std::string_view hash_hex) const {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  struct stat st;
  if (::stat(PathOf(hex).c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound("no blob " + hex);
    return IoError(Errno("stat", PathOf(hex)));
  }
  return int64_t(st.st_size);
}

Result<std::string> BlobStore::ReadChunk(std::string_view hash_hex,
                                         int64_t offset, int64_t length) const {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  if (offset < 0 || length < 0) {
    return InvalidArgument("blob " + hex + ": negative offset or length");
  }
  if (length > kBlobMaxChunkBytes) {
    return ResourceExhausted("blob " + hex + ": chunk of " +
                             std::to_string(length) + " bytes exceeds " +
                             std::to_string(kBlobMaxChunkBytes));
  }
  std::string path = PathOf(hex);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("no blob " + hex);
    return IoError(Errno("open", path));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status s = IoError(Errno("stat", path));
    ::close(fd);
    return s;
  }
  if (offset > st.st_size) {
    ::close(fd);
    return InvalidArgument("blob " + hex + ": offset " +
                           std::to_string(offset) + " is past its size " +
                           std::to_string(st.st_size));
  }
  std::string out(size_t(std::min<int64_t>(length, st.st_size - offset)), '\0');
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done,
                        offset + int64_t(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      Status s = n < 0 ? IoError(Errno("read", path))
                       : Corruption("blob " + hex + " shrank while read");
      ::close(fd);
      return s;
    }
    done += size_t(n);
  }
  ::close(fd);
  return out;
}

Status BlobStore::Verify(std::string_view hash_hex) const {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  std::string path = PathOf(hex);
  auto got = Blake2b256File(path);
  if (!got.ok()) {
    if (got.status().code() == StatusCode::kNotFound) return NotFound("no blob " + hex);
    return got.status();
  }
  if (HashToHex(*got) != hex) {
    return Corruption("blob " + path + " is damaged: its bytes hash to " + HashToHex(*got));
  }
  return Status::Ok();
}

Result<std::string> BlobStore::SetAside(std::string_view hash_hex) {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir_ + "/damaged"));
  const std::string from = PathOf(hex), to = dir_ + "/damaged/" + hex;
  if (::rename(from.c_str(), to.c_str()) != 0) {
    if (errno == ENOENT) return NotFound("no blob " + hex);
    return IoError(Errno("rename", from));
  }
  return to;
}

Result<std::unique_ptr<BlobWriter>> BlobStore::NewWriter(
    std::string_view hash_hex, int64_t size) {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  if (size < 0) return InvalidArgument("blob " + hex + ": negative size");
  static std::atomic<uint64_t> counter{0};
  std::string tmp = dir_ + "/tmp/" + hex + "." + std::to_string(::getpid()) +
                    "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(Errno("create", tmp));
  return std::unique_ptr<BlobWriter>(new BlobWriter(this, hex, size, tmp, fd));
}

Result<std::string> BlobStore::PartialPath(std::string_view partial_name) const {
  if (partial_name.size() == 2 * kUploadIdBytes) {
    auto id = HexDecode(partial_name);
    if (!id.ok()) return InvalidArgument("bad upload id '" + std::string(partial_name) + "'");
    return dir_ + "/partial/" + HexEncode(*id);
  }
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(partial_name));
  return dir_ + "/partial/" + hex;
}

Result<std::unique_ptr<BlobWriter>> BlobStore::ResumeWriter(
    std::string_view hash_hex, int64_t size) {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, CanonicalHex(hash_hex));
  PCFARM_ASSIGN_OR_RETURN(std::string path, PartialPath(hex));
  return Resume(std::move(path), std::move(hex), size);
}

Result<std::unique_ptr<BlobWriter>> BlobStore::ResumeUnnamedWriter(
    std::string_view upload_id_hex, int64_t size) {
  if (upload_id_hex.size() != 2 * kUploadIdBytes) {
    return InvalidArgument("bad upload id '" + std::string(upload_id_hex.substr(0, 80)) + "'");
  }
  PCFARM_ASSIGN_OR_RETURN(std::string path, PartialPath(upload_id_hex));
  return Resume(std::move(path), "", size);
}

Result<std::unique_ptr<BlobWriter>> BlobStore::Resume(std::string path,
                                                      std::string expected_hex,
                                                      int64_t size) {
  if (size < 0) return InvalidArgument(path + ": negative size");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return IoError(Errno("open", path));
  std::unique_ptr<BlobWriter> w(
      new BlobWriter(this, std::move(expected_hex), size, path, fd, true));
  struct stat st;
  if (::fstat(fd, &st) != 0) return IoError(Errno("stat", path));
  if (st.st_size > size && ::ftruncate(fd, 0) != 0) {
    return IoError(Errno("truncate", path));
  }
  // Rebuild the hash state from the bytes already held.
  std::string buf(kIoBufferBytes, '\0');
  int64_t held = st.st_size > size ? 0 : int64_t(st.st_size);
  while (w->written_ < held) {
    ssize_t n = ::pread(fd, buf.data(),
                        size_t(std::min<int64_t>(held - w->written_, int64_t(buf.size()))),
                        w->written_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError(Errno("read", path));
    w->hasher_.Update(std::string_view(buf.data(), size_t(n)));
    w->written_ += n;
  }
  w->writeback_from_ = held;
  if (::lseek(fd, held, SEEK_SET) < 0) return IoError(Errno("seek", path));
  return w;
}

int64_t BlobStore::PartialSize(std::string_view partial_name) const {
  auto path = PartialPath(partial_name);
  if (!path.ok()) return 0;
  struct stat st;
  if (::stat(path->c_str(), &st) != 0) return 0;
  return int64_t(st.st_size);
}

Status BlobStore::DropPartial(std::string_view partial_name) {
  PCFARM_ASSIGN_OR_RETURN(std::string path, PartialPath(partial_name));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return IoError(Errno("remove", path));
  }
  return Status::Ok();
}

BlobWriter::BlobWriter(BlobStore* store, std::string expected_hex, int64_t size,
                       std::string tmp_path, int fd, bool keep_partial)
    : store_(store),
      expected_hex_(std::move(expected_hex)),
      expected_size_(size),
      tmp_path_(std::move(tmp_path)),
      fd_(fd),
      keep_partial_(keep_partial) {}

BlobWriter::~BlobWriter() {
  if (done_) return;
  if (keep_partial_) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    return;
  }
  Discard();
}

void BlobWriter::Discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_path_.c_str());
  done_ = true;
}

Status BlobWriter::Append(std::string_view data) {
  if (done_) return FailedPrecondition("blob writer already finished");
  if (expected_size_ >= 0 &&
      written_ + int64_t(data.size()) > expected_size_) {
    return ResourceExhausted("blob " + expected_hex_ + ": more than the " +
                             std::to_string(expected_size_) +
                             " announced bytes");
  }
  PCFARM_RETURN_IF_ERROR(WriteAll(fd_, data, tmp_path_));
  hasher_.Update(data);
  written_ += int64_t(data.size());
  if (written_ - writeback_from_ >= kWritebackBytes) {
    // Only a hint (errors show at Commit's fsync): the dirty pages go to
    // the disk now, overlapping the transfer, instead of all at the end.
    ::sync_file_range(fd_, off_t(writeback_from_), off_t(written_ - writeback_from_),
                      SYNC_FILE_RANGE_WRITE);
    writeback_from_ = written_;
  }
  return Status::Ok();
}

Result<std::string> BlobWriter::Commit() {
  if (done_) return FailedPrecondition("blob writer already finished");
  std::string got = HashToHex(hasher_.Final());
  if (expected_size_ >= 0 && written_ != expected_size_) {
    Discard();
    return Corruption("blob " + expected_hex_ + ": got " +
                      std::to_string(written_) + " bytes, announced " +
                      std::to_string(expected_size_));
  }
  if (!expected_hex_.empty() && got != expected_hex_) {
    Discard();
    return Corruption("blob " + expected_hex_ + ": bytes hash to " + got);
  }
  if (expected_hex_.empty() && store_->HasTouched(got)) {
    // Named by what arrived, and stored before: keep the stored file.
    Discard();
    return got;
  }
  if (::fsync(fd_) != 0) {
    Status st = IoError(Errno("fsync", tmp_path_));
    Discard();
    return st;
  }
  ::close(fd_);
  fd_ = -1;
  std::string path = store_->PathOf(got);
  std::string dir = path.substr(0, path.rfind('/'));
  Status st = MakeDirs(dir);
  if (st.ok() && ::rename(tmp_path_.c_str(), path.c_str()) != 0) {
    st = IoError(Errno("rename to", path));
  }
  if (!st.ok()) {
    Discard();
    return st;
  }
  done_ = true;
  // The shard directory may be new: make both its entry and the file's durable.
  PCFARM_RETURN_IF_ERROR(SyncDir(dir));
  PCFARM_RETURN_IF_ERROR(SyncDir(store_->dir_ + "/blobs"));
  return got;
}

}  // namespace pcfarm
