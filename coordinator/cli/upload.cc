#include "coordinator/cli/upload.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/file.h"
#include "base/hex.h"
#include "base/malloc_tuning.h"
#include "coordinator/blob_store.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "proto/wire.h"

namespace pcfarm {
namespace {

constexpr size_t kHashCacheMaxLines = 4096;

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string Mib(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(b) / (1 << 20));
  return buf;
}

// Progress on stderr: a bar redrawn on a terminal, a line per 10% when piped.
class Progress {
 public:
  Progress(bool on, std::string verb, std::string label, int64_t total)
      : on_(on), tty_(isatty(STDERR_FILENO)), verb_(std::move(verb)),
        label_(std::move(label)), total_(total), start_(Now()) {}
  void Update(int64_t done) {
    if (!on_) return;
    double frac = total_ > 0 ? double(done) / double(total_) : 1.0;
    double secs = Now() - start_;
    if (tty_) {
      if (Now() - last_draw_ < 0.1 && done < total_) return;
      last_draw_ = Now();
      int width = 24, filled = int(frac * width + 0.5);
      std::string bar(size_t(filled), '#');
      bar.append(size_t(width - filled), '-');
      double rate = secs > 0 ? double(done) / secs / (1 << 20) : 0;
      std::fprintf(stderr, "\r%s %s [%s] %3.0f%% %s of %s %.1f MiB/s   ", verb_.c_str(),
                   label_.c_str(), bar.c_str(), frac * 100, Mib(done).c_str(),
                   Mib(total_).c_str(), rate);
      drawn_ = true;
    } else {
      int decile = int(frac * 10);
      if (decile <= last_decile_) return;
      last_decile_ = decile;
      std::fprintf(stderr, "%s %s: %d%% (%s of %s)\n", verb_.c_str(), label_.c_str(),
                   decile * 10, Mib(done).c_str(), Mib(total_).c_str());
    }
  }
  // Always shown (also without progress): the user should know.
  void Note(const std::string& line) {
    End();
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  void End() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }
  ~Progress() { End(); }

 private:
  bool on_, tty_;
  std::string verb_, label_;
  int64_t total_;
  double start_, last_draw_ = 0;
  int last_decile_ = -1;
  bool drawn_ = false;
};

// $XDG_CACHE_HOME/pcfarm/file-hashes: a line "KEY VALUE" per file, KEY its
// FileKey, VALUE its hash (hex) or "upload:ID" (an upload by id under way).
// Best effort: a cache that cannot be read or written only costs a re-send.
class HashCache {
 public:
  HashCache() {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    std::string base =
        xdg && *xdg ? xdg : (home && *home ? std::string(home) + "/.cache" : "");
    if (!base.empty()) path_ = base + "/pcfarm/file-hashes";
  }
  // The value for `key` ("" when none).
  std::string Lookup(const std::string& key) const {
    if (path_.empty()) return "";
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() > key.size() + 1 && line.compare(0, key.size(), key) == 0 &&
          line[key.size()] == ' ') {
        return line.substr(key.size() + 1);
      }
    }
    return "";
  }
  // Sets the value for `key`, dropping the oldest lines past the cap.
  void Store(const std::string& key, const std::string& value) const {
    if (path_.empty()) return;
    std::vector<std::string> lines;
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.compare(0, key.size() + 1, key + " ") != 0) lines.push_back(line);
    }
    if (lines.size() >= kHashCacheMaxLines) {
      lines.erase(lines.begin(), lines.begin() + long(lines.size() - kHashCacheMaxLines / 2));
    }
    lines.push_back(key + " " + value);
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    if (MakeDirs(path_.substr(0, path_.rfind('/'))).ok()) {
      WriteFileAtomic(path_, text).IgnoreError();
    }
  }

 private:
  std::string path_;
};

constexpr char kUploadPrefix[] = "upload:";

std::string FileKey(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

Result<std::string> HashFd(int fd, int64_t size, bool progress, const std::string& label) {
  Progress p(progress && size > (64 << 20), "hashing", label, size);
  Blake2bHasher h;
  std::string buf(4 << 20, '\0');
  int64_t done = 0;
  while (true) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError(std::string("read: ") + std::strerror(errno));
    if (n == 0) break;
    h.Update(std::string_view(buf.data(), size_t(n)));
    done += n;
    p.Update(done);
  }
  if (done != size) return IoError(label + " changed size while it was hashed");
  return HashToHex(h.Final());
}

