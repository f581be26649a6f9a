// blob_bench: blob download speed over the real protocol vs a plain copy.
//
// Writes --mib MiB of random bytes into the coordinator's blob store
// (BlobStore::PutFile, before `serve` starts), starts the coordinator, and
// enrolls one in-process worker (SimWorker, CurveZMQ) that downloads the
// blob with the worker's own BlobFetcher (credit-based chunked BLOB_GETs)
// into a BlobCache, which hash-verifies it. Timed from the first request to
// the blob being verified and in the cache.
//
// Baselines, in the same run, over a raw TCP socket pair on 127.0.0.1 in
// chunks of the same size:
//   plain file copy    the blob's file in the coordinator's store is read,
//                      sent, written to a file beside the worker's cache and
//                      fsynced: the same job (file to durable file) with no
//                      encryption, no protocol and no hash. The target's
//                      "plain loopback copy".
//   plain memory copy  one buffer sent again and again and thrown away on
//                      arrival: the socket alone (shown for reference).
//
//   blob_bench [--mib 1024] [--tmpdir DIR]   (PCFARM_BENCH_BLOB_MIB also sets --mib)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <thread>

#include <CLI/CLI.hpp>

#include "base/file.h"
#include "base/malloc_tuning.h"
#include "base/rlimit.h"
#include "bench/grid/grid_bench.h"
#include "coordinator/blob_store.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "proto/wire.h"
#include "tests/integration/mini_cluster.h"
#include "worker/blob_cache.h"
#include "worker/blob_fetcher.h"

namespace pcfarm {
namespace {

struct Options {
  int mib = 1024;
  int credit = 8;                      // the worker daemon's default
  int chunk_bytes = 256 * 1024;        // the worker daemon's default
  std::string tmpdir;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "blob_bench: %s\n", s.ToString().c_str());
  return 1;
}

// Writes `bytes` random bytes to `path`.
Status WriteRandomFile(const std::string& path, uint64_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return IoError("cannot create " + path + ": " + std::strerror(errno));
  const size_t block = 8 << 20;
  for (uint64_t done = 0; done < bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(block, bytes - done));
    std::string data = RandomBytes(n);
    if (std::fwrite(data.data(), 1, n, f) != n) {
      std::fclose(f);
      return IoError("write " + path + ": " + std::strerror(errno));
    }
    done += n;
  }
  if (std::fclose(f) != 0) return IoError("close " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

// Sends `bytes` from one thread to another over a TCP connection on
// 127.0.0.1, `chunk` bytes per write; returns the seconds from connect to
// the last byte read.
// With `src` and `dst` empty it is the memory copy; otherwise the sender
// reads `src` and the receiver writes `dst` and fsyncs it before the clock
// stops.
Result<double> PlainLoopbackCopy(uint64_t bytes, size_t chunk,
                                 const std::string& src = "",
                                 const std::string& dst = "") {
  int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener < 0) return IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listener);
    return IoError(std::string("bind/listen on 127.0.0.1: ") + std::strerror(errno));
  }
  uint64_t received = 0;
  bool wrote = true;
  std::thread reader([&] {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    int out = dst.empty() ? -1
                          : ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (!dst.empty() && out < 0) wrote = false;
    std::string buf(chunk, '\0');
    while (received < bytes) {
      ssize_t n = ::read(c, buf.data(), buf.size());
      if (n <= 0) break;
      if (out >= 0) {
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(n - off));
          if (w <= 0) {
            wrote = false;
            break;
          }
          off += w;
        }
      }
      received += static_cast<uint64_t>(n);
    }
    if (out >= 0 && (::fsync(out) != 0 || ::close(out) != 0)) wrote = false;
    ::close(c);
  });
  double start = MonotonicSeconds();
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = s >= 0 &&
            ::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  int in = src.empty() ? -1 : ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (!src.empty() && in < 0) ok = false;
  std::string data = src.empty() ? RandomBytes(chunk) : std::string(chunk, '\0');
  for (uint64_t sent = 0; ok && sent < bytes;) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(chunk, bytes - sent));
    if (in >= 0) {
      for (size_t got = 0; ok && got < want;) {
        ssize_t n = ::read(in, data.data() + got, want - got);
        if (n <= 0) ok = false;
        else got += static_cast<size_t>(n);
      }
    }
    size_t off = 0;
    while (ok && off < want) {
      ssize_t n = ::write(s, data.data() + off, want - off);
      if (n <= 0) ok = false;
      else off += static_cast<size_t>(n);
    }
    sent += want;
  }
  if (s >= 0) ::close(s);
  if (in >= 0) ::close(in);
  reader.join();
  double seconds = MonotonicSeconds() - start;
  ::close(listener);
  if (!dst.empty()) ::unlink(dst.c_str());
  if (!wrote) return IoError("plain loopback copy: cannot write " + dst);
  if (!ok || received != bytes) {
    return IoError("plain loopback copy: received " + std::to_string(received) +
                   " of " + std::to_string(bytes) + " bytes");
  }
  return seconds;
}

