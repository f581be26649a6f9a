// roundtrip_bench: shard round trips per second through a real coordinator.
//
// Starts `pcfarm-coordinator serve` (a real process, temporary data
// directory, loopback) and joins --workers simulated workers (SimWorker,
// CurveZMQ DEALERs, all driven by this thread with zmq::poll). It submits a
// bench job of many small shards (n=16); every worker then loops
// ASSIGN (verified) -> run -> signed RESULT -> ACK (sent by the coordinator
// only after the result is committed) -> READY. The figure is ACKs per
// second over a steady-state window after a warm-up.
//
// Baseline, measured first in the same run on the same file system: the
// floor each shard rests on whatever the protocol — one Ed25519 sign, one
// verify and one durable SQLite commit (WAL, synchronous=FULL).
//
// With --pages N it then alternates --page-rounds times a window with N
// status pages open on the overview (pollers doing what app.js does: log
// in, load the page, GET /api/v1/overview once a second) and one without,
// and prints the paged windows' rate over the page-less windows' rate (the
// first window included), so a drift over the run falls on both alike.
//
//   roundtrip_bench [--workers 200] [--seconds 12] [--warmup 3] [--pages 0]
//                   [--page-rounds 2]
//                   [--tmpdir DIR]   (where the data directory goes)
#include <sys/resource.h>
#include <sys/vfs.h>
#include <linux/magic.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include "base/rlimit.h"
#include "bench/grid/grid_bench.h"
#include "bench/grid/status_pollers.h"
#include "crypto/hash.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

struct Options {
  int workers = 200;
  double seconds = 12;
  double warmup = 3;
  int job_shards = 2000;
  int size = 16;
  double floor_seconds = 3;
  int pages = 0;
  int page_rounds = 2;
  std::string tmpdir;
};

double CpuSecondsSelf() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

std::string FileSystemOf(const std::string& dir) {
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) return "unknown file system";
  if (fs.f_type == TMPFS_MAGIC) return "tmpfs (fsync costs nothing)";
  return "disk (ext4 or other; fsync reaches the device)";
}

int Fail(const Status& s) {
  std::fprintf(stderr, "roundtrip_bench: %s\n", s.ToString().c_str());
  return 1;
}