// Sends `size` bytes that `read(offset, length)` gives, from what the
// coordinator holds; retries a lost connection from there. The upload is
// named by `hex` (its hash) or, when that is empty, by `upload_id`; the
// report's hash is then the one the coordinator computed. By id, returns
// with nothing sent and `*hash_wanted` set when the coordinator says the
// file may be stored.
Result<UploadReport> Send(CoordinatorClient* client, const std::string& hex,
                          const std::string& upload_id, int64_t size,
                          const std::function<Result<std::string>(int64_t, size_t)>& read,
                          const CliUploadOptions& o, bool* hash_wanted = nullptr) {
  UploadReport report;
  report.hash_hex = hex;
  report.size = size;
  std::string hash;
  if (!hex.empty()) {
    auto raw = HashFromHex(hex);
    if (!raw.ok()) return raw.status();
    hash = HashToBytes(*raw);
  }
  // The blob's hash from a reply: the one announced, or the coordinator's.
  auto take_hash = [&](const std::string& got) -> Status {
    if (hex.empty()) {
      auto h = HashFromBytes(got);
      if (!h.ok()) return Internal("the coordinator stored the upload but did not name it");
      report.hash_hex = HashToHex(*h);
    } else if (!got.empty() && got != hash) {
      return Internal("the coordinator stored the upload under another hash");
    }
    return Status::Ok();
  };
  // Small files are not worth a progress line each.
  Progress p(o.progress && size >= (isatty(STDERR_FILENO) ? (1 << 20) : (16 << 20)), "upload",
             o.label, size);
  double last_progress = Now();
  double backoff = 0.5;
  int64_t best = -1;
  while (true) {
    Status failure;
    wire::ClientRequest begin;
    if (hex.empty()) {
      begin.mutable_upload_begin()->set_upload_id(upload_id);
    } else {
      begin.mutable_upload_begin()->set_hash(hash);
    }
    begin.mutable_upload_begin()->set_size(uint64_t(size));
    auto b = client->Call(begin);
    if (b.ok()) {
      const auto& br = b->upload_begin();
      if (br.present()) {
        PCFARM_RETURN_IF_ERROR(take_hash(br.hash()));
        report.deduplicated = report.sent == 0;
        p.Update(size);
        return report;
      }
      if (br.maybe_present() && hex.empty() && hash_wanted) {
        *hash_wanted = true;
        return report;
      }
      int64_t offset = int64_t(br.offset());
      if (offset > best) {
        best = offset;
        last_progress = Now();
      }
      size_t chunk = std::min<size_t>(br.chunk_bytes() ? br.chunk_bytes() : (1 << 20),
                                      WireLimits{}.upload_chunk_bytes);
      p.Update(offset);
      // Chunks in order, kUploadWindow in flight; an empty file is one
      // empty chunk.
      std::deque<uint64_t> in_flight;
      int64_t next = offset;
      bool first = true;
      while (failure.ok()) {
        while (failure.ok() && int(in_flight.size()) < kUploadWindow &&
               (next < size || (first && size == 0))) {
          first = false;
          size_t len = size_t(std::min<int64_t>(int64_t(chunk), size - next));
          auto data = read(next, len);
          if (!data.ok()) return data.status();
          wire::ClientRequest c;
          if (hex.empty()) {
            c.mutable_upload_chunk()->set_upload_id(upload_id);
          } else {
            c.mutable_upload_chunk()->set_hash(hash);
          }
          c.mutable_upload_chunk()->set_offset(uint64_t(next));
          c.mutable_upload_chunk()->set_data(std::move(*data));
          auto id = client->Post(std::move(c));
          if (!id.ok()) {
            failure = id.status();
            break;
          }
          in_flight.push_back(*id);
          next += int64_t(len);
          report.sent += int64_t(len);
        }
        if (in_flight.empty()) break;
        auto r = client->Await(in_flight.front());
        in_flight.pop_front();
        if (!r.ok()) {
          failure = r.status();
          break;
        }
        int64_t got = int64_t(r->upload_chunk().received());
        if (got > best) {
          best = got;
          last_progress = Now();
          backoff = 0.5;
        }
        p.Update(got);
        if (r->upload_chunk().complete()) {
          PCFARM_RETURN_IF_ERROR(take_hash(r->upload_chunk().hash()));
          return report;
        }
      }
      if (failure.ok()) failure = Internal("the coordinator did not complete the upload");
    } else {
      failure = b.status();
    }
    // Refusals that a retry cannot fix end the upload.
    StatusCode c = failure.code();
    if (c == StatusCode::kResourceExhausted || c == StatusCode::kPermissionDenied ||
        c == StatusCode::kInvalidArgument || c == StatusCode::kCorruption) {
      return failure.WithContext("upload of " + o.label);
    }
    if (Now() - last_progress > o.patience_s) {
      return failure.WithContext("upload of " + o.label + " made no progress for " +
                                 std::to_string(int(o.patience_s)) + " s");
    }
    p.Note("upload of " + o.label + " interrupted (" + failure.message() +
           "); resuming from what the coordinator holds");
    std::this_thread::sleep_for(std::chrono::milliseconds(int(backoff * 1000)));
    backoff = std::min(backoff * 2, 8.0);
  }
}

}  // namespace

