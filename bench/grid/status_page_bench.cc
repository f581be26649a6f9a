// status_page_bench: what open status pages cost the coordinator while
// thousands of idle workers are connected.
//
// Starts `pcfarm-coordinator serve` (a real process, heartbeat interval 1 s,
// the status page on a loopback port) and joins --workers simulated idle
// workers (SimFleet: enrolled, HELLO, then a HEARTBEAT each second). Then,
// in windows of --seconds each, it measures the coordinator's CPU
// (/proc/PID/stat) while:
//   baseline   no page is open;
//   overview   --browsers pollers each load the overview page (HTML,
//              app.js, style.css) once and then GET /api/v1/overview every
//              second, as app.js does on that page;
//   workers list  GET /api/v1/workers (every worker, a large answer) every
//              second, as the workers page did before it fetched one page;
//   workers    the workers page as app.js polls it now: GET
//              /api/v1/workers?limit=100&offset=0&sort=worker_id&order=asc
//              (one page of 100 rows and the total) every second;
//   baseline   again, to show drift.
// The pollers are threads of this program, each with its own session (a
// login through /login?token=T), started at spread times within the second.
// Ours minus baseline is what the pages cost.
//
//   status_page_bench [--workers 5000] [--browsers 10] [--seconds 15]
//                     [--tmpdir /dev/shm]
#include <unistd.h>


#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <CLI/CLI.hpp>

#include "base/file.h"
#include "base/rlimit.h"
#include "bench/grid/grid_bench.h"
#include "bench/grid/status_pollers.h"
#include "crypto/hash.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

struct Options {
  int workers = 5000;
  int browsers = 10;
  double seconds = 15;
  double settle = 5;
  std::string tmpdir = "/dev/shm";
};

int Fail(const Status& s) {
  std::fprintf(stderr, "status_page_bench: %s\n", s.ToString().c_str());
  return 1;
}

struct Window {
  std::string name;
  double cpu_percent = 0;
  double seconds = 0;
  uint64_t requests = 0, failures = 0, bytes = 0;
};

int Run(const Options& opt) {
  CryptoInit();
  long fds = RaiseOpenFileLimit();
  if (fds < 2L * opt.workers + 200) {
    return Fail(ResourceExhausted("open-file limit " + std::to_string(fds) +
                                  " is too low for " + std::to_string(opt.workers) +
                                  " workers (raise the hard limit)"));
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
  auto http_token = ReadHttpToken(cluster.coordinator_dir());
  if (!http_token.ok()) return Fail(http_token.status());

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

  // One window: the fleet heartbeats on this thread while `browsers`
  // pollers (none for the baseline) poll `api`.
  auto measure = [&](const std::string& name, const std::string& page,
                     const std::string& api) -> Result<Window> {
    StatusPollers pollers(cluster.http_endpoint(), *http_token, page, api,
                          api.empty() ? 0 : opt.browsers);
    const PollCounts& counts = pollers.counts();
    // Let them log in and load the page before the window.
    if (!api.empty()) PCFARM_RETURN_IF_ERROR(fleet.Idle(2000, 1000).status());
    PCFARM_ASSIGN_OR_RETURN(ProcSample c0, SampleProcess(*pid));
    uint64_t r0 = counts.requests, f0 = counts.failures, b0 = counts.bytes;
    PCFARM_RETURN_IF_ERROR(fleet.Idle(static_cast<int>(opt.seconds * 1000), 1000).status());
    PCFARM_ASSIGN_OR_RETURN(ProcSample c1, SampleProcess(*pid));
    Window w;
    w.name = name;
    w.seconds = c1.taken_at - c0.taken_at;
    w.cpu_percent = 100.0 * (c1.cpu_seconds - c0.cpu_seconds) / w.seconds;
    w.requests = counts.requests - r0;
    w.failures = counts.failures - f0;
    w.bytes = counts.bytes - b0;
    std::fprintf(stderr, "%s: %.2f%% CPU, %llu requests, %llu failed\n", name.c_str(),
                 w.cpu_percent, static_cast<unsigned long long>(w.requests),
                 static_cast<unsigned long long>(w.failures));
    return w;
  };
  std::vector<Window> windows;
  for (auto [name, page, api] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"baseline", "", ""},
           {"overview", "/", "/api/v1/overview"},
           {"workers list", "/workers", "/api/v1/workers"},
           {"workers", "/workers", "/api/v1/workers?limit=100&offset=0&sort=worker_id&order=asc"},
           {"baseline again", "", ""}}) {
    auto w = measure(name, page, api);
    if (!w.ok()) return Fail(w.status());
    windows.push_back(*w);
  }
  auto stats = cluster.Stats();
  if (!stats.ok()) return Fail(stats.status());

  const Window& last = windows.back();
  const double base = (windows[0].cpu_percent + last.cpu_percent) / 2;
  const std::string n = std::to_string(opt.workers), b = std::to_string(opt.browsers);
  std::vector<BenchRow> rows;
  for (size_t i : {size_t(1), size_t(2), size_t(3)}) {
    const Window& w = windows[i];
    rows.push_back({"coordinator CPU, " + b + " pages on " + w.name + " (% of one core)",
                    FormatFixed(w.cpu_percent, 2) + "%",
                    "no page: " + FormatFixed(base, 2) + "%",
                    base > 0.005 ? FormatFixed(w.cpu_percent / base, 2) + "x" : "-", "-"});
    rows.push_back({"  extra for the pages", FormatFixed(w.cpu_percent - base, 2) + "%", "-",
                    "-", "< 5%"});
  }
  std::vector<std::string> notes = {
      n + " idle simulated workers (1 s heartbeats), joined in " + FormatFixed(t_join, 1) +
          " s; workers_connected at the end: " +
          std::to_string(stats->value("workers_connected", uint64_t{0})),
      "baseline windows: " + FormatFixed(windows[0].cpu_percent, 2) + "% before, " +
          FormatFixed(last.cpu_percent, 2) + "% after; each window " +
          FormatFixed(opt.seconds, 1) + " s",
  };
  for (size_t i : {size_t(1), size_t(2), size_t(3)}) {
    const Window& w = windows[i];
    notes.push_back(w.name + ": " + std::to_string(w.requests) + " API requests (" +
                    FormatFixed(w.requests / w.seconds, 1) + "/s), " +
                    std::to_string(w.failures) + " failed, " +
                    FormatFixed(double(w.bytes) / std::max<uint64_t>(1, w.requests) / 1024, 1) +
                    " KiB per answer");
  }
  notes.push_back(std::string("the pollers and the fleet run in this process, on the same ") +
                  std::to_string(std::thread::hardware_concurrency()) + " CPU(s)");
  PrintBenchTable("status_page_bench: " + b + " open pages polling each second, " + n +
                      " idle workers, real coordinator on loopback",
                  rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"status_page_bench: coordinator CPU with status pages open"};
  app.add_option("--workers", opt.workers, "simulated idle workers")->capture_default_str();
  app.add_option("--browsers", opt.browsers, "open pages, each polling once a second")
      ->capture_default_str();
  app.add_option("--seconds", opt.seconds, "each window")->capture_default_str();
  app.add_option("--settle", opt.settle, "seconds between joining and the first window")
      ->capture_default_str();
  app.add_option("--tmpdir", opt.tmpdir, "parent of the temporary data directory")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  return pcfarm::Run(opt);
}
