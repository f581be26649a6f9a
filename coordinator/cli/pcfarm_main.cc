// pcfarm: the command line for people who submit work and for the admin.
// Every command talks to the coordinator named in the profile (--profile or
// $PCFARM_PROFILE) with a timeout, and fails with one line and a non-zero
// exit when something is wrong.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "base/peer_text.h"
#include "coordinator/cli/cli_common.h"
#include "coordinator/cli/client.h"
#include "coordinator/cli/farm_commands.h"
#include "coordinator/cli/duration.h"
#include "coordinator/cli/local_commands.h"
#include "coordinator/client_profile.h"
#include "proto/wire.h"

namespace pcfarm {
namespace {

using nlohmann::json;

void PrintJobLine(const wire::JobInfo& j) {
  std::printf("%-6llu %-8s %-10s %5u/%-5u %4u %4u  %-19s %s\n",
              (unsigned long long)j.job_id(), j.kind().c_str(),
              j.state().c_str(), j.shards_accepted(), j.shards_total(),
              j.priority(), j.redundancy(), FormatTime(j.created_ms()).c_str(),
              Safe(j.reason()).c_str());
}

int CmdTokenCreate(const Globals& g, uint32_t uses, const std::string& ttl) {
  auto ttl_ms = ParseDurationMs(ttl);
  if (!ttl_ms.ok()) return Fail("--ttl: " + ttl_ms.status().message());
  if (uses == 0) return Fail("--uses must be at least 1");
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_token_create()->set_uses(uses);
  req.mutable_token_create()->set_ttl_ms(*ttl_ms);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  const auto& t = reply->token_create();
  if (g.json) {
    std::cout << json{{"token", t.token()},
                      {"uses", t.uses()},
                      {"expires_ms", t.expires_ms()}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("enrollment token: %u use(s), expires %s\n", t.uses(),
              FormatTime(t.expires_ms()).c_str());
  std::printf("%s\n", t.token().c_str());
  return 0;
}

int CmdSubmitBench(const Globals& g, uint32_t shards, uint32_t size,
                   uint32_t redundancy, uint32_t priority, uint32_t reps,
                   const std::string& verify) {
  if (shards == 0 || shards > 1'000'000) return Fail("--shards must be 1..1000000");
  if (size < 16 || size > 4096) return Fail("--size must be 16..4096");
  if (redundancy == 0 || redundancy > 16) return Fail("--redundancy must be 1..16");
  if (Status v = CheckVerifyFlag(verify, redundancy); !v.ok()) return Fail(v);
  if (reps == 0 || reps > 100) return Fail("--reps must be 1..100");
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  auto* s = req.mutable_submit();
  s->set_kind("bench");
  s->set_priority(priority);
  s->set_redundancy(redundancy);
  s->set_verify(verify);
  s->set_params(json{{"size", size}, {"reps", reps}}.dump());
  std::random_device rd;
  uint64_t salt = (uint64_t(rd()) << 32) | rd();
  for (uint32_t i = 0; i < shards; ++i) {
    // Each shard multiplies different matrices; the salt keeps two jobs apart.
    uint64_t seed = (salt ^ (uint64_t(i) * 0x9E3779B97F4A7C15ull)) >> 1;
    s->add_shard_params(json{{"n", size}, {"seed", seed}, {"reps", reps}}.dump());
  }
  auto submitted = SubmitJob(client->get(), req);
  if (!submitted.ok()) return Fail(submitted.status());
  uint64_t id = *submitted;
  if (g.json) {
    std::cout << json{{"job_id", id}}.dump() << "\n";
    return 0;
  }
  std::printf("submitted bench job: %u shard(s) of %ux%u, redundancy %u\n",
              shards, size, size, redundancy);
  std::printf("%llu\n", (unsigned long long)id);
  return 0;
}

int CmdJobs(const Globals& g) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_list_jobs();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  if (g.json) {
    json arr = json::array();
    for (const auto& j : reply->list_jobs().jobs()) arr.push_back(JobJson(j));
    std::cout << arr.dump() << "\n";
    return 0;
  }
  std::printf("%-6s %-8s %-10s %11s %4s %4s  %-19s %s\n", "JOB", "KIND",
              "STATE", "SHARDS", "PRIO", "RED", "CREATED", "REASON");
  for (const auto& j : reply->list_jobs().jobs()) PrintJobLine(j);
  return 0;
}

int CmdStatus(const Globals& g, uint64_t job) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  auto info = FetchJob(client->get(), job);
  if (!info.ok()) return Fail(info.status());
  if (g.json) {
    json out = JobJson(*info);
    if (info->kind() == "finetune") {
      // Every step's (sync) or round's (diloco) row, as trainer_log.jsonl
      // has it: loss, tokens, bytes_up, bytes_down, seconds...
      wire::ClientRequest req;
      req.mutable_fetch()->set_job_id(job);
      req.mutable_fetch()->set_partial(true);
      auto reply = (*client)->Call(req);
      if (!reply.ok()) return Fail(reply.status().WithContext("the job's rounds"));
      json data = json::parse(reply->fetch().data(), nullptr, false);
      out["rounds"] = data.is_object() && data.contains("trainer_log") &&
                              data["trainer_log"].is_array()
                          ? data["trainer_log"]
                          : json::array();
    }
    std::cout << out.dump() << "\n";
  } else {
    PrintJobDetails(*info);
  }
  return 0;
}

int CmdCancel(const Globals& g, uint64_t job) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_cancel_job()->set_job_id(job);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  const auto& j = reply->cancel_job().job();
  if (g.json) {
    std::cout << JobJson(j).dump() << "\n";
  } else {
    std::printf("job %llu: %s\n", (unsigned long long)j.job_id(),
                j.state().c_str());
  }
  return 0;
}

// An outdated worker connects but speaks another protocol version: it gets
// no work until it is upgraded.
const char* WorkerStateName(const wire::WorkerInfo& w) {
  return w.banned()      ? "quarantined"
         : w.outdated()  ? "outdated"
         : w.paused()    ? "paused"
         : w.connected() ? "connected"
                         : "offline";
}

int CmdWorkers(const Globals& g) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_list_workers();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  if (g.json) {
    json arr = json::array();
    for (const auto& w : reply->list_workers().workers()) {
      arr.push_back(WorkerJson(w));
    }
    std::cout << arr.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::printf("%-6s %-16s %-11s %6s %7s %6s %7s %9s %8s  %s\n", "ID", "NAME", "STATE",
              "TRUST", "AGREED", "CHECKS", "STRIKES", "GFLOP/s", "RUNNING", "LAST SEEN");
  for (const auto& w : reply->list_workers().workers()) {
    std::printf("%-6llu %-16s %-11s %6.2f %7llu %6llu %7u %9.1f %8u  %s\n",
                (unsigned long long)w.worker_id(), Safe(w.name()).c_str(),
                WorkerStateName(w), w.trust(), (unsigned long long)w.agreed(),
                (unsigned long long)w.checks(), w.strikes(), w.gflops(), w.running(),
                FormatTime(w.last_seen_ms()).c_str());
    if (w.paused()) std::printf("       ^ paused: %s\n", Safe(w.paused_reason()).c_str());
    if (w.outdated()) {
      std::printf("       ^ %s\n",
                  VersionMismatchText("pcfarm-worker", w.protocol_version(),
                                      kProtocolVersion, PcfarmRelease()).c_str());
    }
  }
  return 0;
}

int CmdWorkerBan(const Globals& g, uint64_t worker_id, bool unban,
                 const std::string& reason) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_worker_ban()->set_worker_id(worker_id);
  req.mutable_worker_ban()->set_unban(unban);
  req.mutable_worker_ban()->set_reason(reason);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  const wire::WorkerInfo& w = reply->worker_ban().worker();
  if (g.json) {
    std::cout << WorkerJson(w).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::printf("worker %llu '%s' is %s\n", (unsigned long long)w.worker_id(),
              Safe(w.name()).c_str(), WorkerStateName(w));
  return 0;
}

int CmdStats(const Globals& g) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_stats();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  std::map<std::string, uint64_t> sorted(reply->stats().counters().begin(),
                                         reply->stats().counters().end());
  if (g.json) {
    std::cout << json(sorted).dump() << "\n";
    return 0;
  }
  for (const auto& [name, value] : sorted) {
    std::printf("%-22s %llu\n", name.c_str(), (unsigned long long)value);
  }
  return 0;
}

