// status_bench: what a job with many accepted shards costs the coordinator
// when a person asks about it.
//
// Starts `pcfarm-coordinator serve` (a real process, temporary data
// directory, loopback) and joins --workers simulated workers (SimWorker,
// CurveZMQ DEALERs, all driven by this thread with zmq::poll). It runs a
// 1-shard bench job, then one bench job of --shards shards (n=--size,
// redundancy 1) until it has succeeded, and measures:
//   - the coordinator's VmRSS and VmHWM (/proc/PID/status) before the big
//     job, when it has succeeded, and after the calls below;
//   - the wall time of `pcfarm status JOB --json` and `pcfarm jobs --json`,
//     each a real CLI process, --calls times (median and max), and the
//     coordinator's CPU time during each call.
// Baseline, in the same run and the same coordinator, interleaved call by
// call: `pcfarm status` of the 1-shard job (a status call with nothing to
// summarise).
//
// --big-output: afterwards every worker but one says BYE, a 1-shard bench
// job is submitted, and the remaining worker answers its shard with an
// output of '[' characters as large as a result body may be on the wire
// (WireLimits::envelope_body_bytes, 8 MiB; or --big-output-bytes), signed
// like any result. The table says whether the coordinator accepted it (the
// job's state), then the same memory and call figures for that job.
//
//   status_bench [--shards 10000] [--workers 50] [--calls 20] [--size 16]
//                [--big-output] [--big-output-bytes N] [--tmpdir DIR]
#include <sys/vfs.h>
#include <linux/magic.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "base/rlimit.h"
#include "bench/grid/grid_bench.h"
#include "crypto/hash.h"
#include "proto/wire.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

struct Options {
  int shards = 10000;
  int workers = 50;
  int calls = 20;
  int size = 16;
  bool big_output = false;
  int64_t big_output_bytes = 0;  // 0: the largest a result body may carry
  double cli_timeout_s = 120;
  int job_timeout_s = 900;
  std::string tmpdir;
};

int Fail(const Status& s) {
  std::fprintf(stderr, "status_bench: %s\n", s.ToString().c_str());
  return 1;
}

std::string FileSystemOf(const std::string& dir) {
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) return "unknown file system";
  if (fs.f_type == TMPFS_MAGIC) return "tmpfs (fsync costs nothing)";
  return "disk (ext4 or other; fsync reaches the device)";
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

// ------------------------------------------------------------------ memory

std::string MiB(int64_t kib) { return FormatFixed(kib / 1024.0, 1) + " MiB"; }

std::string Ratio(double ours, double base) {
  if (base <= 0) return "-";
  return FormatFixed(ours / base, ours / base < 10 ? 2 : 1) + "x";
}

// ------------------------------------------------------------------- calls

// Wall times of one CLI command run again and again, and the coordinator's
// CPU time while it ran.
struct CallTimes {
  std::vector<double> wall_s;  // successful calls only
  std::vector<double> coord_cpu_s;
  int failures = 0;
  std::string first_failure;

  double Median() const {
    if (wall_s.empty()) return 0;
    std::vector<double> v = wall_s;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }
  double Max() const {
    return wall_s.empty() ? 0 : *std::max_element(wall_s.begin(), wall_s.end());
  }
  double MeanCpu() const {
    if (coord_cpu_s.empty()) return 0;
    double t = 0;
    for (double c : coord_cpu_s) t += c;
    return t / static_cast<double>(coord_cpu_s.size());
  }
  std::string Ms(double s) const { return FormatFixed(s * 1000.0, 1) + " ms"; }
};

