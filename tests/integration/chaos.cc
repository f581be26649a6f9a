#include "tests/integration/chaos.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "base/clock.h"
#include "coordinator/store.h"
#include "tests/integration/farm_helpers.h"

namespace pcfarm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

int64_t Mono() { return SystemClock::Get()->MonotonicMs(); }

void SleepMs(int ms) {
  if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

bool Terminal(const std::string& state) {
  return state == "succeeded" || state == "failed" || state == "cancelled";
}

// The fetched infer output without each line's "worker" (who ran a shard
// is not part of the answer: a kill moves shards between workers).
// Appends to `problems` when a line is not JSON.
std::string WithoutWorkers(const std::string& text, std::string* problems) {
  std::string out;
  for (const auto& line : Lines(text)) {
    json row = json::parse(line, nullptr, false);
    if (!row.is_object()) {
      *problems += "output line is not a JSON object: " + line.substr(0, 80) + "; ";
      continue;
    }
    row.erase("worker");
    out += row.dump() + "\n";
  }
  return out;
}

const char* const kAdapterFile = "/adapter_model.safetensors";
const char* const kTrainerLog = "/trainer_log.jsonl";
const int kPrompts = 16;  // of the infer job

}  // namespace

const char* ChaosJobName(ChaosJob job) {
  switch (job) {
    case ChaosJob::kInfer:
      return "infer";
    case ChaosJob::kFinetuneSync:
      return "finetune";
    case ChaosJob::kFinetuneDiloco:
      return "diloco";
  }
  return "?";
}

Result<ChaosJob> ParseChaosJob(std::string_view name) {
  for (ChaosJob j : {ChaosJob::kInfer, ChaosJob::kFinetuneSync, ChaosJob::kFinetuneDiloco}) {
    if (name == ChaosJobName(j)) return j;
  }
  return InvalidArgument("unknown job kind '" + std::string(name) +
                         "' (infer, finetune or diloco)");
}

std::string ChaosKill::Describe() const {
  std::string who;
  if (coordinator) who = "coordinator";
  if (worker >= 0) who += std::string(who.empty() ? "" : "+") + "w" + std::to_string(worker);
  char delay[16];
  std::snprintf(delay, sizeof(delay), "%.3f", delay_permille / 1000.0);
  std::string s = who + " @" + std::to_string(at_accepted) + "+" + delay + " down " +
                  std::to_string(down_ms) + "ms";
  if (done) {
    char when[64];
    std::snprintf(when, sizeof(when), " (at %.2f s, %lld accepted)", at_ms / 1000.0,
                  static_cast<long long>(accepted_then));
    s += when;
  } else {
    s += " (not done: job over)";
  }
  return s;
}

int ChaosTrial::coordinator_kills() const {
  int n = 0;
  for (const auto& k : kills) n += k.done && k.coordinator;
  return n;
}

int ChaosTrial::worker_kills() const {
  int n = 0;
  for (const auto& k : kills) n += k.done && k.worker >= 0;
  return n;
}

std::string ChaosTrial::Describe() const {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "seed " << seed << " " << ChaosJobName(job) << " job " << job_id << ": "
    << (ok() ? "ok" : "FAILED") << "; kills [";
  for (size_t i = 0; i < kills.size(); ++i) s << (i ? ", " : "") << kills[i].Describe();
  s << "]; " << end_state << " in " << seconds << " s (undisturbed " << reference_seconds
    << " s); shards " << shards << ", lost " << results_lost << ", accepted twice "
    << accepted_twice << ", consistent " << (store_consistent ? "yes" : "no")
    << ", output identical " << (output_identical ? "yes" : "no");
  if (job != ChaosJob::kInfer) s << ", log complete " << (log_complete ? "yes" : "no");
  if (!problems.empty()) s << "; problems: " << problems;
  return s.str();
}

