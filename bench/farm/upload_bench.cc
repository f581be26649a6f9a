// upload_bench: `pcfarm upload FILE --json` of a large file of random bytes
// into a coordinator's blob store, beside a plain loopback copy.
//
// Starts a coordinator (MiniCluster, a real `pcfarm-coordinator serve`, no
// workers) in a temporary directory on --tmpdir's disk, writes --mib MiB of
// random bytes beside its data directory, and times:
//   first upload  the CLI with a fresh $HOME and $XDG_CACHE_HOME (its hash
//                 cache is empty, so it sends the file at once under an
//                 upload id and the coordinator names the blob by its
//                 BLAKE2b-256); from the start of the process to its exit.
//                 While it runs the bench samples, every 2 ms, the
//                 coordinator's partial file (created by UploadBegin, full
//                 when the last chunk is written) and the stored blob (there
//                 after the fsync and rename), and the CLI's /proc/PID/io
//                 (read bytes: the file has been read once), which splits the
//                 time into the CLI's start, the transfer, and the
//                 coordinator's commit.
//   again         the same command and $HOME: the hash comes from the cache
//                 and the coordinator holds the blob (deduplicated).
//   again, cold   the same with a fresh $HOME: the coordinator holds a blob
//                 of the file's size, so the CLI hashes the file and asks by
//                 hash (deduplicated after hashing alone).
// Baseline, in the same run: the file sent over a TCP socket on 127.0.0.1
// (a sender thread reading the file, a receiver thread writing it into the
// coordinator's data directory, fsync at the end), the stronger of two
// copies, one before and one after the upload.
// Probes: a fresh --probe-mib file each, sent by this process through the
// same protocol (CoordinatorClient, hash known beforehand) with each of
// --probe-windows chunks in flight: the transfer and commit without the
// CLI's hashing, and what the window changes.
// The 1 GiB files are deleted at the end.
//
//   upload_bench [--mib 1024] [--probe-mib 256] [--probe-windows 8 32]
//                [--tmpdir DIR]
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "bench/engine/engine_bench_util.h"
#include "bench/grid/grid_bench.h"
#include "coordinator/cli/client.h"
#include "coordinator/client_profile.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

using nlohmann::json;

struct Options {
  int mib = 1024;
  int probe_mib = 256;
  std::vector<int> probe_windows = {8, 32};
  std::string tmpdir;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "upload_bench: %s\n", s.ToString().c_str());
  return 1;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes `bytes` random bytes to `path` and fsyncs it; returns its hash.
Result<std::string> WriteRandomFile(const std::string& path, uint64_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return IoError("cannot create " + path + ": " + std::strerror(errno));
  Blake2bHasher h;
  for (uint64_t done = 0; done < bytes;) {
    size_t n = size_t(std::min<uint64_t>(8 << 20, bytes - done));
    std::string data = RandomBytes(n);
    h.Update(data);
    for (size_t off = 0; off < n;) {
      ssize_t w = ::write(fd, data.data() + off, n - off);
      if (w <= 0) {
        ::close(fd);
        return IoError("write " + path + ": " + std::strerror(errno));
      }
      off += size_t(w);
    }
    done += n;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return IoError("fsync " + path + ": " + std::strerror(errno));
  }
  return HashToHex(h.Final());
}