Status TimeCall(MiniCluster* cluster, pid_t pid,
                const std::vector<std::string>& args, double timeout_s,
                CallTimes* t) {
  PCFARM_ASSIGN_OR_RETURN(ProcSample c0, SampleProcess(pid));
  CommandResult r = cluster->Cli(args, timeout_s,
                                 static_cast<int>(timeout_s * 1000) + 10'000);
  PCFARM_ASSIGN_OR_RETURN(ProcSample c1, SampleProcess(pid));
  if (r.exit_code != 0) {
    if (t->failures++ == 0) t->first_failure = r.Describe();
    return Status::Ok();
  }
  t->wall_s.push_back(r.seconds);
  t->coord_cpu_s.push_back(c1.cpu_seconds - c0.cpu_seconds);
  return Status::Ok();
}

// The calls of one scenario, interleaved so that a change in the machine's
// load falls on ours and on the baseline alike.
struct CallRound {
  CallTimes tiny_status;    // baseline: status of the 1-shard job
  CallTimes target_status;  // status of the job under test
  CallTimes jobs;           // jobs --json (every job)
};

Status MeasureCalls(MiniCluster* cluster, pid_t pid, int64_t tiny,
                    int64_t target, const Options& opt,
                    const std::function<Status()>& keep_alive, CallRound* out) {
  for (int i = 0; i < opt.calls; ++i) {
    PCFARM_RETURN_IF_ERROR(TimeCall(cluster, pid,
                                    {"status", std::to_string(tiny), "--json"},
                                    opt.cli_timeout_s, &out->tiny_status));
    PCFARM_RETURN_IF_ERROR(keep_alive());
    PCFARM_RETURN_IF_ERROR(
        TimeCall(cluster, pid, {"status", std::to_string(target), "--json"},
                 opt.cli_timeout_s, &out->target_status));
    PCFARM_RETURN_IF_ERROR(keep_alive());
    PCFARM_RETURN_IF_ERROR(TimeCall(cluster, pid, {"jobs", "--json"},
                                    opt.cli_timeout_s, &out->jobs));
    PCFARM_RETURN_IF_ERROR(keep_alive());
  }
  return Status::Ok();
}

void AddCallRows(const std::string& what, const CallRound& r,
                 std::vector<BenchRow>* rows) {
  const CallTimes& b = r.tiny_status;
  const CallTimes& s = r.target_status;
  const CallTimes& j = r.jobs;
  rows->push_back({"`pcfarm status` " + what + ", median", s.Ms(s.Median()),
                   "1-shard job: " + b.Ms(b.Median()),
                   Ratio(s.Median(), b.Median()), "-"});
  rows->push_back({"`pcfarm status` " + what + ", max", s.Ms(s.Max()),
                   "1-shard job: " + b.Ms(b.Max()), Ratio(s.Max(), b.Max()),
                   "-"});
  rows->push_back({"coordinator CPU per `status` " + what, s.Ms(s.MeanCpu()),
                   "1-shard job: " + b.Ms(b.MeanCpu()),
                   Ratio(s.MeanCpu(), b.MeanCpu()), "-"});
  rows->push_back({"`pcfarm jobs --json`, median", j.Ms(j.Median()),
                   "status, 1-shard job: " + b.Ms(b.Median()),
                   Ratio(j.Median(), b.Median()), "-"});
  rows->push_back({"`pcfarm jobs --json`, max", j.Ms(j.Max()),
                   "status, 1-shard job: " + b.Ms(b.Max()),
                   Ratio(j.Max(), b.Max()), "-"});
  rows->push_back({"coordinator CPU per `jobs --json`", j.Ms(j.MeanCpu()),
                   "status, 1-shard job: " + b.Ms(b.MeanCpu()),
                   Ratio(j.MeanCpu(), b.MeanCpu()), "-"});
}

std::string CallNote(const std::string& what, const CallRound& r) {
  std::string n =
      what + ": " + std::to_string(r.target_status.wall_s.size()) +
      " status, " + std::to_string(r.jobs.wall_s.size()) + " jobs and " +
      std::to_string(r.tiny_status.wall_s.size()) +
      " baseline calls succeeded (wall time of the whole CLI process)";
  n += "; coordinator CPU is utime+stime from /proc/PID/stat read before and "
       "after each call, in ticks of " +
       FormatFixed(1000.0 / static_cast<double>(::sysconf(_SC_CLK_TCK)), 0) +
       " ms, the mean over the calls";
  for (const CallTimes* t : {&r.target_status, &r.jobs, &r.tiny_status}) {
    if (t->failures > 0) {
      n += "; " + std::to_string(t->failures) +
           " failed, first: " + t->first_failure;
    }
  }
  return n;
}

void AddMemoryRows(const std::string& when, const ProcSample& before,
                   const ProcSample& done, const ProcSample& after,
                   std::vector<BenchRow>* rows) {
  rows->push_back({"coordinator VmRSS, " + when, MiB(done.rss_kib),
                   "before the job: " + MiB(before.rss_kib),
                   Ratio(static_cast<double>(done.rss_kib),
                         static_cast<double>(before.rss_kib)),
                   "-"});
  rows->push_back({"coordinator VmRSS after the calls", MiB(after.rss_kib),
                   "before the job: " + MiB(before.rss_kib),
                   Ratio(static_cast<double>(after.rss_kib),
                         static_cast<double>(before.rss_kib)),
                   "-"});
  rows->push_back({"coordinator VmHWM (peak) after the calls",
                   MiB(after.hwm_kib), "before the job: " + MiB(before.hwm_kib),
                   Ratio(static_cast<double>(after.hwm_kib),
                         static_cast<double>(before.hwm_kib)),
                   "-"});
}

// ------------------------------------------------------------------- jobs

// Pumps the fleet until `job` is in a terminal state (read from the
// database every 200 ms); returns that state.
Result<std::string> RunJob(MiniCluster* cluster, SimFleet* fleet, int64_t job,
                           int timeout_s, bool report) {
  std::string sql = "SELECT state FROM jobs WHERE id=" + std::to_string(job);
  double start = MonotonicSeconds();
  double next_check = start, next_report = start + 5;
  while (true) {
    PCFARM_RETURN_IF_ERROR(fleet->Pump(50));
    double now = MonotonicSeconds();
    if (now >= next_check) {
      next_check = now + 0.2;
      PCFARM_ASSIGN_OR_RETURN(auto rows, cluster->db().Query(sql));
      if (rows.empty()) return NotFound("no job " + std::to_string(job));
      const std::string& state = rows[0][0];
      if (state == "succeeded" || state == "failed" || state == "cancelled")
        return state;
    }
    if (report && now >= next_report) {
      next_report += 5;
      std::fprintf(stderr, "t=%5.1f s  acks=%llu\n", now - start,
                   static_cast<unsigned long long>(fleet->acks()));
    }
    if (now - start > timeout_s) {
      return Timeout("job " + std::to_string(job) + " not done after " +
                     std::to_string(timeout_s) + " s");
    }
  }
}

std::string StatusLine(MiniCluster* cluster, int64_t job, double timeout_s) {
  CommandResult r =
      cluster->Cli({"status", std::to_string(job), "--json"}, timeout_s,
                   static_cast<int>(timeout_s * 1000) + 10'000);
  if (r.exit_code != 0) return "status failed: " + r.Describe();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r.LastLine());
  } catch (const nlohmann::json::exception& e) {
    return std::string("status printed no JSON: ") + e.what();
  }
  std::string line =
      "state=" + j.value("state", std::string("?")) +
      " shards_accepted=" + std::to_string(j.value("shards_accepted", 0)) +
      "/" + std::to_string(j.value("shards_total", 0));
  if (j.contains("summary")) line += " summary=" + j["summary"].dump();
  return line;
}

