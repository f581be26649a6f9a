// make_datadir_fixture OUT_DIR: makes the coordinator data directory that
// tests/fixtures/datadir-v<N>/ holds (see its README), with the real
// pcfarm-coordinator, pcfarm-worker and pcfarm of this build (from
// $PCFARM_BIN_DIR or this program's directory) and one in-process SimWorker
// (for the failed job: it reports a failure). Not a test; run by hand when a
// release changes the schema, and commit what it writes.
//
// The directory it makes holds, with the coordinator stopped by SIGTERM:
//   job 1  bench  succeeded  (4 shards)
//   job 2  bench  cancelled  (while its shards ran)
//   job 3  bench  failed     (its shard failed with --max-attempts 1)
//   job 4  bench  queued     (submitted by the submitter alice)
//   job 5  bench  running    (some shards accepted, two leased to workers)
// three workers, a token with uses left, the client alice, two uploaded
// blobs, and expected.json: `pcfarm jobs --json` and `pcfarm workers --json`
// as they were just before the stop.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "base/status.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

#define CHECK_OK(expr)                                              \
  do {                                                              \
    Status _s = StatusOf(expr);                                     \
    if (!_s.ok()) return _s.WithContext(#expr);                     \
  } while (0)

Status StatusOf(const Status& s) { return s; }
template <typename T>
Status StatusOf(const Result<T>& r) { return r.status(); }

Status Cli(MiniCluster* c, const std::vector<std::string>& args) {
  CommandResult r = c->Cli(args, 10, 60'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  return Status::Ok();
}

Result<int64_t> SubmitBench(MiniCluster* c, int shards, int size, int reps,
                            int priority, const std::string& profile = "") {
  // Another user's profile: the binary itself (Cli passes the admin's).
  std::vector<std::string> args;
  if (!profile.empty()) args = {c->Binary("pcfarm"), "--profile", profile};
  for (const char* a : {"submit", "bench"}) args.push_back(a);
  for (const auto& a : std::vector<std::string>{
           "--shards", std::to_string(shards), "--size", std::to_string(size), "--reps",
           std::to_string(reps), "--priority", std::to_string(priority), "--json"}) {
    args.push_back(a);
  }
  CommandResult r = profile.empty() ? c->Cli(args, 10, 60'000) : c->Run(args, 60'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  json j = json::parse(r.LastLine(), nullptr, false);
  if (!j.is_object() || !j.contains("job_id")) return Internal("submit said: " + r.out);
  return j["job_id"].get<int64_t>();
}

Status Make(const std::string& out) {
  if (fs::exists(out)) return AlreadyExists(out + " exists");
  MiniClusterOptions o;
  // Leases outlive the generation (the test finds them expired: their
  // deadlines are wall-clock times long past) and one failure fails a shard.
  o.lease_ms = 120'000;
  o.max_attempts = 1;
  o.log_level = "info";
  MiniCluster c(o);
  CHECK_OK(c.Init());
  CHECK_OK(c.StartCoordinator());
  const std::string alice = c.coordinator_dir() + "/alice.profile";
  CHECK_OK(Cli(&c, {"client", "add", "--name", "alice", "--out", alice}));
  CHECK_OK(Cli(&c, {"token", "create", "--uses", "5", "--ttl", "3650d"}));
  for (int i = 0; i < 2; ++i) {
    std::string file = c.dir() + "/blob" + std::to_string(i);
    std::ofstream(file) << "pcfarm data directory fixture, blob " << i << "\n";
    CHECK_OK(Cli(&c, {"upload", file}));
  }

  // 1: succeeded.
  CHECK_OK(c.AddWorker("w0"));
  CHECK_OK(c.WaitForConnectedWorkers(1, 30'000));
  auto j1 = SubmitBench(&c, 4, 32, 1, 0);
  CHECK_OK(j1);
  auto end = c.WaitForJobEnd(*j1, 60'000);
  CHECK_OK(end);
  if (*end != "succeeded") return Internal("job 1 is " + *end);
  // 2: cancelled while it runs.
  auto j2 = SubmitBench(&c, 20, 512, 100, 0);
  CHECK_OK(j2);
  if (!WaitUntil([&] {
        auto n = c.db().QueryInt("SELECT COUNT(*) FROM attempts WHERE job_id=" +
                                 std::to_string(*j2));
        return n.ok() && *n > 0;
      }, 30'000)) {
    return Timeout("job 2 never ran");
  }
  CHECK_OK(Cli(&c, {"cancel", std::to_string(*j2)}));
  CHECK_OK(c.StopWorker(0));
  // 3: failed, by a worker that says its shard failed.
  zmq::context_t ctx(1);
  auto token = c.CreateToken(1, "1h");
  CHECK_OK(token);
  SimWorkerOptions so;
  so.name = "sim-failing";
  so.auto_work = false;
  auto sim = SimWorker::FromToken(&ctx, *token, so);
  CHECK_OK(sim);
  CHECK_OK((*sim)->Enroll(5000));
  CHECK_OK((*sim)->Join(5000));
  auto j3 = SubmitBench(&c, 1, 32, 1, 0);
  CHECK_OK(j3);
  CHECK_OK((*sim)->SendReady(1));
  auto assign = (*sim)->Expect(wire::CoordinatorFrame::kAssign, 10'000);
  CHECK_OK(assign);
  auto opened = (*sim)->OpenAssign(assign->assign());
  CHECK_OK(opened);
  wire::ResultBody failed = (*sim)->RunAssignment(*opened);
  failed.set_ok(false);
  failed.set_output("");
  failed.set_error("out of device memory (made by make_datadir_fixture)");
  CHECK_OK((*sim)->SendResult((*sim)->SealResult(failed)));
  end = c.WaitForJobEnd(*j3, 30'000);
  CHECK_OK(end);
  if (*end != "failed") return Internal("job 3 is " + *end);
  CHECK_OK((*sim)->SendBye("done"));
  (*sim)->Disconnect();
  // 4: queued (alice's, low priority), then 5 running on two workers.
  auto j4 = SubmitBench(&c, 3, 32, 1, 0, alice);
  CHECK_OK(j4);
  auto j5 = SubmitBench(&c, 12, 384, 100, 5);
  CHECK_OK(j5);
  CHECK_OK(c.StartWorker(0));
  CHECK_OK(c.AddWorker("w1"));
  std::string j5s = std::to_string(*j5);
  if (!WaitUntil([&] {
        auto acc = c.db().QueryInt("SELECT shards_accepted FROM jobs WHERE id=" + j5s);
        auto leased = c.db().QueryInt(
            "SELECT COUNT(*) FROM attempts WHERE state='leased' AND job_id=" + j5s);
        return acc.ok() && leased.ok() && *acc >= 2 && *leased == 2;
      }, 120'000, 5)) {
    return Timeout("job 5 did not reach 2 accepted shards and 2 leases");
  }
  auto jobs = c.CliJson({"jobs"});
  CHECK_OK(jobs);
  auto workers = c.CliJson({"workers"});
  CHECK_OK(workers);
  auto version = c.db().QueryInt("SELECT MAX(version) FROM schema_version");
  CHECK_OK(version);
  // The coordinator first, so that the workers' leases stay in its store.
  CHECK_OK(c.StopCoordinator());
  CHECK_OK(c.KillWorker(0));
  CHECK_OK(c.KillWorker(1));
  for (const auto& j : *jobs) {
    if (j["job_id"] == *j5 && j["state"] != "running") return Internal("job 5 is not running");
    if (j["job_id"] == *j4 && j["state"] != "queued") return Internal("job 4 is not queued");
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  fs::copy(c.coordinator_dir(), out, fs::copy_options::recursive, ec);
  if (ec) return IoError("copy to " + out + ": " + ec.message());
  json expected = {{"schema_version", *version}, {"jobs", *jobs}, {"workers", *workers}};
  std::ofstream(out + "/expected.json") << expected.dump(2) << "\n";
  std::printf("wrote %s (schema version %lld): jobs %s\n", out.c_str(),
              (long long)*version, jobs->dump().c_str());
  return Status::Ok();
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_datadir_fixture OUT_DIR\n");
    return 64;
  }
  pcfarm::Status s = pcfarm::Make(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "make_datadir_fixture: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