// The same job as an upload without protocol, encryption or hash: `src` is
// read by one thread and sent over a TCP connection on 127.0.0.1, `chunk`
// bytes per write; another thread writes what arrives to `dst` and fsyncs
// it. Returns the seconds from connect to the fsync's return; `dst` is
// removed. (blob_bench has the same copy for downloads, private to it.)
Result<double> PlainLoopbackFileCopy(const std::string& src,
                                     const std::string& dst, uint64_t bytes,
                                     size_t chunk) {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0)
    return IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return IoError(std::string("bind/listen on 127.0.0.1: ") +
                   std::strerror(errno));
  }
  uint64_t received = 0;
  bool wrote = true;
  std::thread receiver([&] {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    int out =
        ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) wrote = false;
    std::string buf(chunk, '\0');
    while (out >= 0 && received < bytes) {
      ssize_t n = ::read(c, buf.data(), buf.size());
      if (n <= 0) break;
      for (ssize_t off = 0; wrote && off < n;) {
        ssize_t w = ::write(out, buf.data() + off, size_t(n - off));
        if (w <= 0)
          wrote = false;
        else
          off += w;
      }
      received += uint64_t(n);
    }
    if (out >= 0 && (::fsync(out) != 0 || ::close(out) != 0)) wrote = false;
    ::close(c);
  });
  const double start = MonotonicSeconds();
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = s >= 0 &&
            ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  ok = ok && in >= 0;
  std::string data(chunk, '\0');
  for (uint64_t sent = 0; ok && sent < bytes;) {
    size_t want = size_t(std::min<uint64_t>(chunk, bytes - sent));
    for (size_t got = 0; ok && got < want;) {
      ssize_t n = ::read(in, data.data() + got, want - got);
      if (n <= 0)
        ok = false;
      else
        got += size_t(n);
    }
    for (size_t off = 0; ok && off < want;) {
      ssize_t n = ::write(s, data.data() + off, want - off);
      if (n <= 0)
        ok = false;
      else
        off += size_t(n);
    }
    sent += want;
  }
  if (s >= 0) ::close(s);
  if (in >= 0) ::close(in);
  receiver.join();
  const double seconds = MonotonicSeconds() - start;
  ::close(listener);
  ::unlink(dst.c_str());
  if (!wrote) return IoError("plain loopback copy: cannot write " + dst);
  if (!ok || received != bytes) {
    return IoError("plain loopback copy: received " + std::to_string(received) +
                   " of " + std::to_string(bytes) + " bytes");
  }
  return seconds;
}

// "rchar" of /proc/PID/io: bytes the process has read with read(2) and its
// kin (files; ZeroMQ's socket recv(2)s are not counted). -1 when gone.
int64_t ReadBytesOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  int64_t v;
  while (in >> key >> v) {
    if (key == "rchar:") return v;
  }
  return -1;
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? int64_t(st.st_size) : -1;
}

// The size of the one file in `dir` (a coordinator's partial/), -1 when none.
int64_t OnlyFileSize(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    return FileSize(e.path().string());
  }
  return -1;
}

double ChildrenCpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// One `pcfarm upload FILE --json` with $HOME (and the hash cache under it)
// at `home`, and what was seen while it ran (seconds from its start; -1:
// not seen).
struct Upload {
  double seconds = 0;         // process start -> exit, measured here
  json report;                // its --json line
  double read_at = -1;        // the CLI has read the whole file once
  double begun_at = -1;       // the coordinator's partial file exists
  double last_chunk_at = -1;  // the partial file holds every byte
  double stored_at = -1;      // the blob is in the store (fsynced, renamed)
  double cli_cpu_s = 0, coordinator_cpu_s = 0;
  int samples = 0;
};

