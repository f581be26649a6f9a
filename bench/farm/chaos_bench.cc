// chaos_bench: random kill -9 of the coordinator and of workers during
// infer and finetune jobs (issue 17), many trials, and what they did to the
// jobs. The driver is tests/integration/chaos.h (chaos_test runs 10 of
// these trials in CI): per job kind one MiniCluster with --workers real
// workers, the job run undisturbed first (twice; the second run's wall time
// is the baseline), then each trial runs the same job while a schedule drawn
// from its seed kills -9 the coordinator, a worker or both, 1..--max-kills
// times at random progress points, and restarts them after a random pause.
// Trial i has seed --seed + i and job kind i mod the --kinds list.
//
// Per trial it prints one line (ChaosTrial::Describe; the logs' tails on
// stderr when a trial failed), then the table: trials that kept every
// invariant, kills done, results lost, results accepted twice, outputs
// byte-identical to the undisturbed run's, and the time to finish beside
// the undisturbed run's. A failing trial runs again, alone, with
//   chaos_bench --trials 1 --seed S --kinds K
//
//   chaos_bench [--trials 10] [--seed 1] [--kinds infer,finetune,diloco]
//               [--workers 2] [--slots 1] [--max-kills 4]
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "bench/grid/grid_bench.h"
#include "tests/integration/chaos.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

struct Options {
  int trials = 10;
  uint64_t seed = 1;
  std::string kinds = "infer,finetune,diloco";
  int workers = 2;
  int slots = 1;
  int max_kills = 4;
};

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// Time to finish of one job kind's trials beside its undisturbed run.
struct Times {
  int n = 0;
  double sum = 0, max = 0, reference = 0;
};