int Run(const Options& opt) {
  CryptoInit();
  RaiseOpenFileLimit();
  if (!opt.tmpdir.empty()) ::setenv("TMPDIR", opt.tmpdir.c_str(), 1);

  MiniClusterOptions mco;
  mco.heartbeat_interval_ms = 1000;
  mco.heartbeat_liveness = 3;
  mco.lease_ms = 600'000;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  Status s = cluster.Init();
  if (!s.ok()) return Fail(s);

  std::fprintf(stderr, "measuring the floor (%.0f s) in %s ...\n",
               opt.floor_seconds, cluster.dir().c_str());
  auto floor = MeasureShardFloor(cluster.dir(), opt.floor_seconds);
  if (!floor.ok()) return Fail(floor.status());

  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  auto pid = FindChildProcess("pcfarm-coordinator");
  if (!pid.ok()) return Fail(pid.status());
  auto token = cluster.CreateToken(opt.workers, "1h");
  if (!token.ok()) return Fail(token.status());

  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, opt.workers + 64);
  SimFleet fleet(&ctx);
  SimWorkerOptions wo;
  wo.name = "rt";
  wo.slots = 1;
  wo.heartbeat_interval_ms = 1000;
  double t_join = MonotonicSeconds();
  s = fleet.Join(*token, opt.workers, wo, 170'000);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", cluster.DumpLogs().c_str());
    return Fail(s);
  }
  t_join = MonotonicSeconds() - t_join;
  std::fprintf(stderr, "%d workers joined in %.1f s\n", opt.workers, t_join);

  // The first job is submitted before any READY, so the submit itself
  // assigns nothing. Another job is submitted whenever fewer than half a
  // job's shards are left, so the pending queue stays between 0.5 and 1.5
  // jobs (the scheduler's lease query grows with the pending shards).
  uint64_t submitted = 0;
  int jobs = 0;
  auto submit = [&]() -> Status {
    auto job = cluster.SubmitBench(opt.job_shards, opt.size, 1, 1);
    if (!job.ok()) return job.status();
    submitted += static_cast<uint64_t>(opt.job_shards);
    jobs++;
    return Status::Ok();
  };
  s = submit();
  if (!s.ok()) return Fail(s);
  s = fleet.ReadyAll(1);
  if (!s.ok()) return Fail(s);

  // Pumps the fleet (topping the queue up) until `until`, printing the
  // ACK rate each second.
  const double t0 = MonotonicSeconds();
  double next_report = t0 + 1;
  uint64_t last_acks = 0;
  auto pump_until = [&](double until) -> Status {
    while (MonotonicSeconds() < until) {
      PCFARM_RETURN_IF_ERROR(fleet.Pump(50));
      const double now = MonotonicSeconds();
      const uint64_t acks = fleet.acks();
      if (submitted - acks < static_cast<uint64_t>(opt.job_shards / 2)) {
        PCFARM_RETURN_IF_ERROR(submit());
      }
      if (now >= next_report) {
        std::fprintf(stderr, "t=%4.1f s  acks=%llu  (+%llu/s)\n", now - t0,
                     static_cast<unsigned long long>(acks),
                     static_cast<unsigned long long>(acks - last_acks));
        last_acks = acks;
        next_report += 1;
      }
    }
    return Status::Ok();
  };
  struct Window {
    double seconds = 0, coord_cpu = 0, driver_cpu = 0;
    uint64_t acks = 0;
    double rate() const { return seconds > 0 ? double(acks) / seconds : 0; }
  };
  auto measure = [&](const char* name) -> Result<Window> {
    PCFARM_ASSIGN_OR_RETURN(ProcSample c0, SampleProcess(*pid));
    const uint64_t a0 = fleet.acks();
    const double d0 = CpuSecondsSelf(), w0 = MonotonicSeconds();
    PCFARM_RETURN_IF_ERROR(pump_until(w0 + opt.seconds));
    PCFARM_ASSIGN_OR_RETURN(ProcSample c1, SampleProcess(*pid));
    Window w;
    w.seconds = MonotonicSeconds() - w0;
    w.acks = fleet.acks() - a0;
    w.coord_cpu = c1.cpu_seconds - c0.cpu_seconds;
    w.driver_cpu = CpuSecondsSelf() - d0;
    std::fprintf(stderr, "window %s: %.1f round trips/s\n", name, w.rate());
    return w;
  };
  s = pump_until(t0 + opt.warmup);
  if (!s.ok()) return Fail(s);
  auto first = measure("no page");
  if (!first.ok()) return Fail(first.status());
  // With --pages: the same load with that many status pages open on the
  // overview (as app.js polls it), alternating with windows without them
  // (--page-rounds times: pages, no page), so that a drift of the rate
  // over the run (the database grows) falls on both sides alike. The
  // baseline is every page-less window together, the first one included.
  Window paged, unpaged = *first;
  std::vector<double> paged_rates, unpaged_rates = {first->rate()};
  uint64_t page_requests = 0, page_failures = 0;
  auto add = [](Window* sum, const Window& w) {
    sum->seconds += w.seconds;
    sum->acks += w.acks;
    sum->coord_cpu += w.coord_cpu;
    sum->driver_cpu += w.driver_cpu;
  };
  if (opt.pages > 0) {
    auto http_token = ReadHttpToken(cluster.coordinator_dir());
    if (!http_token.ok()) return Fail(http_token.status());
    for (int round = 0; round < opt.page_rounds; ++round) {
      {
        StatusPollers pollers(cluster.http_endpoint(), *http_token, "/", "/api/v1/overview",
                              opt.pages);
        s = pump_until(MonotonicSeconds() + 2);  // they log in and load the page
        if (!s.ok()) return Fail(s);
        const uint64_t r0 = pollers.counts().requests, f0 = pollers.counts().failures;
        auto w = measure("pages open");
        if (!w.ok()) return Fail(w.status());
        add(&paged, *w);
        paged_rates.push_back(w->rate());
        page_requests += pollers.counts().requests - r0;
        page_failures += pollers.counts().failures - f0;
      }
      auto w = measure("no page");
      if (!w.ok()) return Fail(w.status());
      add(&unpaged, *w);
      unpaged_rates.push_back(w->rate());
    }
  }
  const Window& main_window = *first;
  const double window = main_window.seconds;
  const uint64_t a0 = 0, a1 = main_window.acks;
  const double coord_cpu = main_window.coord_cpu;
  auto stats = cluster.Stats();
  if (!stats.ok()) return Fail(stats.status());
  auto counter = [&](const char* name) -> uint64_t {
    return stats->value(name, uint64_t{0});
  };

  double shards = static_cast<double>(a1 - a0);
  double rate = shards / window;
  double floor_ms = 1000.0 / floor->per_second;
  double ours_ms = shards > 0 ? coord_cpu * 1000.0 / shards : 0;
  std::vector<BenchRow> rows = {
      {"shard round trips/s (" + std::to_string(opt.workers) + " workers)",
       FormatFixed(rate, 1) + "/s",
       "floor: " + FormatFixed(floor->per_second, 1) + " shards/s",
       FormatFixed(rate / floor->per_second, 3) + "x", ">= 2000/s"},
      {"coordinator CPU per shard", FormatFixed(ours_ms, 3) + " ms",
       "floor wall time per shard: " + FormatFixed(floor_ms, 3) + " ms",
       FormatFixed(ours_ms / floor_ms, 3) + "x", "-"},
      {"coordinator CPU (% of one core)",
       FormatFixed(100.0 * coord_cpu / window, 1) + "%", "-", "-", "-"},
  };
  if (opt.pages > 0) {
    const double base = unpaged.rate();
    rows.push_back({"round trips/s with " + std::to_string(opt.pages) +
                        " status pages open on the overview",
                    FormatFixed(paged.rate(), 1) + "/s",
                    "no page: " + FormatFixed(base, 1) + "/s",
                    FormatFixed(base > 0 ? paged.rate() / base : 0, 3) + "x", ">= 0.95x"});
    // Each paged window against the page-less windows on either side of it
    // (a drift of the rate between windows cancels to first order), and the
    // median of those ratios: steadier than the pooled one when windows
    // differ by +-10% from one another.
    std::vector<double> paired;
    for (size_t i = 0; i < paged_rates.size() && i + 1 < unpaged_rates.size(); ++i) {
      const double around = (unpaged_rates[i] + unpaged_rates[i + 1]) / 2;
      if (around > 0) paired.push_back(paged_rates[i] / around);
    }
    std::sort(paired.begin(), paired.end());
    if (!paired.empty()) {
      const size_t n = paired.size();
      const double median =
          n % 2 == 1 ? paired[n / 2] : (paired[n / 2 - 1] + paired[n / 2]) / 2;
      rows.push_back({"  median of each paged window over its neighbours",
                      FormatFixed(median, 3) + "x",
                      "range " + FormatFixed(paired.front(), 3) + "-" +
                          FormatFixed(paired.back(), 3) + "x (" + std::to_string(n) +
                          " windows)",
                      FormatFixed(median, 3) + "x", ">= 0.95x"});
    }
    rows.push_back({"  coordinator CPU with the pages (% of one core)",
                    FormatFixed(100.0 * paged.coord_cpu / paged.seconds, 1) + "%",
                    "no page: " + FormatFixed(100.0 * unpaged.coord_cpu / unpaged.seconds, 1) + "%",
                    "-", "-"});
  }
  std::vector<std::string> notes = {
      "floor per shard: sign+verify " + FormatFixed(floor->sign_verify_us, 1) +
          " us, durable commit " + FormatFixed(floor->commit_us, 1) + " us (" +
          std::to_string(floor->iterations) + " iterations)",
      "data directory on " + FileSystemOf(cluster.dir()),
      "window " + FormatFixed(window, 1) + " s after " +
          FormatFixed(opt.warmup, 1) + " s warm-up; " +
          std::to_string(a1 - a0) + " ACKs in the window; " +
          std::to_string(jobs) + " bench jobs of " +
          std::to_string(opt.job_shards) + " shards (n=" +
          std::to_string(opt.size) + ", reps=1, redundancy 1), topped up "
          "so 0.5-1.5 jobs' shards are pending",
      "coordinator stats at the end: results_accepted=" +
          std::to_string(counter("results_accepted")) +
          " shards_assigned=" + std::to_string(counter("shards_assigned")) +
          " results_rejected=" + std::to_string(counter("results_rejected")) +
          " workers_connected=" + std::to_string(counter("workers_connected")) +
          "; rejects seen by workers: " + std::to_string(fleet.rejects()),
      "driver (this process, all simulated workers) CPU: " +
          FormatFixed(100.0 * main_window.driver_cpu / window, 1) + "% of one core; " +
          std::to_string(opt.workers) + " workers joined in " +
          FormatFixed(t_join, 1) + " s",
  };
  if (opt.pages > 0) {
    auto list = [](const std::vector<double>& v) {
      std::string out;
      for (double r : v) out += (out.empty() ? "" : ", ") + FormatFixed(r, 1);
      return out;
    };
    notes.push_back("pages: " + std::to_string(opt.pages) + " pollers (threads of this process), " +
                    std::to_string(page_requests) + " API requests in the paged windows, " +
                    std::to_string(page_failures) + " failed; rates per window (/s), without " +
                    "pages: " + list(unpaged_rates) + "; with: " + list(paged_rates));
  }
  PrintBenchTable("roundtrip_bench: assign -> signed result -> verified -> "
                  "committed -> ACK, real coordinator on loopback",
                  rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"roundtrip_bench: shard round trips/s through a real coordinator"};
  app.add_option("--workers", opt.workers, "simulated workers")->capture_default_str();
  app.add_option("--seconds", opt.seconds, "steady-state window")->capture_default_str();
  app.add_option("--warmup", opt.warmup, "seconds before the window")->capture_default_str();
  app.add_option("--job-shards", opt.job_shards, "shards per submitted bench job")
      ->capture_default_str()->check(CLI::Range(2, 1000000));
  app.add_option("--size", opt.size, "bench kind matrix size n")->capture_default_str();
  app.add_option("--floor-seconds", opt.floor_seconds, "how long to measure the floor")
      ->capture_default_str();
  app.add_option("--pages", opt.pages,
                 "then measure again with this many status pages open (0: none)")
      ->capture_default_str()->check(CLI::Range(0, 1000));
  app.add_option("--page-rounds", opt.page_rounds,
                 "with --pages: windows with pages, each followed by one without")
      ->capture_default_str()->check(CLI::Range(1, 100));
  app.add_option("--tmpdir", opt.tmpdir,
                 "parent of the temporary data directory (default $TMPDIR or /tmp)");
  CLI11_PARSE(app, argc, argv);
  return pcfarm::Run(opt);
}