// Sends `bytes` from a CurveZMQ ROUTER to a DEALER (each with its own
// context, so each end has its own I/O thread as two processes would) in
// `chunk`-byte messages, `credit` requests in flight; returns the seconds.
// This is the transport alone: no protobuf, no files, no hashing.
Result<double> CurveLoopbackCopy(uint64_t bytes, size_t chunk, int credit) {
  CurveKeyPair server_keys = CurveKeyPair::Generate();
  CurveKeyPair client_keys = CurveKeyPair::Generate();
  zmq::context_t server_ctx(1), client_ctx(1);
  try {
    zmq::socket_t server(server_ctx, zmq::socket_type::router);
    server.set(zmq::sockopt::linger, 0);
    server.set(zmq::sockopt::curve_server, 1);
    std::string ssk = server_keys.secret_key();
    server.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(ssk.data(), ssk.size()));
    server.bind("tcp://127.0.0.1:*");
    std::string endpoint = server.get(zmq::sockopt::last_endpoint);
    zmq::socket_t client(client_ctx, zmq::socket_type::dealer);
    client.set(zmq::sockopt::linger, 0);
    const std::string& spk = server_keys.public_key();
    client.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(spk.data(), spk.size()));
    const std::string& cpk = client_keys.public_key();
    client.set(zmq::sockopt::curve_publickey, zmq::const_buffer(cpk.data(), cpk.size()));
    std::string csk = client_keys.secret_key();
    client.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(csk.data(), csk.size()));
    client.connect(endpoint);
    const uint64_t chunks = (bytes + chunk - 1) / chunk;
    std::string data = RandomBytes(chunk);
    std::thread serve([&] {
      try {
        zmq::message_t route, req;
        for (uint64_t i = 0; i < chunks; ++i) {
          if (!server.recv(route) || !server.recv(req)) return;
          server.send(route, zmq::send_flags::sndmore);
          server.send(zmq::buffer(data), zmq::send_flags::none);
        }
      } catch (const zmq::error_t&) {
      }
    });
    double start = MonotonicSeconds();
    uint64_t requested = 0, received = 0;
    zmq::message_t m;
    while (received < chunks) {
      while (requested < chunks && requested - received < uint64_t(credit)) {
        client.send(zmq::str_buffer("get"), zmq::send_flags::none);
        requested++;
      }
      if (!client.recv(m)) break;
      received++;
    }
    double seconds = MonotonicSeconds() - start;
    serve.join();
    if (received != chunks) return IoError("CurveZMQ copy stopped early");
    return seconds;
  } catch (const zmq::error_t& e) {
    return IoError(std::string("CurveZMQ copy: ") + e.what());
  }
}

struct Download {
  double seconds = 0;         // first request -> verified in the cache
  double last_chunk_s = 0;    // the call that received the last chunk (Finish)
  double on_chunk_s = 0;      // in BlobFetcher::OnChunk (append, hash, requests)
  double receive_s = 0;       // in SimWorker::Receive (waiting, decrypt, decode)
  uint64_t frames = 0;
};