// Polls until the job ends. A coordinator that stops answering (a restart)
// is waited for (PatientCaller); only --max-wait ends the wait early.
int CmdWait(const Globals& g, uint64_t job, double poll_s, double max_wait_s) {
  auto client = OpenClient(g);
  if (!client.ok()) return Fail(client.status());
  bool tty = isatty(STDOUT_FILENO) && !g.json;
  bool line_open = false;  // a progress line without its newline
  auto end_line = [&] {
    if (line_open) std::printf("\n");
    std::fflush(stdout);
    line_open = false;
  };
  PatientCaller caller(client->get(),
                       "still waiting for job " + std::to_string(job));
  caller.set_before_notice(end_line);
  auto start = std::chrono::steady_clock::now();
  auto give_up_at =
      max_wait_s > 0
          ? start +
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::duration<double>(max_wait_s))
          : std::chrono::steady_clock::time_point::max();
  std::string max_wait =
      "--max-wait " + std::to_string(int64_t(max_wait_s)) + " s";
  std::string last_line;
  while (true) {
    wire::ClientRequest req;
    req.mutable_job_status()->set_job_id(job);
    auto reply = caller.Call(req, give_up_at);
    if (!reply.ok()) {
      end_line();
      if (Retryable(reply.status())) {
        return Fail("job " + std::to_string(job) + ": gave up waiting after " +
                    max_wait + ": " + reply.status().message());
      }
      return Fail(reply.status());
    }
    const auto& j = reply->job_status().job();
    double frac = j.shards_total() ? double(j.shards_accepted()) / j.shards_total() : 0;
    if (j.kind() == "finetune") {
      // Its shards come step by step: the steps tell how far it is.
      FinetuneProgress p = FinetuneProgressOf(j);
      frac = p.steps > 0 ? double(p.step) / double(p.steps) : 0;
    }
    if (tty) {
      int width = 30, filled = static_cast<int>(frac * width + 0.5);
      std::string bar(filled, '#');
      bar.append(width - filled, '-');
      std::string extra;
      if (j.kind() == "infer") {
        InferProgress p = InferProgressOf(j);
        char buf[96];
        std::snprintf(buf, sizeof buf, " %lld/%lld prompts %.1f tok/s",
                      (long long)p.prompts_done, (long long)p.prompts_total, p.tokens_per_s);
        extra = buf;
      } else if (j.kind() == "finetune") {
        FinetuneProgress p = FinetuneProgressOf(j);
        char buf[96];
        std::snprintf(buf, sizeof buf, " step %lld/%lld loss %.4f", (long long)p.step,
                      (long long)p.steps, p.loss);
        extra = buf;
      }
      std::printf("\rjob %llu [%s] %3.0f%% %u/%u shards%s %-10s",
                  (unsigned long long)job, bar.c_str(), frac * 100,
                  j.shards_accepted(), j.shards_total(), extra.c_str(), j.state().c_str());
      std::fflush(stdout);
      line_open = true;
    } else if (!g.json) {
      char line[160];
      if (j.kind() == "finetune") {
        FinetuneProgress p = FinetuneProgressOf(j);
        std::snprintf(line, sizeof line, "job %llu: %s, step %lld/%lld, loss %.4f",
                      (unsigned long long)job, j.state().c_str(), (long long)p.step,
                      (long long)p.steps, p.loss);
      } else {
        std::snprintf(line, sizeof line, "job %llu: %s, %u/%u shards accepted",
                      (unsigned long long)job, j.state().c_str(), j.shards_accepted(),
                      j.shards_total());
      }
      if (line != last_line) {
        std::printf("%s\n", line);
        std::fflush(stdout);
        last_line = line;
      }
    }
    if (Terminal(j)) {
      end_line();
      if (g.json) {
        std::cout << JobJson(j).dump() << "\n";
      } else {
        PrintJobDetails(j);
      }
      return j.state() == "succeeded" ? 0 : 2;
    }
    double waited = std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start).count();
    if (max_wait_s > 0 && waited > max_wait_s) {
      end_line();
      return Fail("job " + std::to_string(job) + " still " + j.state() +
                  " after " + max_wait);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(int(poll_s * 1000)));
  }
}