Result<Upload> RunUpload(MiniCluster* c, const std::string& file,
                         const std::string& hex, int64_t size,
                         const std::string& home, const std::string& log) {
  ::setenv("HOME", home.c_str(), 1);
  ::setenv("XDG_CACHE_HOME", (home + "/.cache").c_str(), 1);
  const std::string partial = c->coordinator_dir() + "/partial";
  const std::string stored =
      c->coordinator_dir() + "/blobs/" + hex.substr(0, 2) + "/" + hex;
  Upload u;
  PCFARM_ASSIGN_OR_RETURN(ProcSample c0, SampleProcess(c->coordinator_pid()));
  const double children0 = ChildrenCpuSeconds();
  ChildProcess cli;
  const double start = MonotonicSeconds();
  PCFARM_RETURN_IF_ERROR(
      cli.Start({c->Binary("pcfarm"), "--profile", c->admin_profile(),
                 "--timeout", "30", "upload", file, "--json"},
                log));
  while (cli.running()) {
    const double t = MonotonicSeconds() - start;
    if (u.read_at < 0 && ReadBytesOf(cli.pid()) >= size) u.read_at = t;
    if (u.stored_at < 0) {
      int64_t held = OnlyFileSize(partial);
      if (u.begun_at < 0 && held >= 0) u.begun_at = t;
      if (u.last_chunk_at < 0 && held == size) u.last_chunk_at = t;
      if (FileSize(stored) == size) u.stored_at = t;
    }
    u.samples++;
    if (MonotonicSeconds() - start > 600)
      return Timeout("the upload ran for 10 minutes");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  u.seconds = MonotonicSeconds() - start;
  u.cli_cpu_s = ChildrenCpuSeconds() - children0;
  PCFARM_ASSIGN_OR_RETURN(ProcSample c1, SampleProcess(c->coordinator_pid()));
  u.coordinator_cpu_s = c1.cpu_seconds - c0.cpu_seconds;
  std::string out = ReadText(log);
  if (cli.exit_code() != 0)
    return Internal("pcfarm upload exited " + std::to_string(cli.exit_code()) +
                    ": " + out);
  size_t brace = out.rfind("\n{");
  u.report = json::parse(
      brace == std::string::npos ? out : out.substr(brace + 1), nullptr, false);
  if (u.report.is_discarded() || u.report.value("hash", "") != hex) {
    return Corruption("pcfarm upload printed no report for " + hex + ": " +
                      out);
  }
  return u;
}

// The CLI's upload protocol (UploadBegin, then UploadChunks in order,
// `window` in flight) driven from this process for a file whose hash is
// known (no hashing here): seconds from UploadBegin to the reply that says
// the blob is stored (the coordinator's hash check, fsync and rename
// included). A probe of what the window does to the transfer.
Result<double> ProtocolTransfer(CoordinatorClient* client,
                                const std::string& file, const std::string& hex,
                                int64_t size, int window) {
  PCFARM_ASSIGN_OR_RETURN(Hash256 h, HashFromHex(hex));
  const std::string hash = HashToBytes(h);
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("open " + file);
  const double start = MonotonicSeconds();
  wire::ClientRequest begin;
  begin.mutable_upload_begin()->set_hash(hash);
  begin.mutable_upload_begin()->set_size(uint64_t(size));
  auto b = client->Call(begin);
  if (!b.ok() || b->upload_begin().present() ||
      b->upload_begin().offset() != 0) {
    ::close(fd);
    return b.ok() ? Internal("the probe's blob is already (partly) stored")
                  : b.status();
  }
  const size_t chunk = b->upload_begin().chunk_bytes()
                           ? b->upload_begin().chunk_bytes()
                           : (1 << 20);
  std::deque<uint64_t> in_flight;
  int64_t next = 0;
  bool complete = false;
  Status failure;
  while (failure.ok() && !complete) {
    while (int(in_flight.size()) < window && next < size) {
      size_t len = size_t(std::min<int64_t>(int64_t(chunk), size - next));
      std::string data(len, '\0');
      if (::pread(fd, data.data(), len, next) != ssize_t(len)) {
        failure = IoError("pread " + file);
        break;
      }
      wire::ClientRequest c;
      c.mutable_upload_chunk()->set_hash(hash);
      c.mutable_upload_chunk()->set_offset(uint64_t(next));
      c.mutable_upload_chunk()->set_data(std::move(data));
      auto id = client->Post(std::move(c));
      if (!id.ok()) {
        failure = id.status();
        break;
      }
      in_flight.push_back(*id);
      next += int64_t(len);
    }
    if (!failure.ok() || in_flight.empty()) break;
    auto r = client->Await(in_flight.front());
    in_flight.pop_front();
    if (!r.ok())
      failure = r.status();
    else
      complete = r->upload_chunk().complete();
  }
  ::close(fd);
  if (!failure.ok()) return failure;
  if (!complete)
    return Internal("the coordinator did not complete the probe's upload");
  return MonotonicSeconds() - start;
}

std::string Secs(double s) { return s < 0 ? "?" : FormatFixed(s, 2) + " s"; }

int Run(const Options& opt) {
  CryptoInit();
  if (!opt.tmpdir.empty()) ::setenv("TMPDIR", opt.tmpdir.c_str(), 1);
  const std::string load_before = LoadAverage();
  const uint64_t bytes = uint64_t(opt.mib) << 20;
  const double mb = double(bytes) / 1e6;

  // The source, the stored blob and the plain copy: 3x the file at most.
  const char* tmp = std::getenv("TMPDIR");
  const std::string tmp_dir = tmp && *tmp ? tmp : "/tmp";
  struct statvfs vfs;
  if (::statvfs(tmp_dir.c_str(), &vfs) != 0)
    return Fail(IoError("statvfs " + tmp_dir));
  const uint64_t free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
  if (free_bytes < 3 * bytes + (uint64_t(256) << 20)) {
    return Fail(
        ResourceExhausted(tmp_dir + " has " + std::to_string(free_bytes >> 20) +
                          " MiB free; the bench needs 3x --mib and some room"));
  }
  MiniClusterOptions mco;
  mco.heartbeat_interval_ms = 1000;
  mco.log_level = "info";
  // Below 1 GiB + the file, the coordinator's default reserve would refuse.
  const bool tight = free_bytes < 3 * bytes + (uint64_t(2) << 30);
  if (tight) mco.coordinator_args = {"--min-free-disk", "0"};
  MiniCluster cluster(mco);
  Status s = cluster.Init();
  if (!s.ok()) return Fail(s);
  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);

  const std::string file = cluster.dir() + "/random.bin";
  std::fprintf(stderr, "writing %d MiB of random bytes ...\n", opt.mib);
  auto hex = WriteRandomFile(file, bytes);
  if (!hex.ok()) return Fail(hex.status());
  const int64_t size = int64_t(bytes);
  // BLAKE2b-256 of the file in this process, from the page cache: the
  // floor of the CLI's hashing.
  double hash_floor_s;
  {
    std::string buf(4 << 20, '\0');
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Fail(IoError("open " + file));
    const double t0 = MonotonicSeconds();
    Blake2bHasher h;
    ssize_t n;
    while ((n = ::read(fd, buf.data(), buf.size())) > 0)
      h.Update(std::string_view(buf.data(), size_t(n)));
    hash_floor_s = MonotonicSeconds() - t0;
    ::close(fd);
    if (HashToHex(h.Final()) != *hex) return Fail(Internal("the file changed"));
  }

  const std::string copy = cluster.coordinator_dir() + "/plain-copy.bin";
  const size_t chunk = 1 << 20;  // the coordinator's upload chunk
  std::fprintf(stderr, "plain loopback file copy ...\n");
  ::sync();
  auto plain1 = PlainLoopbackFileCopy(file, copy, bytes, chunk);
  if (!plain1.ok()) return Fail(plain1.status());

  std::fprintf(stderr, "first upload ...\n");
  ::sync();
  auto first = RunUpload(&cluster, file, *hex, size, cluster.dir() + "/home1",
                         cluster.dir() + "/upload1.log");
  if (!first.ok()) return Fail(first.status());
  std::fprintf(stderr, "again (deduplicated) ...\n");
  auto again = RunUpload(&cluster, file, *hex, size, cluster.dir() + "/home1",
                         cluster.dir() + "/upload2.log");
  if (!again.ok()) return Fail(again.status());
  std::fprintf(stderr, "again with a cold hash cache ...\n");
  auto cold = RunUpload(&cluster, file, *hex, size, cluster.dir() + "/home2",
                        cluster.dir() + "/upload3.log");
  if (!cold.ok()) return Fail(cold.status());

  // Probes: the same protocol from this process, window 8 (the CLI's
  // kUploadWindow) and larger, each on a fresh file of --probe-mib MiB.
  std::vector<std::pair<int, double>> probes;
  if (opt.probe_mib > 0) {
    auto profile = LoadClientProfile(cluster.admin_profile());
    if (!profile.ok()) return Fail(profile.status());
    CoordinatorClient client(*profile, 30'000);
    const int64_t probe_size = int64_t(opt.probe_mib) << 20;
    for (int window : opt.probe_windows) {
      const std::string probe = cluster.dir() + "/probe.bin";
      auto probe_hex = WriteRandomFile(probe, uint64_t(probe_size));
      if (!probe_hex.ok()) return Fail(probe_hex.status());
      std::fprintf(stderr, "probe: %d MiB over the protocol, window %d ...\n",
                   opt.probe_mib, window);
      ::sync();
      auto t = ProtocolTransfer(&client, probe, *probe_hex, probe_size, window);
      ::unlink(probe.c_str());
      ::unlink((cluster.coordinator_dir() + "/blobs/" +
                probe_hex->substr(0, 2) + "/" + *probe_hex)
                   .c_str());
      if (!t.ok()) return Fail(t.status());
      probes.push_back({window, *t});
    }
  }

  std::fprintf(stderr, "plain loopback file copy again ...\n");
  ::sync();
  auto plain2 = PlainLoopbackFileCopy(file, copy, bytes, chunk);
  if (!plain2.ok()) return Fail(plain2.status());
  const std::string load_after = LoadAverage();

  // The 1 GiB files go: the source and the stored blob (the cluster's
  // directory goes with the cluster).
  const std::string stored =
      cluster.coordinator_dir() + "/blobs/" + hex->substr(0, 2) + "/" + *hex;
  s = cluster.StopCoordinator();
  if (!s.ok()) std::fprintf(stderr, "upload_bench: %s\n", s.ToString().c_str());
  ::unlink(file.c_str());
  ::unlink(stored.c_str());

  const double plain = std::min(*plain1, *plain2);
  const double ours = mb / first->seconds, base = mb / plain;
  const json& r1 = first->report;
  std::vector<BenchRow> rows = {
      {"first upload, " + std::to_string(opt.mib) +
           " MiB, hashed + sent + stored",
       FormatFixed(ours, 1) + " MB/s",
       "plain loopback file copy (TCP, fsync): " + FormatFixed(base, 1) +
           " MB/s",
       FormatFixed(ours / base, 3) + "x", ">= 0.3x"},
      {"time", Secs(first->seconds), Secs(plain), "-", "-"},
      {"again (deduplicated)",
       Secs(again->seconds) + " (CLI says " +
           FormatFixed(again->report.value("seconds", -1.0), 3) + " s)",
       "-", "-", "< 2 s"},
      {"again, cold hash cache (hashing alone)", Secs(cold->seconds),
       "BLAKE2b-256 in this process: " + Secs(hash_floor_s), "-", "-"},
  };
  for (const auto& [window, secs] : probes) {
    const double probe_mb = double(int64_t(opt.probe_mib) << 20) / 1e6;
    rows.push_back({"probe: " + std::to_string(opt.probe_mib) +
                        " MiB, no hashing, window " + std::to_string(window),
                    FormatFixed(probe_mb / secs, 1) + " MB/s",
                    "plain copy: " + FormatFixed(base, 1) + " MB/s",
                    FormatFixed(probe_mb / secs / base, 3) + "x", "-"});
  }
  const double read = first->read_at, begun = first->begun_at,
               last = first->last_chunk_at, stored_at = first->stored_at;
  std::vector<std::string> notes = {
      "where the first upload's " + Secs(first->seconds) +
          " went: CLI start to UploadBegin " + Secs(begun) + "; transfer (" +
          std::to_string(size >> 20) + " chunks of 1 MiB, 8 in flight) " +
          Secs(last < 0 || begun < 0 ? -1 : last - begun) +
          "; coordinator's commit (last writes, fsync, rename) " +
          Secs(stored_at < 0 || last < 0 ? -1 : stored_at - last) +
          "; directory fsyncs, database, reply, exit " +
          Secs(stored_at < 0 ? -1 : first->seconds - stored_at) +
          "; the CLI had read the file once at " + Secs(read) +
          " (sampled every 2 ms, " + std::to_string(first->samples) + " samples)",
      "transfer rate alone: " +
          (last > begun && begun >= 0
               ? FormatFixed(mb / (last - begun), 1) + " MB/s"
               : "?") +
          "; CPU: CLI " + FormatFixed(first->cli_cpu_s, 2) +
          " s, coordinator " + FormatFixed(first->coordinator_cpu_s, 2) + " s",
      "the CLI reported sent=" + std::to_string(r1.value("sent", int64_t{-1})) +
          ", seconds=" + FormatFixed(r1.value("seconds", -1.0), 2) +
          "; again: sent=" +
          std::to_string(again->report.value("sent", int64_t{-1})) +
          ", deduplicated=" +
          (again->report.value("deduplicated", false) ? "true" : "false") +
          "; cold: sent=" + std::to_string(cold->report.value("sent", int64_t{-1})) +
          ", CPU: CLI " + FormatFixed(cold->cli_cpu_s, 2) + " s, coordinator " +
          FormatFixed(cold->coordinator_cpu_s, 2) + " s",
      "plain copies: " + FormatFixed(*plain1, 2) + " s before, " +
          FormatFixed(*plain2, 2) +
          " s after the uploads (the faster counts); 1 MiB writes, into the "
          "coordinator's "
          "data directory",
      "data directory " + cluster.coordinator_dir() + " (" +
          std::to_string(free_bytes >> 30) + " GiB free; --min-free-disk " +
          (tight ? "0" : "default") + ")",
      "load average before / after: " + load_before + " / " + load_after,
  };
  PrintBenchTable("upload_bench: pcfarm upload vs a plain loopback copy", rows,
                  notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"pcfarm upload of a large random file vs a plain loopback copy"};
  app.add_option("--mib", opt.mib, "file size in MiB")->capture_default_str();
  app.add_option("--probe-mib", opt.probe_mib,
                 "size of each window probe's file (0: no probes)")
      ->capture_default_str();
  app.add_option("--probe-windows", opt.probe_windows,
                 "chunks in flight, one probe each")
      ->capture_default_str();
  app.add_option("--tmpdir", opt.tmpdir,
                 "where the cluster and the file go (default $TMPDIR)");
  CLI11_PARSE(app, argc, argv);
  if (opt.mib < 1) {
    std::fprintf(stderr, "upload_bench: --mib must be >= 1\n");
    return 64;
  }
  return pcfarm::Run(opt);
}
