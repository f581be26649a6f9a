// verify_bench: what the verification policy (coordinator/verify_policy.h)
// costs honest workers and how fast it catches cheats, measured on the real
// Store and Scheduler (SQLite file, the transitions the daemon runs) with
// simulated workers that answer in turn. No network: this measures the
// policy, not the transport (hardening_test runs it over the real protocol).
//
// Part 1, steady state: --honest workers (each its own enrollment token)
// run --shards shards of `auto` jobs; the figure is the verification
// overhead (extra results / accepted shards) over the last half, beside
// the same farm running `redundant` (redundancy 2) jobs: the baseline.
//
// Part 2, adversaries: --trials trials per cheat, each a fresh farm of
// --honest honest workers and one cheat that answers in turn with them,
// on one `auto` job of --job-shards shards. Cheats: forges every result
// from the start; a sleeper that is honest for its first 40 results and
// then forges; one that forges 10% (and 50%) of its results at random.
// Reported: trials in which it was quarantined, the distribution of the
// results it returned from its first forgery to its quarantine
// (p50/p90/p99/max), the share quarantined within 20 of them, and trials
// whose finished job kept a forged result.
//
//   verify_bench [--honest 4] [--shards 4000] [--trials 200] [--job-shards 300]
//                [--tmpdir /dev/shm]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/clock.h"
#include "coordinator/scheduler.h"
#include "coordinator/store.h"

namespace pcfarm {
namespace {

constexpr char kForged[] = "forged";

struct Farm {
  std::string dir;
  FakeClock clock;
  std::unique_ptr<Store> store;
  std::unique_ptr<Scheduler> sched;
  std::vector<int64_t> workers;

