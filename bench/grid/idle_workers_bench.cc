// idle_workers_bench: what thousands of idle connected workers cost the
// coordinator.
//
// Starts `pcfarm-coordinator serve` (a real process, heartbeat interval
// 1 s) and measures, from /proc/PID/stat and /proc/PID/status:
//   baseline  its CPU and RSS with 0 workers, over --baseline-seconds;
//   ours      its CPU and RSS with --workers simulated workers connected
//             (CurveZMQ, enrolled, HELLO sent, then only a HEARTBEAT each
//             second), over --seconds of steady state after --settle.
// Memory per worker = (RSS with N - RSS with 0) / N.
//
// The data directory goes to /dev/shm by default: enrolling thousands of
// workers costs several durable SQLite commits each, which on a slow disk
// takes longer than a benchmark should run. --tmpdir /tmp puts it on disk.
//
//   idle_workers_bench [--workers 5000] [--seconds 20] [--tmpdir DIR]
#include <sys/resource.h>
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include <CLI/CLI.hpp>

#include "base/rlimit.h"
#include "bench/grid/grid_bench.h"
#include "crypto/hash.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

struct Options {
  int workers = 5000;
  double seconds = 20;
  double baseline_seconds = 10;
  double settle = 5;
  std::string tmpdir = "/dev/shm";
};

int Fail(const Status& s) {
  std::fprintf(stderr, "idle_workers_bench: %s\n", s.ToString().c_str());
  return 1;
}

int Run(const Options& opt) {
  CryptoInit();
  long fds = RaiseOpenFileLimit();
  // Each simulated worker holds a TCP socket and a ZeroMQ mailbox here.
  if (fds < 2L * opt.workers + 200) {
    return Fail(ResourceExhausted(
        "open-file limit " + std::to_string(fds) + " is too low for " +
        std::to_string(opt.workers) + " workers (raise the hard limit)"));
  }
  if (!opt.tmpdir.empty()) ::setenv("TMPDIR", opt.tmpdir.c_str(), 1);

  MiniClusterOptions mco;
  mco.heartbeat_interval_ms = 1000;
  mco.heartbeat_liveness = 3;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  Status s = cluster.Init();
  if (!s.ok()) return Fail(s);
  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  auto pid = FindChildProcess("pcfarm-coordinator");
  if (!pid.ok()) return Fail(pid.status());

  // ---- baseline: no workers ----
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto b0 = SampleProcess(*pid);
  if (!b0.ok()) return Fail(b0.status());
  std::this_thread::sleep_for(
      std::chrono::milliseconds(static_cast<int>(opt.baseline_seconds * 1000)));
  auto b1 = SampleProcess(*pid);
  if (!b1.ok()) return Fail(b1.status());
  double base_cpu = 100.0 * (b1->cpu_seconds - b0->cpu_seconds) /
                    (b1->taken_at - b0->taken_at);
  int64_t base_rss = b1->rss_kib;
  std::fprintf(stderr, "0 workers: %.2f%% CPU, RSS %lld KiB\n", base_cpu,
               static_cast<long long>(base_rss));

  // ---- join N workers ----
  auto token = cluster.CreateToken(opt.workers, "1h");
  if (!token.ok()) return Fail(token.status());
  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, opt.workers + 64);
  SimFleet fleet(&ctx);
  SimWorkerOptions wo;
  wo.name = "idle";
  wo.heartbeat_interval_ms = 1000;
  wo.auto_work = false;
  double t_join = MonotonicSeconds();
  s = fleet.Join(*token, opt.workers, wo, 170'000);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", cluster.DumpLogs(3000).c_str());
    return Fail(s);
  }
  t_join = MonotonicSeconds() - t_join;
  std::fprintf(stderr, "%d workers joined in %.1f s\n", opt.workers, t_join);
  auto settle = fleet.Idle(static_cast<int>(opt.settle * 1000), 1000);
  if (!settle.ok()) return Fail(settle.status());

  // ---- steady state ----
  auto before = cluster.Stats();
  if (!before.ok()) return Fail(before.status());
  auto c0 = SampleProcess(*pid);
  if (!c0.ok()) return Fail(c0.status());
  auto sent = fleet.Idle(static_cast<int>(opt.seconds * 1000), 1000);
  if (!sent.ok()) return Fail(sent.status());
  auto c1 = SampleProcess(*pid);
  if (!c1.ok()) return Fail(c1.status());
  auto after = cluster.Stats();
  if (!after.ok()) return Fail(after.status());

  double window = c1->taken_at - c0->taken_at;
  double cpu = 100.0 * (c1->cpu_seconds - c0->cpu_seconds) / window;
  double per_worker_kb =
      static_cast<double>(c1->rss_kib - base_rss) * 1024.0 / opt.workers / 1000.0;
  auto counter = [](const nlohmann::json& j, const char* name) -> uint64_t {
    return j.value(name, uint64_t{0});
  };
  uint64_t connected = counter(*after, "workers_connected");
  uint64_t lost = counter(*after, "workers_lost");
  double msgs_per_worker_s =
      static_cast<double>(counter(*after, "messages_in") -
                          counter(*before, "messages_in")) /
      window / opt.workers;

  std::string n = std::to_string(opt.workers);
  std::vector<BenchRow> rows = {
      {"coordinator CPU, " + n + " idle workers (% of one core)",
       FormatFixed(cpu, 2) + "%", "0 workers: " + FormatFixed(base_cpu, 2) + "%",
       base_cpu > 0.005 ? FormatFixed(cpu / base_cpu, 1) + "x" : "-",
       "< 25%"},
      {"coordinator memory per worker", FormatFixed(per_worker_kb, 1) + " KB",
       "-", "-", "< 50 KB"},
      {"coordinator RSS", std::to_string(c1->rss_kib / 1024) + " MiB",
       "0 workers: " + std::to_string(base_rss / 1024) + " MiB",
       FormatFixed(static_cast<double>(c1->rss_kib) / base_rss, 1) + "x", "-"},
      {"workers still connected at the end", std::to_string(connected),
       "joined: " + n, FormatFixed(double(connected) / opt.workers, 3) + "x",
       "all"},
  };
  struct statfs fs {};
  bool tmpfs = ::statfs(cluster.dir().c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC;
  std::vector<std::string> notes = {
      "steady window " + FormatFixed(window, 1) + " s after " +
          FormatFixed(opt.settle, 1) + " s settling; baseline window " +
          FormatFixed(opt.baseline_seconds, 1) + " s",
      "worker messages in per worker per second: " +
          FormatFixed(msgs_per_worker_s, 2) + " (driver sent " +
          std::to_string(*sent) + " heartbeats); workers_lost=" +
          std::to_string(lost),
      std::string("data directory on ") +
          (tmpfs ? "tmpfs (fsync costs nothing)" : "disk"),
      n + " workers enrolled and joined (pipelined) in " +
          FormatFixed(t_join, 1) + " s",
  };
  PrintBenchTable("idle_workers_bench: " + n +
                      " idle workers, 1 s heartbeats, real coordinator on loopback",
                  rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"idle_workers_bench: coordinator CPU and memory per idle worker"};
  app.add_option("--workers", opt.workers, "simulated idle workers")->capture_default_str();
  app.add_option("--seconds", opt.seconds, "steady-state window")->capture_default_str();
  app.add_option("--baseline-seconds", opt.baseline_seconds,
                 "window with 0 workers")->capture_default_str();
  app.add_option("--settle", opt.settle, "seconds between joining and the window")
      ->capture_default_str();
  app.add_option("--tmpdir", opt.tmpdir, "parent of the temporary data directory")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return pcfarm::Run(opt);
}