Result<Download> ProtocolDownload(SimWorker* worker, BlobCache* cache,
                                  const Hash256& hash, const Options& opt) {
  Status send_error = Status::Ok();
  BlobFetcher fetcher(
      cache,
      [&](wire::WorkerFrame f) {
        Status s = worker->SendRaw(EncodeFrame(&f));
        if (!s.ok() && send_error.ok()) send_error = s;
      },
      opt.credit, opt.chunk_bytes);
  Download d;
  double start = MonotonicSeconds();
  fetcher.Want(hash);
  double last_progress = start;
  while (true) {
    PCFARM_RETURN_IF_ERROR(send_error);
    double r0 = MonotonicSeconds();
    PCFARM_ASSIGN_OR_RETURN(auto frame, worker->Receive(1000));
    double now = MonotonicSeconds();
    d.receive_s += now - r0;
    if (!frame) {
      if (now - last_progress > 10) {
        return Timeout("no BLOB_CHUNK for 10 s after " +
                       std::to_string(fetcher.bytes_received()) + " bytes");
      }
      continue;
    }
    if (frame->has_reject()) {
      return Internal("coordinator rejected a BLOB_GET: " +
                      RejectReasonName(frame->reject().reason()) + ": " +
                      frame->reject().detail());
    }
    if (!frame->has_blob_chunk()) continue;  // heartbeats
    last_progress = now;
    d.frames++;
    double t = MonotonicSeconds();
    PCFARM_ASSIGN_OR_RETURN(auto done, fetcher.OnChunk(frame->blob_chunk()));
    d.on_chunk_s += MonotonicSeconds() - t;
    if (done) {
      double end = MonotonicSeconds();
      d.last_chunk_s = end - t;
      d.seconds = end - start;
      if (*done != hash) return Internal("a different blob completed");
      return d;
    }
  }
}

