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
#include "crypto/hash.h"
#include "proto/wire.h"

namespace pcfarm {
namespace {

constexpr size_t kReadBytes = 4 << 20;
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

std::string HashCachePath() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::string base = xdg && *xdg ? xdg : (home && *home ? std::string(home) + "/.cache" : "");
  return base.empty() ? "" : base + "/pcfarm/file-hashes";
}

std::string FileKey(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
         std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

Result<std::string> HashFd(int fd, int64_t size, bool progress, const std::string& label) {
  Progress p(progress && size > (64 << 20), "hashing", label, size);
  Blake2bHasher h;
  std::string buf(kReadBytes, '\0');
  int64_t done = 0;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
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
// coordinator holds; retries a lost connection from there.
Result<UploadReport> Send(CoordinatorClient* client, const std::string& hex, int64_t size,
                          const std::function<Result<std::string>(int64_t, size_t)>& read,
                          const CliUploadOptions& o) {
  UploadReport report;
  report.hash_hex = hex;
  report.size = size;
  auto raw = HashFromHex(hex);
  if (!raw.ok()) return raw.status();
  const std::string hash = HashToBytes(*raw);
  // Small files are not worth a progress line each.
  Progress p(o.progress && size >= (isatty(STDERR_FILENO) ? (1 << 20) : (16 << 20)), "upload",
             o.label, size);
  double last_progress = Now();
  double backoff = 0.5;
  int64_t best = -1;
  while (true) {
    Status failure;
    wire::ClientRequest begin;
    begin.mutable_upload_begin()->set_hash(hash);
    begin.mutable_upload_begin()->set_size(uint64_t(size));
    auto b = client->Call(begin);
    if (b.ok()) {
      const auto& br = b->upload_begin();
      if (br.present()) {
        report.deduplicated = report.sent == 0;
        p.Update(size);
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
          c.mutable_upload_chunk()->set_hash(hash);
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
        if (r->upload_chunk().complete()) return report;
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

Result<std::string> HashFileCached(const std::string& path, bool progress,
                                   const std::string& label) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgument(path + " is not a regular file");
  }
  const std::string key = FileKey(st);
  const std::string cache = HashCachePath();
  std::vector<std::string> lines;
  if (!cache.empty()) {
    std::ifstream in(cache);
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() > key.size() + 1 && line.compare(0, key.size(), key) == 0 &&
          line[key.size()] == ' ' && HashFromHex(line.substr(key.size() + 1)).ok()) {
        ::close(fd);
        return line.substr(key.size() + 1);
      }
      lines.push_back(line);
    }
  }
  auto hex = HashFd(fd, int64_t(st.st_size), progress, label);
  ::close(fd);
  if (!hex.ok()) return hex.status().WithContext(path);
  if (!cache.empty()) {
    // Best effort: a cache that cannot be written only costs a re-hash.
    if (lines.size() >= kHashCacheMaxLines) {
      lines.erase(lines.begin(), lines.begin() + long(lines.size() - kHashCacheMaxLines / 2));
    }
    lines.push_back(key + " " + *hex);
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    if (MakeDirs(cache.substr(0, cache.rfind('/'))).ok()) {
      WriteFileAtomic(cache, text).IgnoreError();
    }
  }
  return hex;
}

Result<UploadReport> UploadFile(CoordinatorClient* client, const std::string& path,
                                const CliUploadOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(std::string hex, HashFileCached(path, options.progress, options.label));
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NotFound("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return IoError("stat " + path);
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
  auto r = Send(client, hex, int64_t(st.st_size), read, options);
  ::close(fd);
  return r;
}

Result<UploadReport> UploadBytes(CoordinatorClient* client, const std::string& bytes,
                                 const CliUploadOptions& options) {
  std::string hex = HashToHex(Blake2b256(bytes));
  auto read = [&](int64_t offset, size_t len) -> Result<std::string> {
    return bytes.substr(size_t(offset), len);
  };
  return Send(client, hex, int64_t(bytes.size()), read, options);
}

}  // namespace pcfarm