// One kind of job: its cluster, its inputs and its undisturbed reference.
struct ChaosDriver::Setup {
  ChaosJob job = ChaosJob::kInfer;
  std::string kind;               // the submit command: infer or finetune
  std::vector<std::string> args;  // submit's arguments
  int64_t rounds = 0;             // finetune: trainer_log lines expected
  std::unique_ptr<MiniCluster> cluster;
  // The reference: what fetch gave (infer: without workers; finetune: the
  // adapter's bytes), its shard count and its wall time.
  std::string output;
  int64_t shards = 0;
  double seconds = 0;
};

ChaosDriver::ChaosDriver(std::string work_dir, ChaosOptions options)
    : work_dir_(std::move(work_dir)), options_(std::move(options)) {}

ChaosDriver::~ChaosDriver() = default;

std::vector<ChaosKill> ChaosDriver::Schedule(uint64_t seed, int64_t shards,
                                             const ChaosOptions& o) {
  // Our own draws from the generator (not <random>'s distributions, whose
  // results differ between standard libraries): a seed is a schedule.
  std::mt19937_64 rng(seed);
  auto pick = [&](int64_t n) { return n <= 1 ? int64_t{0} : int64_t(rng() % uint64_t(n)); };
  const int n = 1 + int(pick(std::max(o.max_kills, 1)));
  std::vector<ChaosKill> kills(static_cast<size_t>(n));
  for (auto& k : kills) {
    const int64_t who = pick(10);  // 4 in 10 the coordinator, 1 in 10 both
    k.coordinator = who < 4 || who == 9;
    if (who >= 4) k.worker = int(pick(o.workers));
    k.at_accepted = pick(shards);
    k.delay_permille = int(pick(1000));
    k.down_ms = int(pick(o.down_max_ms + 1));
  }
  std::stable_sort(kills.begin(), kills.end(), [](const ChaosKill& a, const ChaosKill& b) {
    return a.at_accepted < b.at_accepted;
  });
  return kills;
}