int Main(int argc, char** argv) {
  CLI::App app{"pcfarm: submit work to a pcfarm coordinator and watch it"};
  app.require_subcommand(1);
  Globals g;
  app.add_option("--profile", g.profile_path,
                 "client profile file (default: $PCFARM_PROFILE)");
  app.add_option("--timeout", g.timeout_s,
                 "seconds to wait for each answer from the coordinator")
      ->capture_default_str();

  auto add_json = [&](CLI::App* cmd) {
    cmd->add_flag("--json", g.json, "print JSON for scripts");
  };

  auto* token = app.add_subcommand("token", "enrollment tokens for workers");
  token->require_subcommand(1);
  auto* token_create = token->add_subcommand("create", "make a new token");
  uint32_t uses = 1;
  std::string ttl = "24h";
  token_create->add_option("--uses", uses, "how many workers may enroll with it")
      ->capture_default_str();
  token_create->add_option("--ttl", ttl, "how long it is valid (e.g. 30m, 24h, 7d)")
      ->capture_default_str();
  add_json(token_create);

  auto* submit = app.add_subcommand("submit", "submit a job");
  submit->require_subcommand(1);
  auto* bench = submit->add_subcommand("bench", "a device-speed probe job");
  uint32_t shards = 0, size = 256, redundancy = 1, priority = 0, reps = 1;
  bench->add_option("--shards", shards, "number of shards")->required();
  bench->add_option("--size", size, "matrix size n (n x n f32 multiply)")
      ->capture_default_str();
  bench->add_option("--redundancy", redundancy,
                    "run each shard on this many different workers")
      ->capture_default_str();
  std::string verify;
  bench->add_option("--verify", verify,
                    "how results are checked: redundant (the default for bench: "
                    "--redundancy copies), auto, spot or none");
  bench->add_option("--priority", priority, "higher runs first")
      ->capture_default_str();
  bench->add_option("--reps", reps, "timed repetitions per shard")
      ->capture_default_str();
  add_json(bench);

  auto* jobs = app.add_subcommand("jobs", "list jobs");
  add_json(jobs);
  uint64_t job_id = 0;
  auto* status = app.add_subcommand("status", "show one job");
  status->add_option("JOB", job_id, "job id")->required();
  add_json(status);
  auto* workers = app.add_subcommand(
      "workers", "list workers; quarantine or unban one (admins)");
  add_json(workers);
  uint64_t worker_id = 0;
  std::string ban_reason;
  auto* quarantine = workers->add_subcommand(
      "quarantine", "stop giving a worker work; its unchecked results in running jobs run again");
  quarantine->add_option("ID", worker_id, "worker id (pcfarm workers)")->required();
  quarantine->add_option("--reason", ban_reason, "why (kept in the events)");
  add_json(quarantine);
  auto* unban = workers->add_subcommand(
      "unban", "lift a quarantine: the worker gets work again, checked as a new one");
  unban->add_option("ID", worker_id, "worker id (pcfarm workers)")->required();
  unban->add_option("--reason", ban_reason, "why (kept in the events)");
  add_json(unban);
  auto* wait = app.add_subcommand("wait",
                                  "wait for a job to end (exit 0 iff it "
                                  "succeeded); rides out coordinator restarts");
  double poll_s = 0.5, max_wait_s = 0;
  wait->add_option("JOB", job_id, "job id")->required();
  wait->add_option("--poll", poll_s, "seconds between polls")->capture_default_str();
  wait->add_option(
      "--max-wait", max_wait_s,
      "give up after this many seconds (0: never), also while the coordinator "
      "does not answer");
  add_json(wait);
  auto* cancel = app.add_subcommand("cancel", "cancel a job");
  cancel->add_option("JOB", job_id, "job id")->required();
  add_json(cancel);

  auto* stats = app.add_subcommand("stats", "the coordinator's counters");
  add_json(stats);

  LocalCommands local(&app);
  FarmCommands farm(&app, submit, &g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "pcfarm: %s\n", e.what());
    return 64;
  }
  if (local.selected()) return local.Run();
  if (farm.selected()) return farm.Run();
  if (*token_create) return CmdTokenCreate(g, uses, ttl);
  if (*bench) return CmdSubmitBench(g, shards, size, redundancy, priority, reps, verify);
  if (*jobs) return CmdJobs(g);
  if (*status) return CmdStatus(g, job_id);
  if (*quarantine) return CmdWorkerBan(g, worker_id, false, ban_reason);
  if (*unban) return CmdWorkerBan(g, worker_id, true, ban_reason);
  if (*workers) return CmdWorkers(g);
  if (*wait) {
    if (poll_s < 0.05) return Fail("--poll must be at least 0.05");
    return CmdWait(g, job_id, poll_s, max_wait_s);
  }
  if (*cancel) return CmdCancel(g, job_id);
  if (*stats) return CmdStats(g);
  return Fail("no command given; see pcfarm --help");
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Main(argc, argv); }