// A ResultBody for `a` whose output is `bytes` '[' characters, or, with
// bytes == 0, as many as fit in WireLimits::envelope_body_bytes.
wire::ResultBody BigResult(const SimWorker& w, const SimAssignment& a,
                           int64_t bytes) {
  wire::ResultBody body = w.RunAssignment(a);
  body.set_ok(true);
  body.clear_error();
  size_t limit = WireLimits{}.envelope_body_bytes;
  size_t n = bytes > 0 ? static_cast<size_t>(bytes) : limit;
  body.set_output(std::string(n, '['));
  // The length prefix of `output` shrinks with it: a few rounds settle.
  for (int i = 0; bytes == 0 && i < 4 && body.ByteSizeLong() > limit; ++i) {
    n -= body.ByteSizeLong() - limit;
    body.set_output(std::string(n, '['));
  }
  return body;
}

// ------------------------------------------------------------------- main

int Run(const Options& opt) {
  CryptoInit();
  RaiseOpenFileLimit();
  if (!opt.tmpdir.empty()) ::setenv("TMPDIR", opt.tmpdir.c_str(), 1);
  std::string load_before = LoadAverage();

  MiniClusterOptions mco;
  mco.heartbeat_interval_ms = 1000;
  mco.heartbeat_liveness = 3;
  mco.lease_ms = 600'000;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  Status s = cluster.Init();
  if (!s.ok()) return Fail(s);
  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  pid_t pid = cluster.coordinator_pid();
  auto token = cluster.CreateToken(opt.workers, "1h");
  if (!token.ok()) return Fail(token.status());

  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, opt.workers + 64);
  SimFleet fleet(&ctx);
  SimWorkerOptions wo;
  wo.name = "st";
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
  s = fleet.ReadyAll(1);
  if (!s.ok()) return Fail(s);

  // ---- the baseline's job: one shard ----
  auto tiny = cluster.SubmitBench(1, opt.size, 1, 1);
  if (!tiny.ok()) return Fail(tiny.status());
  auto tiny_state = RunJob(&cluster, &fleet, *tiny, 60, false);
  if (!tiny_state.ok()) return Fail(tiny_state.status());
  if (*tiny_state != "succeeded") {
    return Fail(Internal("the 1-shard job ended " + *tiny_state));
  }

  // ---- the job of --shards shards ----
  auto mem_before = SampleProcess(pid);
  if (!mem_before.ok()) return Fail(mem_before.status());
  double t_submit = MonotonicSeconds();
  auto submit = cluster.Cli(
      {"submit", "bench", "--shards", std::to_string(opt.shards), "--size",
       std::to_string(opt.size), "--redundancy", "1", "--reps", "1"},
      60, 120'000);
  if (submit.exit_code != 0) return Fail(Internal(submit.Describe()));
  int64_t big = 0;
  try {
    big = std::stoll(submit.LastLine());
  } catch (const std::exception&) {
    return Fail(
        InvalidArgument("submit printed no job id: " + submit.Describe()));
  }
  double submit_s = MonotonicSeconds() - t_submit;
  std::fprintf(stderr,
               "job %lld of %d shards submitted in %.1f s; running it ...\n",
               static_cast<long long>(big), opt.shards, submit_s);
  double t_run = MonotonicSeconds();
  auto big_state = RunJob(&cluster, &fleet, big, opt.job_timeout_s, true);
  if (!big_state.ok()) return Fail(big_state.status());
  double run_s = MonotonicSeconds() - t_run;
  if (*big_state != "succeeded")
    return Fail(Internal("the big job ended " + *big_state));
  std::fprintf(stderr, "job %lld succeeded in %.1f s; timing %d calls ...\n",
               static_cast<long long>(big), run_s, opt.calls);
  auto mem_done = SampleProcess(pid);
  if (!mem_done.ok()) return Fail(mem_done.status());

  CallRound round;
  auto pump = [&]() { return fleet.Pump(0); };
  s = MeasureCalls(&cluster, pid, *tiny, big, opt, pump, &round);
  if (!s.ok()) return Fail(s);
  auto mem_after = SampleProcess(pid);
  if (!mem_after.ok()) return Fail(mem_after.status());
  std::string big_status = StatusLine(&cluster, big, opt.cli_timeout_s);

  std::string what = "(" + std::to_string(opt.shards) + " shards)";
  std::vector<BenchRow> rows;
  AddMemoryRows("job of " + std::to_string(opt.shards) + " shards done",
                *mem_before, *mem_done, *mem_after, &rows);
  AddCallRows(what, round, &rows);
  auto stats = cluster.Stats();
  auto counter = [&](const char* name) -> uint64_t {
    return stats.ok() ? stats->value(name, uint64_t{0}) : 0;
  };
  std::vector<std::string> notes = {
      "job " + std::to_string(big) + ": bench, " + std::to_string(opt.shards) +
          " shards (n=" + std::to_string(opt.size) +
          ", reps=1, redundancy 1), " + std::to_string(opt.workers) +
          " simulated workers; submitted in " + FormatFixed(submit_s, 1) +
          " s, ran in " + FormatFixed(run_s, 1) + " s (" +
          FormatFixed(opt.shards / run_s, 0) + " shards/s)",
      "its status at the end: " + big_status,
      CallNote("calls", round) + "; " + std::to_string(opt.calls) +
          " rounds of (baseline, status, jobs)",
      "coordinator stats: results_accepted=" +
          std::to_string(counter("results_accepted")) +
          " results_rejected=" + std::to_string(counter("results_rejected")) +
          " workers_connected=" + std::to_string(counter("workers_connected")),
      "data directory on " + FileSystemOf(cluster.dir()),
      "load average before / after: " + load_before + " / " + LoadAverage(),
  };
  PrintBenchTable(
      "status_bench: coordinator memory and `pcfarm status` latency, "
      "job of " +
          std::to_string(opt.shards) + " accepted shards",
      rows, notes);

  if (!opt.big_output) return 0;

  // ---- --big-output: one shard answered with a huge output ----
  // Every worker but worker 0 leaves, so worker 0 gets the shard.
  for (size_t i = 1; i < fleet.size(); ++i) {
    s = fleet.worker(i).SendBye("status_bench: big-output scenario");
    if (!s.ok()) return Fail(s);
  }
  SimWorker& w = fleet.worker(0);
  auto mem_before2 = SampleProcess(pid);
  if (!mem_before2.ok()) return Fail(mem_before2.status());
  auto huge = cluster.SubmitBench(1, opt.size, 1, 1);
  if (!huge.ok()) return Fail(huge.status());
  auto frame = w.Expect(wire::CoordinatorFrame::kAssign, 60'000);
  if (!frame.ok())
    return Fail(frame.status().WithContext("worker 0: no ASSIGN"));
  auto assignment = w.OpenAssign(frame->assign());
  if (!assignment.ok()) return Fail(assignment.status());
  wire::ResultBody body = BigResult(w, *assignment, opt.big_output_bytes);
  size_t output_bytes = body.output().size();
  size_t body_bytes = body.ByteSizeLong();
  double t_send = MonotonicSeconds();
  s = w.SendResult(w.SealResult(body));
  if (!s.ok()) return Fail(s);
  std::string answer;
  auto ack = w.Expect(wire::CoordinatorFrame::kAck, 120'000);
  double answer_s = MonotonicSeconds() - t_send;
  if (ack.ok()) {
    answer = "ACK";
  } else {
    answer = ack.status().ToString();  // a REJECT arrives as PermissionDenied
  }
  std::string huge_state = "?";
  {
    auto rows2 = cluster.db().Query("SELECT state FROM jobs WHERE id=" +
                                    std::to_string(*huge));
    if (rows2.ok() && !rows2->empty()) huge_state = (*rows2)[0][0];
  }
  if (ack.ok()) {
    auto end = cluster.WaitForJobEnd(*huge, 30'000);
    huge_state = end.ok() ? *end : end.status().ToString();
  }
  auto mem_done2 = SampleProcess(pid);
  if (!mem_done2.ok()) return Fail(mem_done2.status());
  std::fprintf(
      stderr,
      "big-output job %lld: %s after %.2f s, state %s; timing %d calls ...\n",
      static_cast<long long>(*huge), answer.c_str(), answer_s,
      huge_state.c_str(), opt.calls);

  // Worker 0 only heartbeats from here on: should the coordinator have
  // refused the result and assigned the shard again, no honest result
  // replaces the big one.
  CallRound round2;
  double last_heartbeat = 0;
  auto heartbeat = [&]() -> Status {
    while (true) {
      PCFARM_ASSIGN_OR_RETURN(auto f, w.Receive(0));
      if (!f) break;
    }
    if (MonotonicSeconds() - last_heartbeat < 1.0) return Status::Ok();
    last_heartbeat = MonotonicSeconds();
    return w.SendHeartbeat();
  };
  std::string load_before2 = LoadAverage();
  s = MeasureCalls(&cluster, pid, *tiny, *huge, opt, heartbeat, &round2);
  if (!s.ok()) return Fail(s);
  auto mem_after2 = SampleProcess(pid);
  if (!mem_after2.ok()) return Fail(mem_after2.status());
  std::string huge_status = StatusLine(&cluster, *huge, opt.cli_timeout_s);

  std::vector<BenchRow> rows2 = {
      {"result with " + std::to_string(output_bytes) + " B of '[' as output",
       answer + ", job " + huge_state, "-", "-", "-"},
  };
  AddMemoryRows("big-output job done", *mem_before2, *mem_done2, *mem_after2,
                &rows2);
  AddCallRows("(big-output job)", round2, &rows2);
  auto stats2 = cluster.Stats();
  auto counter2 = [&](const char* name) -> uint64_t {
    return stats2.ok() ? stats2->value(name, uint64_t{0}) : 0;
  };
  std::vector<std::string> notes2 = {
      "job " + std::to_string(*huge) +
          ": bench, 1 shard, redundancy 1; worker 0 sent a "
          "signed ResultBody of " +
          std::to_string(body_bytes) + " B (limit " +
          std::to_string(WireLimits{}.envelope_body_bytes) + " B), output " +
          std::to_string(output_bytes) + " B of '['; answer after " +
          FormatFixed(answer_s, 2) + " s: " + answer,
      "its status at the end: " + huge_status,
      CallNote("calls", round2) + "; `jobs` now lists 3 jobs",
      "workers 1.." + std::to_string(fleet.size() - 1) +
          " said BYE first so that worker 0 got the shard",
      "coordinator stats: results_accepted=" +
          std::to_string(counter2("results_accepted")) +
          " results_rejected=" + std::to_string(counter2("results_rejected")) +
          " workers_connected=" + std::to_string(counter2("workers_connected")),
      "load average before / after the calls: " + load_before2 + " / " +
          LoadAverage(),
  };
  PrintBenchTable(
      "status_bench --big-output: one accepted result whose output is "
      "as large as the wire allows",
      rows2, notes2);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{
      "status_bench: coordinator RSS and `pcfarm status` latency for a big "
      "job"};
  app.add_option("--shards", opt.shards, "shards of the big bench job")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--workers", opt.workers, "simulated workers")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  app.add_option("--calls", opt.calls, "CLI calls of each kind timed")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--size", opt.size, "bench kind matrix size n")
      ->capture_default_str();
  app.add_flag("--big-output", opt.big_output,
               "then a 1-shard job answered with a huge output of '['");
  app.add_option("--big-output-bytes", opt.big_output_bytes,
                 "bytes of that output (0: the most a result body may carry)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--cli-timeout-s", opt.cli_timeout_s,
                 "--timeout of each CLI call")
      ->capture_default_str();
  app.add_option("--job-timeout-s", opt.job_timeout_s,
                 "how long the big job may run")
      ->capture_default_str();
  app.add_option(
      "--tmpdir", opt.tmpdir,
      "parent of the temporary data directory (default $TMPDIR or /tmp)");
  CLI11_PARSE(app, argc, argv);
  return pcfarm::Run(opt);
}