Status ChaosDriver::StartCluster(Setup* s) {
  MiniClusterOptions o;
  o.lease_ms = options_.lease_ms;
  o.worker_slots = options_.worker_slots;
  o.log_level = options_.log_level;
  s->cluster = std::make_unique<MiniCluster>(o);
  MiniCluster* c = s->cluster.get();
  PCFARM_RETURN_IF_ERROR(c->Init());
  PCFARM_RETURN_IF_ERROR(c->StartCoordinator(60'000));
  for (int i = 0; i < options_.workers; ++i) {
    PCFARM_RETURN_IF_ERROR(c->AddWorker("w" + std::to_string(i)).status());
  }
  return c->WaitForConnectedWorkers(options_.workers, 60'000);
}

Result<ChaosDriver::Setup*> ChaosDriver::SetupFor(ChaosJob job) {
  auto it = setups_.find(job);
  if (it != setups_.end()) {
    if (!it->second->cluster) PCFARM_RETURN_IF_ERROR(StartCluster(it->second.get()));
    return it->second.get();
  }
  auto s = std::make_unique<Setup>();
  s->job = job;
  PCFARM_RETURN_IF_ERROR(StartCluster(s.get()));
  MiniCluster* c = s->cluster.get();
  std::error_code ec;
  fs::create_directories(work_dir_, ec);
  if (ec) return IoError(work_dir_ + ": " + ec.message());
  // The inputs: the same files for every trial (and every cluster).
  // Infer runs the "small" preset (the tiny one answers a shard in a few
  // ms: a kill would rarely find the job running); finetune the tiny one.
  const std::string model = work_dir_ + "/model", small = work_dir_ + "/model-small";
  if (!fs::exists(model + "/config.json")) PCFARM_RETURN_IF_ERROR(MakeFarmModel(c, model));
  if (job == ChaosJob::kInfer && !fs::exists(small + "/config.json")) {
    PCFARM_RETURN_IF_ERROR(MakeFarmModel(c, small, "small"));
  }
  const std::string prompts = work_dir_ + "/prompts.jsonl", data = work_dir_ + "/train.jsonl";
  PCFARM_RETURN_IF_ERROR(WriteAll(prompts, PromptsFile(kPrompts)));
  PCFARM_RETURN_IF_ERROR(WriteAll(data, TrainData()));
  switch (job) {
    case ChaosJob::kInfer:
      s->kind = "infer";
      s->args = {"--model", small, "--prompts", prompts, "--max-tokens", "24",
                 "--prompts-per-shard", "2"};
      break;
    case ChaosJob::kFinetuneSync:
      s->kind = "finetune";
      s->args = TrainArgs(model, data, 8);
      s->args.insert(s->args.end(), {"--micro-batch", "2"});
      s->rounds = 8;
      break;
    case ChaosJob::kFinetuneDiloco:
      s->kind = "finetune";
      s->args = TrainArgs(model, data, 8);
      s->args.insert(s->args.end(),
                     {"--micro-batch", "2", "--mode", "diloco", "--local-steps", "2"});
      s->rounds = 4;
      break;
  }
  // The undisturbed runs (ChaosOptions::reference_runs): all must give the
  // same output, or comparing a disturbed run with them means nothing.
  const std::string name = ChaosJobName(job);
  for (int run = 0; run < std::max(options_.reference_runs, 1); ++run) {
    const int64_t t0 = Mono();
    PCFARM_ASSIGN_OR_RETURN(int64_t id, SubmitFarmJob(c, s->kind, s->args));
    PCFARM_ASSIGN_OR_RETURN(std::string end, c->WaitForJobEnd(id, options_.job_timeout_ms));
    s->seconds = double(Mono() - t0) / 1000.0;
    if (end != "succeeded") {
      return Internal("the undisturbed " + name + " job ended " + end);
    }
    const std::string out = work_dir_ + "/reference-" + name + "-" + std::to_string(run);
    fs::remove_all(out, ec);
    PCFARM_RETURN_IF_ERROR(FetchFarmJob(c, id, out));
    std::string problems, output;
    if (job == ChaosJob::kInfer) {
      output = WithoutWorkers(ReadAll(out), &problems);
    } else {
      output = ReadAll(out + kAdapterFile);
      const size_t lines = Lines(ReadAll(out + kTrainerLog)).size();
      if (lines != size_t(s->rounds)) {
        problems += "trainer_log has " + std::to_string(lines) + " lines";
      }
    }
    if (output.empty()) problems += "empty output";
    if (!problems.empty()) return Internal("the undisturbed " + name + " job: " + problems);
    if (run > 0 && output != s->output) {
      return Internal("two undisturbed " + name + " jobs gave different outputs");
    }
    s->output = std::move(output);
    PCFARM_ASSIGN_OR_RETURN(
        s->shards, c->db().QueryInt("SELECT COUNT(*) FROM shards WHERE job_id=" +
                                    std::to_string(id)));
  }
  Setup* raw = s.get();
  setups_[job] = std::move(s);
  return raw;
}

Result<ChaosTrial> ChaosDriver::RunTrial(uint64_t seed, ChaosJob job) {
  PCFARM_ASSIGN_OR_RETURN(Setup * s, SetupFor(job));
  MiniCluster* c = s->cluster.get();
  ChaosTrial t;
  t.seed = seed;
  t.job = job;
  t.shards = s->shards;
  t.reference_seconds = s->seconds;
  t.kills = Schedule(seed, s->shards, options_);
  auto problem = [&](const std::string& p) { t.problems += (t.problems.empty() ? "" : "; ") + p; };

  const int64_t t0 = Mono();
  PCFARM_ASSIGN_OR_RETURN(t.job_id, SubmitFarmJob(c, s->kind, s->args));
  const std::string id = std::to_string(t.job_id);
  const std::string progress = "SELECT state, shards_accepted FROM jobs WHERE id=" + id;
  const int64_t deadline = t0 + options_.job_timeout_ms;
  bool cluster_broken = false;

  // Plays the schedule. Stops at the first kill whose moment comes after
  // the job's end (the later ones would too).
  for (auto& k : t.kills) {
    std::string state;
    int64_t accepted = 0;
    while (Mono() < deadline) {
      auto rows = c->db().Query(progress);
      if (rows.ok() && !rows->empty()) {
        state = (*rows)[0][0];
        accepted = std::stoll((*rows)[0][1]);
        if (Terminal(state) || accepted >= k.at_accepted) break;
      }
      SleepMs(10);
    }
    if (Terminal(state)) break;
    if (Mono() >= deadline) {
      problem("stalled: " + std::to_string(accepted) + " shards accepted after " +
              std::to_string(options_.job_timeout_ms) + " ms");
      break;
    }
    k.delay_ms = int(s->seconds * 1000.0 / double(std::max<int64_t>(s->shards, 1)) *
                     k.delay_permille / 1000.0);
    SleepMs(k.delay_ms);
    // Freeze the workers while the state is read and the kill sent, so that
    // the job cannot end in between.
    std::vector<int> paused;
    for (int w = 0; w < c->worker_count(); ++w) {
      if (c->worker_running(w) && c->PauseWorker(w).ok()) paused.push_back(w);
    }
    auto rows = c->db().Query(progress);
    if (rows.ok() && !rows->empty()) {
      state = (*rows)[0][0];
      accepted = std::stoll((*rows)[0][1]);
    }
    if (!Terminal(state)) {
      k.done = true;
      k.accepted_then = accepted;
      k.at_ms = Mono() - t0;
      if (k.coordinator) {
        Status st = c->KillCoordinator();
        if (!st.ok()) problem("kill -9 of the coordinator: " + st.ToString());
      }
      if (k.worker >= 0) {
        Status st = c->KillWorker(k.worker);
        if (!st.ok()) problem("kill -9 of w" + std::to_string(k.worker) + ": " + st.ToString());
      }
    }
    for (int w : paused) {
      if (w != k.worker || !k.done) c->ResumeWorker(w).IgnoreError();
    }
    if (!k.done) break;
    SleepMs(k.down_ms);
    if (k.coordinator) {
      Status st = c->StartCoordinator(60'000);
      if (!st.ok()) {
        problem("the coordinator did not restart: " + st.ToString());
        cluster_broken = true;
        break;
      }
    }
    if (k.worker >= 0) {
      Status st = c->StartWorker(k.worker);
      if (!st.ok()) problem("w" + std::to_string(k.worker) + " did not restart: " + st.ToString());
    }
  }

  if (!cluster_broken) {
    auto end = c->WaitForJobEnd(t.job_id, int(std::max<int64_t>(deadline - Mono(), 1000)));
    t.seconds = double(Mono() - t0) / 1000.0;
    if (end.ok()) {
      t.end_state = *end;
    } else {
      problem("stalled: " + end.status().ToString());
      c->Cli({"cancel", id}, 10, 30'000);
    }
  }
  t.succeeded = t.end_state == "succeeded";
  if (!t.end_state.empty() && !t.succeeded) {
    auto reason = c->db().Query("SELECT reason FROM jobs WHERE id=" + id);
    if (reason.ok() && !reason->empty()) problem("job " + t.end_state + ": " + (*reason)[0][0]);
  }
  // A daemon that died on its own is a finding too.
  if (!cluster_broken && !c->coordinator_running()) {
    problem("the coordinator exited by itself");
    cluster_broken = true;
  }
  for (int w = 0; w < c->worker_count(); ++w) {
    if (!c->worker_running(w)) {
      problem(c->worker_name(w) + " exited by itself (code " +
              std::to_string(c->worker_exit_code(w)) + ")");
      c->StartWorker(w).IgnoreError();
    }
  }
  if (cluster_broken) {
    // Read what the database says all the same; the next trial of this
    // kind gets a new cluster (the kept reference still holds).
    if (!c->coordinator_running()) c->StartCoordinator(60'000).IgnoreError();
  }

  // ---- invariants, from the database ----
  auto count = [&](const std::string& sql) -> int64_t {
    auto v = c->db().QueryInt(sql);
    if (!v.ok()) {
      problem("query failed: " + v.status().ToString());
      return -1;
    }
    return *v;
  };
  // Accepted: exactly one agreeing result of its own set as the accepted one.
  const int64_t total = count("SELECT COUNT(*) FROM shards WHERE job_id=" + id);
  const int64_t accepted_ok = count(
      "SELECT COUNT(*) FROM shards s JOIN results r ON r.id=s.accepted_result_id "
      "WHERE s.job_id=" + id + " AND s.state='accepted' AND r.shard_id=s.id AND "
      "r.outcome='agreed'");
  t.results_lost = std::max(total, s->shards) - accepted_ok;
  if (total != s->shards) {
    problem("the job has " + std::to_string(total) + " shards, the undisturbed one " +
            std::to_string(s->shards));
  }
  if (count("SELECT shards_accepted FROM jobs WHERE id=" + id) != accepted_ok) {
    problem("jobs.shards_accepted differs from the accepted shards");
  }
  // Twice: more agreeing results than the shard's copies, or the job's
  // success recorded more than once.
  t.accepted_twice = count(
      "SELECT COUNT(*) FROM shards s JOIN jobs j ON j.id=s.job_id WHERE s.job_id=" + id +
      " AND (SELECT COUNT(*) FROM results r WHERE r.shard_id=s.id AND "
      "r.outcome='agreed') > MAX(j.redundancy, s.copies)");
  const int64_t successes =
      count("SELECT COUNT(*) FROM events WHERE kind='job_succeeded' AND job_id=" + id);
  if (successes > 1) {
    problem("job_succeeded recorded " + std::to_string(successes) + " times");
    t.accepted_twice += successes - 1;
  }
  if (s->rounds > 0) {
    const int64_t rounds = count("SELECT COUNT(*) FROM job_rounds WHERE job_id=" + id);
    if (rounds != s->rounds) {
      problem(std::to_string(rounds) + " rounds recorded, " + std::to_string(s->rounds) +
              " expected");
    }
  }
  {
    auto store = Store::OpenReadOnly(c->coordinator_dir() + "/coordinator.db",
                                     SystemClock::Get());
    Status st = store.ok() ? (*store)->CheckConsistency() : store.status();
    t.store_consistent = st.ok();
    if (!st.ok()) problem("store consistency: " + st.ToString());
  }

  // ---- the output ----
  if (t.succeeded) {
    const std::string out = c->dir() + "/chaos-" + id;
    Status st = FetchFarmJob(c, t.job_id, out);
    if (!st.ok()) {
      problem("fetch: " + st.ToString());
    } else if (job == ChaosJob::kInfer) {
      std::string bad;
      const std::string output = WithoutWorkers(ReadAll(out), &bad);
      if (!bad.empty()) problem(bad);
      t.output_identical = output == s->output;
      // Each prompt's line once: the output's own count of lost and twice.
      std::map<int64_t, int> seen;
      for (const auto& line : Lines(output)) {
        json row = json::parse(line, nullptr, false);
        if (row.is_object() && row.contains("index") && row["index"].is_number_integer()) {
          ++seen[row["index"].get<int64_t>()];
        }
      }
      for (int64_t i = 0; i < kPrompts; ++i) {
        if (seen[i] == 0) problem("prompt " + std::to_string(i) + " missing from the output");
        if (seen[i] > 1) {
          problem("prompt " + std::to_string(i) + " " + std::to_string(seen[i]) + " times");
        }
      }
    } else {
      t.output_identical = ReadAll(out + kAdapterFile) == s->output;
      const size_t lines = Lines(ReadAll(out + kTrainerLog)).size();
      t.log_complete = lines == size_t(s->rounds);
      if (!t.log_complete) {
        problem("trainer_log has " + std::to_string(lines) + " lines, " +
                std::to_string(s->rounds) + " expected");
      }
    }
  }
  if (!t.output_identical && t.succeeded) problem("the output differs from the undisturbed run's");
  t.nothing_lost = t.results_lost == 0;
  t.none_accepted_twice = t.accepted_twice == 0;
  if (!t.ok()) t.logs = c->DumpLogs();
  if (cluster_broken) s->cluster.reset();
  return t;
}

}  // namespace pcfarm