int Run(const Options& opt) {
  std::vector<ChaosJob> kinds;
  for (size_t pos = 0; pos <= opt.kinds.size();) {
    size_t end = opt.kinds.find(',', pos);
    if (end == std::string::npos) end = opt.kinds.size();
    auto k = ParseChaosJob(opt.kinds.substr(pos, end - pos));
    if (!k.ok()) {
      std::fprintf(stderr, "chaos_bench: --kinds: %s\n", k.status().ToString().c_str());
      return 1;
    }
    kinds.push_back(*k);
    pos = end + 1;
  }
  std::string dir = (fs::temp_directory_path() / "pcfarm-chaos-bench-XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) {
    std::perror("chaos_bench: mkdtemp");
    return 1;
  }
  ChaosOptions o;
  o.workers = opt.workers;
  o.worker_slots = opt.slots;
  o.max_kills = opt.max_kills;
  ChaosDriver driver(dir, o);
  const std::string load_before = LoadAverage();
  const double t0 = MonotonicSeconds();

  int ok = 0, coordinator_kills = 0, worker_kills = 0, late_kills = 0, identical = 0;
  int consistent = 0, succeeded = 0, harness_errors = 0;
  int64_t lost = 0, twice = 0;
  std::map<ChaosJob, Times> times;
  std::vector<std::string> failed;
  for (int i = 0; i < opt.trials; ++i) {
    const uint64_t seed = opt.seed + uint64_t(i);
    const ChaosJob job = kinds[size_t(i) % kinds.size()];
    auto t = driver.RunTrial(seed, job);
    if (!t.ok()) {
      ++harness_errors;
      failed.push_back(std::to_string(seed) + " " + ChaosJobName(job));
      std::printf("seed %llu %s: harness error: %s\n", (unsigned long long)seed,
                  ChaosJobName(job), t.status().ToString().c_str());
      std::fflush(stdout);
      continue;
    }
    std::printf("[%d/%d] %s\n", i + 1, opt.trials, t->Describe().c_str());
    std::fflush(stdout);
    if (!t->ok()) {
      failed.push_back(std::to_string(seed) + " " + ChaosJobName(job));
      std::cerr << t->logs << std::flush;
    }
    ok += t->ok();
    succeeded += t->succeeded;
    coordinator_kills += t->coordinator_kills();
    worker_kills += t->worker_kills();
    for (const auto& k : t->kills) late_kills += !k.done;
    lost += t->results_lost;
    twice += t->accepted_twice;
    identical += t->output_identical;
    consistent += t->store_consistent;
    Times& tm = times[job];
    ++tm.n;
    tm.sum += t->seconds;
    tm.max = std::max(tm.max, t->seconds);
    tm.reference = t->reference_seconds;
  }
  const double wall = MonotonicSeconds() - t0;

  const std::string n = std::to_string(opt.trials);
  std::vector<BenchRow> rows = {
      {"trials that kept every invariant", std::to_string(ok) + " of " + n, "-", "-", "all"},
      {"jobs that succeeded", std::to_string(succeeded) + " of " + n, "-", "-", "all"},
      {"kill -9 of the coordinator", std::to_string(coordinator_kills), "-", "-", "-"},
      {"kill -9 of a worker", std::to_string(worker_kills), "-", "-", "-"},
      {"results lost", std::to_string(lost), "-", "-", "0"},
      {"results accepted twice", std::to_string(twice), "-", "-", "0"},
      {"outputs identical to the undisturbed run's", std::to_string(identical) + " of " + n,
       "-", "-", "all"},
      {"coordinator store consistent at the end", std::to_string(consistent) + " of " + n, "-",
       "-", "all"},
  };
  for (const auto& [job, tm] : times) {
    const double mean = tm.sum / std::max(tm.n, 1);
    rows.push_back({std::string(ChaosJobName(job)) + ": time to finish, mean / max (" +
                        std::to_string(tm.n) + " trials)",
                    FormatFixed(mean, 2) + " / " + FormatFixed(tm.max, 2) + " s",
                    "undisturbed: " + FormatFixed(tm.reference, 2) + " s",
                    FormatFixed(mean / std::max(tm.reference, 1e-3), 2) + "x / " +
                        FormatFixed(tm.max / std::max(tm.reference, 1e-3), 2) + "x",
                    "-"});
  }
  std::vector<std::string> notes = {
      "seeds " + std::to_string(opt.seed) + ".." + std::to_string(opt.seed + opt.trials - 1) +
          ", kinds " + opt.kinds + " in turn; " + std::to_string(opt.workers) + " workers of " +
          std::to_string(opt.slots) + " slot(s), 1.." + std::to_string(opt.max_kills) +
          " kills a trial, lease " +
          std::to_string(o.lease_ms) + " ms, heartbeat 200 ms x 3",
      std::to_string(late_kills) + " planned kills came after their job's end (not done)",
      "wall time " + FormatFixed(wall, 0) + " s (" + FormatFixed(wall / std::max(opt.trials, 1), 1) +
          " s a trial, clusters and undisturbed runs included)",
      "load average before / after: " + load_before + " / " + LoadAverage(),
  };
  if (harness_errors) notes.push_back(std::to_string(harness_errors) + " harness errors");
  if (!failed.empty()) {
    std::string f;
    for (const auto& s : failed) f += (f.empty() ? "" : ", ") + s;
    notes.push_back("failed trials (seed kind): " + f);
  }
  PrintBenchTable("chaos_bench: random kill -9 of the coordinator and workers during jobs", rows,
                  notes);
  if (!std::getenv("PCFARM_KEEP_TEST_DIR")) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return failed.empty() ? 0 : 2;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"chaos_bench: random kill -9 of the coordinator and workers during jobs"};
  app.add_option("--trials", opt.trials, "trials to run")->capture_default_str();
  app.add_option("--seed", opt.seed, "seed of the first trial (trial i: seed + i)")
      ->capture_default_str();
  app.add_option("--kinds", opt.kinds, "job kinds, taken in turn: infer, finetune, diloco")
      ->capture_default_str();
  app.add_option("--workers", opt.workers, "workers per cluster")->capture_default_str();
  app.add_option("--slots", opt.slots, "shards each worker runs at once")->capture_default_str();
  app.add_option("--max-kills", opt.max_kills, "most kills in a trial")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (opt.trials < 1 || opt.workers < 1 || opt.slots < 1 || opt.max_kills < 1) {
    std::fprintf(stderr,
                 "chaos_bench: --trials, --workers, --slots and --max-kills must be >= 1\n");
    return 1;
  }
  return pcfarm::Run(opt);
}