int Run(const Options& opt) {
  CryptoInit();
  RaiseOpenFileLimit();
  TuneMallocForChunkedIo();  // as pcfarm-worker does: this process is the worker
  if (!opt.tmpdir.empty()) ::setenv("TMPDIR", opt.tmpdir.c_str(), 1);
  const uint64_t bytes = uint64_t(opt.mib) << 20;

  MiniClusterOptions mco;
  mco.heartbeat_interval_ms = 1000;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  Status s = cluster.Init();
  if (!s.ok()) return Fail(s);

  // ---- the blob, in the store before serve starts ----
  std::string source = cluster.dir() + "/random.bin";
  std::fprintf(stderr, "writing %d MiB of random bytes ...\n", opt.mib);
  s = WriteRandomFile(source, bytes);
  if (!s.ok()) return Fail(s);
  std::string hex;
  {
    auto store = BlobStore::Open(cluster.coordinator_dir());
    if (!store.ok()) return Fail(store.status());
    auto h = (*store)->PutFile(source);
    if (!h.ok()) return Fail(h.status());
    hex = *h;
  }
  ::unlink(source.c_str());
  auto hash = HashFromHex(hex);
  if (!hash.ok()) return Fail(hash.status());

  // ---- baselines: plain copies over loopback TCP ----
  std::fprintf(stderr, "plain loopback file copy ...\n");
  std::string stored;
  {
    auto store = BlobStore::Open(cluster.coordinator_dir());
    if (!store.ok()) return Fail(store.status());
    stored = (*store)->PathOf(hex);
  }
  s = MakeDirs(cluster.dir() + "/worker-cache");
  if (!s.ok()) return Fail(s);
  auto plain_file = PlainLoopbackCopy(bytes, static_cast<size_t>(opt.chunk_bytes),
                                      stored, cluster.dir() + "/worker-cache/plain-copy");
  if (!plain_file.ok()) return Fail(plain_file.status());
  std::fprintf(stderr, "plain loopback memory copy ...\n");
  auto plain = PlainLoopbackCopy(bytes, static_cast<size_t>(opt.chunk_bytes));
  if (!plain.ok()) return Fail(plain.status());

  std::fprintf(stderr, "CurveZMQ loopback copy ...\n");
  auto curve = CurveLoopbackCopy(bytes, static_cast<size_t>(opt.chunk_bytes),
                                 opt.credit);
  if (!curve.ok()) return Fail(curve.status());

  // ---- the protocol ----
  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  auto token = cluster.CreateToken(1, "1h");
  if (!token.ok()) return Fail(token.status());
  zmq::context_t ctx(1);
  SimWorkerOptions wo;
  wo.name = "blob";
  wo.heartbeat_interval_ms = 1000;
  wo.auto_work = false;
  auto worker = SimWorker::FromToken(&ctx, *token, wo);
  if (!worker.ok()) return Fail(worker.status());
  s = (*worker)->Enroll(10'000);
  if (s.ok()) s = (*worker)->Join(10'000);
  if (!s.ok()) return Fail(s);
  auto cache = BlobCache::Open(cluster.dir() + "/worker-cache", bytes * 2);
  if (!cache.ok()) return Fail(cache.status());
  auto pid = FindChildProcess("pcfarm-coordinator");
  if (!pid.ok()) return Fail(pid.status());
  std::fprintf(stderr, "downloading over the protocol ...\n");
  auto c0 = SampleProcess(*pid);
  double self0 = static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
  auto d = ProtocolDownload(worker->get(), cache->get(), *hash, opt);
  double self1 = static_cast<double>(std::clock()) / CLOCKS_PER_SEC;
  auto c1 = SampleProcess(*pid);
  if (!c0.ok() || !c1.ok()) return Fail(Internal("the coordinator exited"));
  if (!d.ok()) {
    std::fprintf(stderr, "%s\n", cluster.DumpLogs(3000).c_str());
    return Fail(d.status());
  }
  if (!(*cache)->Has(*hash)) return Fail(Internal("blob not in the cache after download"));
  auto stats = cluster.Stats();
  uint64_t sent_by_coordinator =
      stats.ok() ? stats->value("blob_bytes_sent", uint64_t{0}) : 0;

  double mb = static_cast<double>(bytes) / 1e6;
  double ours = mb / d->seconds, base = mb / *plain, curve_mbs = mb / *curve;
  double file_base = mb / *plain_file;
  std::vector<BenchRow> rows = {
      {"blob download, " + std::to_string(opt.mib) + " MiB, verified",
       FormatFixed(ours, 1) + " MB/s",
       "plain loopback file copy (TCP, fsync): " + FormatFixed(file_base, 1) +
           " MB/s",
       FormatFixed(ours / file_base, 3) + "x", ">= 0.5x"},
      {"same, vs the socket alone", FormatFixed(ours, 1) + " MB/s",
       "plain loopback memory copy: " + FormatFixed(base, 1) + " MB/s",
       FormatFixed(ours / base, 3) + "x", "-"},
      {"same, vs the transport alone", FormatFixed(ours, 1) + " MB/s",
       "CurveZMQ ROUTER->DEALER copy: " + FormatFixed(curve_mbs, 1) + " MB/s",
       FormatFixed(ours / curve_mbs, 3) + "x", "-"},
      {"time", FormatFixed(d->seconds, 2) + " s",
       FormatFixed(*plain_file, 2) + " s (plain file), " +
           FormatFixed(*plain, 2) + " s (plain memory), " +
           FormatFixed(*curve, 2) + " s (CurveZMQ)",
       "-", "-"},
  };
  std::vector<std::string> notes = {
      std::to_string(d->frames) + " BLOB_CHUNKs of " +
          std::to_string(opt.chunk_bytes / 1024) + " KiB, credit " +
          std::to_string(opt.credit) + " (the worker daemon's defaults), "
          "CurveZMQ on both ends; coordinator counted blob_bytes_sent=" +
          std::to_string(sent_by_coordinator),
      "the last chunk's handling (append, fsync, rename into the cache) took " +
          FormatFixed(d->last_chunk_s, 2) + " s of the total",
      "where the time went: coordinator CPU " +
          FormatFixed(c1->cpu_seconds - c0->cpu_seconds, 2) +
          " s; this process (worker side) CPU " + FormatFixed(self1 - self0, 2) +
          " s, of which BlobFetcher::OnChunk (append + hash) " +
          FormatFixed(d->on_chunk_s, 2) + " s wall and SimWorker::Receive "
          "(wait + decrypt + decode) " + FormatFixed(d->receive_s, 2) + " s wall",
      "files under " + cluster.dir(),
  };
  PrintBenchTable("blob_bench: blob download over the real protocol vs a "
                  "plain loopback copy",
                  rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  if (const char* env = std::getenv("PCFARM_BENCH_BLOB_MIB")) {
    opt.mib = std::atoi(env);
  }
  CLI::App app{"blob_bench: blob download over the protocol vs a plain copy"};
  app.add_option("--mib", opt.mib, "blob size in MiB")
      ->capture_default_str()->check(CLI::Range(1, 16384));
  app.add_option("--credit", opt.credit, "chunk requests in flight")
      ->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--tmpdir", opt.tmpdir,
                 "parent of the temporary directory (default $TMPDIR or /tmp)");
  CLI11_PARSE(app, argc, argv);
  if (opt.mib < 1 || opt.mib > 16384) {
    std::fprintf(stderr, "blob_bench: the size must be 1..16384 MiB (--mib or "
                         "PCFARM_BENCH_BLOB_MIB), got %d\n", opt.mib);
    return 64;
  }
  return pcfarm::Run(opt);
}