  Farm(const std::string& tmpdir, int n) {
    std::string tmpl = tmpdir + "/verify_bench.XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back(0);
    if (!mkdtemp(buf.data())) {
      std::perror("mkdtemp");
      std::exit(1);
    }
    dir = buf.data();
    auto s = Store::Open(dir + "/state.db", &clock);
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.status().ToString().c_str());
      std::exit(1);
    }
    store = std::move(s).value();
    // Its group commit, as the daemon batches: one fsync per batch.
    sched = std::make_unique<Scheduler>(store.get());
    for (int i = 0; i < n; ++i) {
      std::string t = "token-" + std::to_string(i);
      (void)store->AddToken(t, 1, clock.NowMs() + 3'600'000);
      auto id = store->EnrollWorker(t, "w" + std::to_string(i), "s" + std::to_string(i),
                                    "c" + std::to_string(i));
      if (!id.ok()) std::exit(1);
      workers.push_back(*id);
    }
  }
  ~Farm() {
    sched.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  int64_t Job(int shards, VerifyPolicy verify, int redundancy = 1) {
    JobSpec spec;
    spec.kind = "bench";
    spec.params = "{}";
    spec.verify = verify;
    spec.redundancy = redundancy;
    for (int i = 0; i < shards; ++i) spec.shards.push_back({"p" + std::to_string(i), "", 0});
    auto id = store->CreateJob(spec);
    if (!id.ok()) std::exit(1);
    return *id;
  }
  bool Done(int64_t job) {
    auto j = store->GetJob(job);
    return j.ok() && j->state != "running" && j->state != "queued";
  }
  // One turn: each worker in order leases one shard and answers it with
  // answer(worker index, shard params). Returns false when nobody got work.
  bool Turn(const std::function<std::string(size_t, const std::string&)>& answer) {
    bool any = false;
    for (size_t i = 0; i < workers.size(); ++i) {
      clock.AdvanceMs(10);
      (void)store->TouchWorker(workers[i]);
      auto l = sched->LeaseNext(workers[i], DeviceCaps{{{"cpu", int64_t(1) << 30}}});
      if (!l.ok() || !l->has_value()) continue;
      any = true;
      clock.AdvanceMs(100);
      (void)sched->RecordResult((*l)->attempt_id, workers[i],
                                answer(i, (*l)->shard_params), "sig");
    }
    return any;
  }
};

// Extra results per accepted shard over a run of `shards` shards (its
// second half, after the workers' first checks).
double Overhead(const std::string& tmpdir, int honest, int shards, VerifyPolicy verify,
                int redundancy) {
  Farm f(tmpdir, honest);
  auto honest_answer = [](size_t, const std::string& p) { return "ok-" + p; };
  // First half: warm-up.
  int64_t warm = f.Job(shards / 2, verify, redundancy);
  while (!f.Done(warm) && f.Turn(honest_answer)) {
  }
  int64_t job = f.Job(shards / 2, verify, redundancy);
  while (!f.Done(job) && f.Turn(honest_answer)) {
  }
  auto v = f.store->GetJobVerification(job);
  if (!v.ok() || v->useful_ms == 0) return -1;
  return double(v->extra_ms) / double(v->useful_ms);
}

struct CheatStats {
  std::vector<int> before_quarantine;  // results returned, per quarantined trial
  int not_quarantined = 0;
  int forged_kept = 0;
};

CheatStats Trials(const std::string& tmpdir, int honest, int trials, int job_shards,
                  const std::function<bool(int n, std::mt19937& rng)>& forges) {
  CheatStats out;
  std::mt19937 rng(12345);
  for (int t = 0; t < trials; ++t) {
    Farm f(tmpdir, honest + 1);
    const size_t cheat = size_t(honest);
    int returned = 0;
    int64_t job = f.Job(job_shards, VerifyPolicy::kAuto);
    bool banned = false;
    int at_ban = 0, first_forged = -1;
    auto answer = [&](size_t w, const std::string& p) -> std::string {
      if (w != cheat) return "ok-" + p;
      bool forge = forges(returned, rng);
      if (forge && first_forged < 0) first_forged = returned;
      ++returned;
      return forge ? std::string(kForged) : "ok-" + p;
    };
    while (!f.Done(job) && f.Turn(answer)) {
      if (!banned && f.store->GetWorker(f.workers[cheat])->banned) {
        banned = true;
        at_ban = returned;
      }
    }
    if (banned) {
      // Counted from its first forgery (the sleeper's honest ones aside).
      out.before_quarantine.push_back(at_ban - std::max(first_forged, 0));
    } else {
      ++out.not_quarantined;
    }
    auto acc = f.store->AcceptedResults(job);
    if (acc.ok()) {
      for (const auto& r : *acc) {
        if (r.body == kForged) {
          ++out.forged_kept;
          break;
        }
      }
    }
  }
  return out;
}

int Pct(std::vector<int> v, double q) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, size_t(q * double(v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  using namespace pcfarm;
  CLI::App app{"verify_bench: the verification policy's cost and catch rate"};
  int honest = 4, shards = 4000, trials = 200, job_shards = 300;
  std::string tmpdir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  app.add_option("--honest", honest, "honest workers (own tokens)")->capture_default_str();
  app.add_option("--shards", shards, "shards of the steady-state run")->capture_default_str();
  app.add_option("--trials", trials, "trials per cheat")->capture_default_str();
  app.add_option("--job-shards", job_shards, "shards of each trial's job")->capture_default_str();
  app.add_option("--tmpdir", tmpdir, "where the SQLite files go")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (honest < 2) {
    std::fprintf(stderr, "verify_bench: --honest must be >= 2\n");
    return 1;
  }

  std::printf("== steady state: %d honest workers, %d shards (overhead of the second half)\n",
              honest, shards);
  double auto_o = Overhead(tmpdir, honest, shards, VerifyPolicy::kAuto, 1);
  double red_o = Overhead(tmpdir, honest, shards, VerifyPolicy::kRedundant, 2);
  std::printf("%-28s %10s\n", "policy", "overhead");
  std::printf("%-28s %9.1f%%\n", "auto (ours)", 100 * auto_o);
  std::printf("%-28s %9.1f%%\n", "redundant, 2 copies (base)", 100 * red_o);
  std::printf("auto / redundant-2 extra compute: %.3fx\n\n", red_o > 0 ? auto_o / red_o : 0);

  struct Cheat {
    const char* name;
    std::function<bool(int, std::mt19937&)> forges;
  };
  std::vector<Cheat> cheats = {
      {"forges from the start", [](int, std::mt19937&) { return true; }},
      {"sleeper: 40 honest, then forges", [](int n, std::mt19937&) { return n >= 40; }},
      {"forges 50% at random",
       [](int, std::mt19937& r) { return std::uniform_real_distribution<>(0, 1)(r) < 0.5; }},
      {"forges 10% at random",
       [](int, std::mt19937& r) { return std::uniform_real_distribution<>(0, 1)(r) < 0.1; }},
  };
  std::printf("== adversaries: %d trials each, %d honest + 1 cheat, one auto job of %d shards\n",
              trials, honest, job_shards);
  std::printf("%-34s %8s %5s %5s %5s %5s %8s %10s\n", "cheat", "caught", "p50", "p90", "p99",
              "max", "<=20", "forged kept");
  for (const Cheat& c : cheats) {
    CheatStats s = Trials(tmpdir, honest, trials, job_shards, c.forges);
    int within = 0;
    for (int n : s.before_quarantine) within += n <= 20;
    std::printf("%-34s %7.1f%% %5d %5d %5d %5d %7.1f%% %10d\n", c.name,
                100.0 * double(s.before_quarantine.size()) / trials,
                Pct(s.before_quarantine, 0.5), Pct(s.before_quarantine, 0.9),
                Pct(s.before_quarantine, 0.99), Pct(s.before_quarantine, 1.0),
                100.0 * within / trials, s.forged_kept);
  }
  std::printf("(p50..max: results the cheat returned from its first forgery to its quarantine, "
              "over the trials that quarantined it; <=20: share of all trials quarantined within "
              "20 such results; "
              "forged kept: trials whose job ended with a forged result accepted)\n");
  return 0;
}