Result<UploadReport> UploadFile(CoordinatorClient* client, const std::string& path,
                                const CliUploadOptions& options) {
  // Each 1 MiB chunk passes through several buffers (file read, protobuf
  // bytes, ZeroMQ message, CurveZMQ box); with glibc's defaults each is
  // mmapped and page-faulted in again, chunk after chunk.
  TuneMallocForChunkedIo();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + " is not a regular file");
  }
  auto read = [&](int64_t offset, size_t len) -> Result<std::string> {
    std::string out(len, '\0');
    size_t done = 0;
    while (done < len) {
      ssize_t n = ::pread(fd, out.data() + done, len - done, offset + int64_t(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return IoError(path + " shrank or could not be read while uploading");
      done += size_t(n);
    }
    return out;
  };
  const std::string key = FileKey(st);
  const HashCache cache;
  std::string cached = cache.Lookup(key);
  if (HashFromHex(cached).ok()) {
    auto r = Send(client, cached, "", int64_t(st.st_size), read, options);
    ::close(fd);
    return r;
  }
  // Not hashed yet: send at once under an upload id, remembered so that a
  // run after this one was killed continues where it stopped.
  std::string upload_id;
  if (cached.rfind(kUploadPrefix, 0) == 0) {
    auto id = HexDecode(cached.substr(sizeof kUploadPrefix - 1), kUploadIdBytes);
    if (id.ok()) upload_id = *id;
  }
  if (upload_id.empty()) {
    upload_id = RandomBytes(kUploadIdBytes);
    cache.Store(key, kUploadPrefix + HexEncode(upload_id));
  }
  bool hash_wanted = false;
  auto r = Send(client, "", upload_id, int64_t(st.st_size), read, options, &hash_wanted);
  if (r.ok() && hash_wanted) {
    // A stored blob has the file's size: hash it, it may be that blob.
    auto hex = HashFd(fd, int64_t(st.st_size), options.progress, options.label);
    if (!hex.ok()) {
      ::close(fd);
      return hex.status().WithContext(path);
    }
    cache.Store(key, *hex);
    r = Send(client, *hex, "", int64_t(st.st_size), read, options);
  }
  struct stat after;
  bool changed = ::fstat(fd, &after) != 0 || FileKey(after) != key;
  ::close(fd);
  if (!r.ok()) return r.status();
  if (changed) {
    return FailedPrecondition(path + " changed while it was uploaded (the coordinator stored " +
                              "what was read, " + r->hash_hex + "); upload it again");
  }
  cache.Store(key, r->hash_hex);
  return r;
}

Result<UploadReport> UploadBytes(CoordinatorClient* client, const std::string& bytes,
                                 const CliUploadOptions& options) {
  std::string hex = HashToHex(Blake2b256(bytes));
  auto read = [&](int64_t offset, size_t len) -> Result<std::string> {
    return bytes.substr(size_t(offset), len);
  };
  return Send(client, hex, "", int64_t(bytes.size()), read, options);
}

}  // namespace pcfarm
