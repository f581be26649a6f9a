// End-to-end tests: a real coordinator, real workers and the real CLI on
// loopback (MiniCluster), plus in-process SimWorkers for the misbehaving
// peers. Each TEST_CASE builds its own cluster in a fresh temp directory;
// on a failed assertion every process log is printed.
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch

#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "base/clock.h"
#include "base/file.h"
#include "coordinator/store.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "crypto/token.h"
#include "proto/wire.h"
#include "tasks/kinds/bench.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The checksum an honest run of these bench params gives (computed here, by
// the same kind the workers run).
std::string ExpectedChecksum(const std::string& params) {
  BenchKind bench;
  json p = json::parse(params);
  p["reps"] = 1;
  auto out = bench.Run(p.dump(), RunContext{});
  REQUIRE_OK(out);
  return json::parse(*out).at("checksum").get<std::string>();
}

// The invariants of a finished bench job, read from the database: every
// shard accepted, with exactly `redundancy` agreeing results from as many
// different workers (no shard accepted twice), its accepted result among
// them, and every agreeing result carrying the checksum computed here.
void CheckJobInvariants(MiniCluster* c, int64_t job, int shards,
                        int redundancy) {
  std::string j = std::to_string(job);
  CHECK(DbInt(c, "SELECT state='succeeded' FROM jobs WHERE id=" + j) == 1);
  CHECK(DbInt(c, "SELECT shards_accepted FROM jobs WHERE id=" + j) == shards);
  CHECK(DbInt(c, "SELECT count(*) FROM shards WHERE job_id=" + j) == shards);
  CHECK(DbInt(c, "SELECT count(*) FROM shards WHERE job_id=" + j +
                     " AND state!='accepted'") == 0);
  auto per_shard = DbRows(
      c,
      "SELECT s.idx, count(r.id), count(DISTINCT r.worker_id), "
      "sum(r.id = s.accepted_result_id) FROM shards s LEFT JOIN results r "
      "ON r.shard_id = s.id AND r.outcome = 'agreed' WHERE s.job_id = " + j +
          " GROUP BY s.id ORDER BY s.idx");
  REQUIRE(per_shard.size() == size_t(shards));
  for (const auto& row : per_shard) {
    INFO("shard idx " << row[0]);
    CHECK(std::stoi(row[1]) == redundancy);
    CHECK(std::stoi(row[2]) == redundancy);
    CHECK(row[3] == "1");
  }
  auto results = DbRows(
      c,
      "SELECT s.idx, s.params, r.body FROM shards s JOIN results r ON "
      "r.shard_id = s.id AND r.outcome = 'agreed' WHERE s.job_id = " + j);
  std::map<std::string, std::string> expected;  // params -> checksum
  for (const auto& row : results) {
    INFO("shard idx " << row[0] << " result " << row[2]);
    auto& want = expected[row[1]];
    if (want.empty()) want = ExpectedChecksum(row[1]);
    json body;
    REQUIRE_NOTHROW(body = json::parse(row[2]));
    CHECK(body.value("checksum", "") == want);
  }
}

// Opens the stopped coordinator's database with the Store and runs its own
// consistency check (counters equal row counts, ...).
void CheckStoreConsistency(MiniCluster* c) {
  auto store = Store::Open(c->coordinator_dir() + "/coordinator.db",
                           SystemClock::Get());
  REQUIRE_OK(store);
  REQUIRE_OK((*store)->CheckConsistency());
}

// A copy of the admin profile pointing at `endpoint`, mode 0600.
std::string ProfileWithEndpoint(MiniCluster* c, const std::string& endpoint) {
  std::ifstream in(c->admin_profile());
  json p = json::parse(in);
  p["endpoint"] = endpoint;
  std::string path = c->dir() + "/unreachable.profile";
  {
    std::ofstream out(path);
    out << p.dump();
  }
  ::chmod(path.c_str(), 0600);
  return path;
}

bool HasSpooledResult(const std::string& dir) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().extension() == ".result") return true;
  }
  return false;
}

// --------------------------------------------------------------------- tests

TEST_CASE("a bench job with redundancy 2 succeeds on 3 workers",
          "[integration]") {
  Cluster c;
  StartCluster(&c.c, 3);
  auto job = c->SubmitBench(50, 32, 2);
  REQUIRE_OK(job);
  CommandResult wait = c->Cli({"wait", std::to_string(*job), "--poll", "0.1",
                               "--max-wait", "90"},
                              5, 100'000);
  INFO(wait.Describe());
  REQUIRE(wait.exit_code == 0);
  auto status = c->JobStatus(*job);
  REQUIRE_OK(status);
  CHECK((*status)["state"] == "succeeded");
  CHECK((*status)["shards_total"] == 50);
  CHECK((*status)["shards_accepted"] == 50);
  CheckJobInvariants(&c.c, *job, 50, 2);
  // The work was spread: at least two workers agreed on results.
  auto workers = c->Workers();
  REQUIRE_OK(workers);
  int busy = 0;
  for (const auto& w : *workers) busy += w.value("agreed", 0) > 0;
  CHECK(busy >= 2);
  // Each told its CPU's free memory, at most its total.
  for (const auto& w : *workers) {
    INFO(w.dump());
    const auto& cpu = w.at("devices").at(0);
    CHECK(cpu.value("free_bytes", uint64_t(0)) > 0);
    CHECK(cpu.value("free_bytes", uint64_t(0)) <= cpu.value("memory_bytes", uint64_t(0)));
  }
  // A bench shard needs no backend and no memory: each ran on its worker's
  // preferred device, the one it says shards run on.
  for (int i = 0; i < 3; ++i) {
    auto read = ReadFile(c->dir() + "/worker-" + std::to_string(i) + "-w" + std::to_string(i) +
                             ".log",
                         64 << 20);
    REQUIRE_OK(read);
    const std::string& log = *read;
    const size_t at = log.find("shards run on the ");
    REQUIRE(at != std::string::npos);
    const std::string backend = log.substr(at + 18, log.find(' ', at + 18) - (at + 18));
    INFO("worker " << i << " runs on " << backend);
    size_t accepted = 0, on_it = 0;
    for (size_t p = log.find("accepted: bench"); p != std::string::npos;
         p = log.find("accepted: bench", p + 1)) {
      ++accepted;
      const std::string line = log.substr(p, log.find('\n', p) - p);
      on_it += line.find(", on " + backend + ":") != std::string::npos;
    }
    CHECK(on_it == accepted);
  }
  // SIGTERM stops the coordinator cleanly.
  REQUIRE_OK(c->StopCoordinator());
  CheckStoreConsistency(&c.c);
}

TEST_CASE("a shard that runs longer than its lease finishes while its worker heartbeats",
          "[integration][lease]") {
  // A lease is renewed while the worker's heartbeats list the attempt as
  // running (Store::RenewLeases): without that, a shard longer than the
  // lease expired mid-run, went to the same worker again, and could never
  // finish (a 20-step DiLoCo round of a 110M model did exactly that).
  MiniClusterOptions o;
  o.lease_ms = 1500;
  Cluster c(o);
  StartCluster(&c.c, 1);
  auto job = c->SubmitBench(1, 2048, 1, 60);  // seconds of GEMMs
  REQUIRE_OK(job);
  auto end = c->WaitForJobEnd(*job, 180'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  const std::string j = std::to_string(*job);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE job_id=" + j) == 1);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE state='expired'") == 0);
  // It ran past its first deadline, and the deadline moved with it.
  const int64_t ran = DbInt(&c.c, "SELECT ended_ms - leased_ms FROM attempts WHERE job_id=" + j);
  INFO("the shard ran " << ran << " ms");
  REQUIRE(ran > 3 * o.lease_ms);
  CHECK(DbInt(&c.c, "SELECT deadline_ms - leased_ms FROM attempts WHERE job_id=" + j) >
        o.lease_ms);
  CommandResult stats = c->Cli({"stats", "--json"});
  REQUIRE(stats.exit_code == 0);
  CHECK(nlohmann::json::parse(stats.LastLine())["leases_renewed"].get<int64_t>() >= 2);
  CheckStoreConsistency(&c.c);
}

TEST_CASE("an attempt whose output is uploading keeps its lease, also while paused",
          "[integration][lease]") {
  // A worker uploads a result's output after its computation ends; on a
  // home link a model-sized output takes minutes. Its heartbeats list the
  // attempt as `uploading`, and the coordinator renews that lease even
  // while the worker is paused; a paused worker's running attempt is not
  // renewed (a long pause hands it on). Before, neither was listed once
  // the computation ended, and an upload longer than the lease lost the
  // attempt to another worker.
  MiniClusterOptions o;
  o.lease_ms = 1500;
  Cluster c(o);
  StartCluster(&c.c, 0);
  auto job = c->SubmitBench(2, 32, 1);
  REQUIRE_OK(job);
  auto token = c->CreateToken(1, "1h");
  REQUIRE_OK(token);
  zmq::context_t ctx(1);
  SimWorkerOptions so;
  so.name = "uploader";
  so.slots = 2;
  auto w = SimWorker::FromToken(&ctx, *token, so);
  REQUIRE_OK(w);
  REQUIRE_OK((*w)->Enroll(5000));
  REQUIRE_OK((*w)->Join(5000));
  std::vector<uint64_t> attempts;
  for (const SimAssignment& a : (*w)->pending_assignments()) attempts.push_back(a.body.attempt_id());
  (*w)->pending_assignments().clear();
  const int64_t assign_deadline = SystemClock::Get()->MonotonicMs() + 10'000;
  while (attempts.size() < 2 && SystemClock::Get()->MonotonicMs() < assign_deadline) {
    auto f = (*w)->Receive(50);
    REQUIRE_OK(f);
    if (*f && (*f)->has_assign()) {
      auto a = (*w)->OpenAssign((*f)->assign());
      REQUIRE_OK(a);
      attempts.push_back(a->body.attempt_id());
    }
  }
  REQUIRE(attempts.size() == 2);
  const uint64_t uploading = attempts[0], running = attempts[1];
  wire::Heartbeat hb;
  hb.set_paused(true);
  hb.set_paused_reason("keyboard or mouse used 1 s ago");
  hb.add_running()->set_attempt_id(running);
  hb.add_uploading(uploading);
  int renewals = 0;
  const int64_t end = SystemClock::Get()->MonotonicMs() + 3 * o.lease_ms;
  int64_t next_beat = 0;
  while (SystemClock::Get()->MonotonicMs() < end) {
    if (SystemClock::Get()->MonotonicMs() >= next_beat) {
      REQUIRE_OK((*w)->SendHeartbeat(hb));
      next_beat = SystemClock::Get()->MonotonicMs() + 200;
    }
    auto f = (*w)->Receive(20);
    REQUIRE_OK(f);
    if (*f && (*f)->has_lease_renewal()) {
      for (uint64_t a : (*f)->lease_renewal().attempt_ids()) {
        CHECK(a == uploading);
        ++renewals;
      }
    }
  }
  CHECK(renewals >= 2);
  const std::string state = "SELECT state FROM attempts WHERE id=";
  CHECK(DbRows(&c.c, state + std::to_string(uploading)).at(0).at(0) == "leased");
  CHECK(DbInt(&c.c, "SELECT deadline_ms - leased_ms FROM attempts WHERE id=" +
                        std::to_string(uploading)) > 2 * o.lease_ms);
  CHECK(DbRows(&c.c, state + std::to_string(running)).at(0).at(0) != "leased");
}

TEST_CASE("a worker whose running shard is cancelled takes new work when it stops",
          "[integration]") {
  // A CANCEL prompts a READY while the shard still runs (no free slot);
  // the worker must say again that its slot is free once the shard stops,
  // or the coordinator never offers it work again (a DiLoCo round's
  // straggler, cancelled at its quorum, then starved the next round).
  Cluster c;
  StartCluster(&c.c, 1);
  auto a = c->SubmitBench(1, 4096, 1, 100);  // minutes of GEMMs unless cancelled
  REQUIRE_OK(a);
  const std::string running = "SELECT COUNT(*) FROM attempts WHERE state='leased' AND job_id=" +
                              std::to_string(*a);
  REQUIRE(WaitUntil([&] { return DbInt(&c.c, running) == 1; }, 30'000, 5));
  auto b = c->SubmitBench(2, 64, 1, 1);  // waits for the one slot
  REQUIRE_OK(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // within its first rep
  CommandResult cancel = c->Cli({"cancel", std::to_string(*a)}, 10, 30'000);
  INFO(cancel.Describe());
  REQUIRE(cancel.exit_code == 0);
  auto end = c->WaitForJobEnd(*b, 60'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  std::ifstream log(c->dir() + "/worker-0-w0.log");
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  CHECK(text.find("cancelled") != std::string::npos);
}

TEST_CASE("a worker killed with -9 mid-job: the job still finishes",
          "[integration]") {
  MiniClusterOptions o;
  o.worker_slots = 2;  // the victim always holds a lease while work remains
  Cluster c(o);
  StartCluster(&c.c, 3);
  // Enough shards that the job is still running when the victim is caught
  // holding a lease, however fast this machine runs them.
  const int kShards = 60;
  auto job = c->SubmitBench(kShards, 512, 1, 5);
  REQUIRE_OK(job);
  std::string j = std::to_string(*job);
  int64_t victim = WorkerId(&c.c, "w0");
  std::string victim_leases = "SELECT count(*) FROM attempts WHERE job_id=" + j +
                              " AND state='leased' AND worker_id=" +
                              std::to_string(victim);
  const std::string accepted_sql = "SELECT shards_accepted FROM jobs WHERE id=" + j;
  // Freeze the victim (SIGSTOP) while it holds a lease, let a result it had
  // already sent land, and kill it only if a lease is still open then: so it
  // dies holding unfinished work, however quick a shard is here.
  bool mid = false;
  for (int tries = 0; tries < 50 && !mid; ++tries) {
    REQUIRE(WaitUntil(
        [&] {
          int64_t acc = DbInt(&c.c, accepted_sql);
          return acc > 0 && acc < kShards && DbInt(&c.c, victim_leases) > 0;
        },
        60'000, 5));
    REQUIRE_OK(c->PauseWorker(0));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    mid = DbInt(&c.c, victim_leases) > 0 && DbInt(&c.c, accepted_sql) < kShards;
    if (!mid) REQUIRE_OK(c->ResumeWorker(0));
  }
  REQUIRE(mid);
  REQUIRE_OK(c->KillWorker(0));
  int64_t accepted_at_kill = DbInt(&c.c, accepted_sql);
  INFO("accepted at the kill: " << accepted_at_kill);
  CHECK(accepted_at_kill < kShards);

  auto end = c->WaitForJobEnd(*job, 90'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  CheckJobInvariants(&c.c, *job, kShards, 1);
  // The coordinator noticed the loss and took the victim's leases back;
  // other workers answered those shards.
  CHECK(Counter(&c.c, "workers_lost") >= 1);
  CHECK(DbInt(&c.c, victim_leases) == 0);
  auto lost = DbRows(&c.c, "SELECT shard_id FROM attempts WHERE job_id=" + j +
                               " AND worker_id=" + std::to_string(victim) +
                               " AND state IN ('lost','expired')");
  CHECK(!lost.empty());
  for (const auto& row : lost) {
    CHECK(DbInt(&c.c, "SELECT count(*) FROM results r JOIN shards s ON "
                      "s.accepted_result_id = r.id WHERE s.id=" + row[0] +
                      " AND r.worker_id != " + std::to_string(victim)) == 1);
  }
  auto workers = c->Workers();
  REQUIRE_OK(workers);
  for (const auto& w : *workers) {
    if (w["name"] == "w0") CHECK(w["connected"] == false);
  }
}

TEST_CASE("the coordinator killed with -9 mid-job loses no accepted result",
          "[integration]") {
  MiniClusterOptions o;
  // The workers' connections live through the restart (they would
  // reconnect after 10 s of silence): the restarted coordinator asks each
  // for a HELLO, and the leases whose ASSIGN died with it are leased again
  // at once (before, they stayed until they expired, and then no worker
  // could take the shard's other copy: the job hung).
  o.worker_heartbeat_liveness = 50;
  Cluster c(o);
  StartCluster(&c.c, 3);
  // Enough shards that the job is still running at the kill, however fast
  // this machine runs them. (Freezing the workers across the kill left a
  // job stalled after the restart under ASan; not understood yet.)
  const int kShards = 80;
  auto job = c->SubmitBench(kShards, 192, 2, 10);
  REQUIRE_OK(job);
  std::string j = std::to_string(*job);
  const std::string count_sql = "SELECT shards_accepted FROM jobs WHERE id=" + j;
  REQUIRE(WaitUntil(
      [&] {
        int64_t acc = DbInt(&c.c, count_sql);
        return acc >= 3 && acc < kShards / 2;
      },
      60'000, 5));
  REQUIRE_OK(c->KillCoordinator());
  // Read after the kill: exactly what was committed before it.
  const std::string accepted_sql =
      "SELECT s.id, s.accepted_result_id, r.id, r.attempt_id, r.worker_id, "
      "hex(r.body), hex(r.signature), r.outcome FROM shards s JOIN results r "
      "ON r.shard_id = s.id AND r.outcome = 'agreed' WHERE s.job_id = " + j +
      " AND s.state = 'accepted' ORDER BY r.id";
  auto before = DbRows(&c.c, accepted_sql);
  int64_t accepted_before =
      DbInt(&c.c, "SELECT count(*) FROM shards WHERE job_id=" + j +
                      " AND state='accepted'");
  INFO("accepted shards at the kill: " << accepted_before);
  REQUIRE(accepted_before > 0);
  REQUIRE(accepted_before < kShards);
  REQUIRE(before.size() == size_t(2 * accepted_before));

  REQUIRE_OK(c->StartCoordinator());
  auto end = c->WaitForJobEnd(*job, 90'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  auto after = DbRows(&c.c, accepted_sql);
  std::set<DbView::Row> after_set(after.begin(), after.end());
  for (const auto& row : before) {
    INFO("shard " << row[0] << " result " << row[2]);
    CHECK(after_set.count(row) == 1);  // still there, byte for byte
  }
  CheckJobInvariants(&c.c, *job, kShards, 2);
  for (int i = 0; i < 3; ++i) {
    INFO("worker " << i);
    auto log = ReadFile(c->worker_dir(i) + ".log");
    REQUIRE_OK(log);
    CHECK(log->find("the coordinator asked who we are") != std::string::npos);
  }
  CHECK(c->CoordinatorLog().find("did not answer with a HELLO") == std::string::npos);
  // (A clean exit on SIGTERM is the first test's business.)
  REQUIRE_OK(c->StopCoordinator(10'000, /*require_clean_exit=*/false));
  CheckStoreConsistency(&c.c);
}

// A restarted coordinator knows the leases it committed, not which of
// their ASSIGNs left before the kill. A worker whose connection lived
// through the restart (its first frame is no HELLO) is asked for one; the
// leases it does not hold are leased again at once, not when they expire,
// and it gets no shard before it has answered. A worker that does not
// answer (one from before Welcome.hello_wanted) gets work again after
// heartbeat_liveness intervals.
TEST_CASE("a lease whose ASSIGN died with the coordinator is leased again "
          "when its worker says HELLO",
          "[integration]") {
  MiniClusterOptions o;
  o.lease_ms = 120'000;      // expiry is not what frees it
  o.heartbeat_liveness = 25;  // 5 s before a silent HELLO is given up on
  Cluster c(o);
  StartCluster(&c.c, 0);
  // Submitted before the worker joins: it is not stepped during a CLI call.
  auto job = c->SubmitBench(2, 32, 1);
  REQUIRE_OK(job);
  auto token = c->CreateToken(1, "1h");
  REQUIRE_OK(token);
  zmq::context_t ctx(1);
  SimWorkerOptions so;
  so.name = "sim-resync";
  so.auto_work = false;
  auto made = SimWorker::FromToken(&ctx, *token, so);
  REQUIRE_OK(made);
  SimWorker& w = **made;
  REQUIRE_OK(w.Enroll(5000));
  REQUIRE_OK(w.Join(5000));
  auto first = w.Expect(wire::CoordinatorFrame::kAssign, 10'000);
  REQUIRE_OK(first);
  auto a1 = w.OpenAssign(first->assign());
  REQUIRE_OK(a1);
  const std::string a1_state = "SELECT state FROM attempts WHERE id=" +
                               std::to_string(a1->body.attempt_id());
  // The ASSIGN is "lost": the worker never runs it, and the coordinator dies.
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE(DbRows(&c.c, a1_state).at(0).at(0) == "leased");
  REQUIRE_OK(c->StartCoordinator());
  // The worker's connection comes back by itself; its next frame is a READY.
  REQUIRE_OK(w.SendReady(1));
  auto welcome = w.Expect(wire::CoordinatorFrame::kWelcome, 10'000);
  REQUIRE_OK(welcome);
  CHECK(welcome->welcome().hello_wanted());
  // No shard before the HELLO, though it said it has a free slot.
  REQUIRE_OK(w.SendReady(1));
  auto early = w.Expect(wire::CoordinatorFrame::kAssign, 1500);
  CHECK(early.status().code() == StatusCode::kTimeout);
  CHECK(DbRows(&c.c, a1_state).at(0).at(0) == "leased");
  const int64_t hello_ms = NowMs();
  REQUIRE_OK(w.SendHello());  // it runs nothing
  auto answer = w.Expect(wire::CoordinatorFrame::kWelcome, 10'000);
  REQUIRE_OK(answer);
  CHECK_FALSE(answer->welcome().hello_wanted());
  REQUIRE_OK(w.SendReady(1));
  auto second = w.Expect(wire::CoordinatorFrame::kAssign, 10'000);
  REQUIRE_OK(second);
  auto a2 = w.OpenAssign(second->assign());
  REQUIRE_OK(a2);
  INFO("re-leased " << NowMs() - hello_ms << " ms after the HELLO");
  CHECK(a2->body.attempt_id() != a1->body.attempt_id());
  CHECK(DbRows(&c.c, a1_state).at(0).at(0) == "lost");

  // Again, as a worker that does not know hello_wanted: it keeps its
  // shard, answers it, and after heartbeat_liveness intervals gets the
  // next one.
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(w.SendHeartbeat());
  const int64_t restart_ms = NowMs();
  auto welcome2 = w.Expect(wire::CoordinatorFrame::kWelcome, 10'000);
  REQUIRE_OK(welcome2);
  CHECK(welcome2->welcome().hello_wanted());
  REQUIRE_OK(w.SendResult(w.SealResult(w.RunAssignment(*a2))));
  REQUIRE_OK(w.Expect(wire::CoordinatorFrame::kAck, 10'000));
  REQUIRE_OK(w.SendReady(1));
  auto third = w.Expect(wire::CoordinatorFrame::kAssign, 30'000);
  REQUIRE_OK(third);
  CHECK(NowMs() - restart_ms >= 4'000);  // not before the 5 s were up
  auto a3 = w.OpenAssign(third->assign());
  REQUIRE_OK(a3);
  REQUIRE_OK(w.SendResult(w.SealResult(w.RunAssignment(*a3))));
  auto end = c->WaitForJobEnd(*job, 30'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
}

TEST_CASE("a worker with an unenrolled key gets no work", "[integration]") {
  Cluster c;
  StartCluster(&c.c, 0);
  auto job = c->SubmitBench(3, 32, 1);
  REQUIRE_OK(job);
  auto token = c->CreateToken(1, "1h");
  REQUIRE_OK(token);
  uint64_t unenrolled_before = Counter(&c.c, "unenrolled_messages");
  zmq::context_t ctx(1);

  // Fresh keys that never enrolled: HELLO and READY are refused.
  SimWorkerOptions so;
  so.name = "intruder";
  so.auto_work = false;
  auto intruder = SimWorker::FromToken(&ctx, *token, so);
  REQUIRE_OK(intruder);
  SimWorker& w = **intruder;
  REQUIRE_OK(w.Connect());
  REQUIRE_OK(w.SendHello());
  auto reject = w.Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(reject);
  CHECK(reject->reject().reason() == wire::REJECT_NOT_ENROLLED);
  REQUIRE_OK(w.SendReady(4));
  reject = w.Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(reject);
  CHECK(reject->reject().reason() == wire::REJECT_NOT_ENROLLED);
  // Listen a while longer: nothing but refusals ever comes.
  auto deadline = SystemClock::Get()->MonotonicMs() + 1000;
  while (SystemClock::Get()->MonotonicMs() < deadline) {
    auto f = w.Receive(100);
    REQUIRE_OK(f);
  }
  CHECK(w.stats().assigns == 0);
  CHECK(w.stats().welcomes == 0);
  CHECK(w.stats().rejects == 2);
  CHECK(Counter(&c.c, "unenrolled_messages") == unenrolled_before + 2);
  CHECK(Counter(&c.c, "shards_assigned") == 0);
  CHECK(DbInt(&c.c, "SELECT count(*) FROM workers") == 0);

  // The same token enrolls a worker with its own keys, which does get work:
  // the refusal above was about the key, not about an idle coordinator.
  SimWorkerOptions ho;
  ho.name = "honest";
  ho.auto_work = false;
  auto honest = SimWorker::FromToken(&ctx, *token, ho);
  REQUIRE_OK(honest);
  REQUIRE_OK((*honest)->Enroll(5000));
  REQUIRE_OK((*honest)->Join(5000));
  auto assign = (*honest)->Expect(wire::CoordinatorFrame::kAssign, 5000);
  REQUIRE_OK(assign);
  CHECK(Counter(&c.c, "shards_assigned") >= 1);
}

TEST_CASE("forged and replayed results are rejected and counted",
          "[integration]") {
  // The simulated worker steps only when the test reads it, and each CLI
  // call between (stats) takes ~0.3 s in a sanitizer build: a liveness of
  // 2 s keeps it from being dropped as silent, which is not what this
  // tests.
  MiniClusterOptions o;
  o.heartbeat_liveness = 10;
  Cluster c(o);
  StartCluster(&c.c, 0);
  const int kShards = 12;
  auto job = c->SubmitBench(kShards, 32, 1);
  REQUIRE_OK(job);
  auto token = c->CreateToken(1, "1h");
  REQUIRE_OK(token);
  zmq::context_t ctx(1);
  SimWorkerOptions so;
  so.name = "mallory";
  so.auto_work = false;
  auto sim = SimWorker::FromToken(&ctx, *token, so);
  REQUIRE_OK(sim);
  SimWorker& w = **sim;
  REQUIRE_OK(w.Enroll(5000));
  REQUIRE_OK(w.Join(5000));
  auto frame = w.Expect(wire::CoordinatorFrame::kAssign, 5000);
  REQUIRE_OK(frame);
  auto assignment = w.OpenAssign(frame->assign());
  REQUIRE_OK(assignment);
  wire::ResultBody body = w.RunAssignment(*assignment);
  REQUIRE(body.ok());
  wire::SignedEnvelope honest = w.SealResult(body);

  // 1. A bad signature.
  REQUIRE_OK(w.SendResult(SimWorker::WithForgedSignature(honest)));
  auto reject = w.Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(reject);
  CHECK(reject->reject().reason() == wire::REJECT_BAD_SIGNATURE);
  CHECK(Counter(&c.c, "results_forged") == 1);

  CHECK(Counter(&c.c, "results_rejected") == 1);

  // 2. A correctly signed result for an attempt that was never ours (the
  //    coordinator may count it as forged too: it answers no shard it sent).
  wire::ResultBody other = body;
  other.set_attempt_id(body.attempt_id() + 1'000'000);
  REQUIRE_OK(w.SendResult(w.SealResult(other)));
  reject = w.Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(reject);
  CHECK(reject->reject().reason() == wire::REJECT_UNKNOWN_ATTEMPT);
  CHECK(Counter(&c.c, "results_rejected") == 2);
  uint64_t forged = Counter(&c.c, "results_forged");
  CHECK(forged >= 1);

  // 3. The honest result is accepted (ACK) ...
  REQUIRE_OK(w.SendResult(honest));
  auto ack = w.Expect(wire::CoordinatorFrame::kAck, 5000);
  REQUIRE_OK(ack);
  CHECK(ack->ack().attempt_id() == body.attempt_id());
  // 4. ... and the very same RESULT sent again is a replay.
  REQUIRE_OK(w.SendResult(honest));
  reject = w.Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(reject);
  CHECK(reject->reject().reason() == wire::REJECT_UNKNOWN_ATTEMPT);
  CHECK(reject->reject().attempt_id() == body.attempt_id());
  CHECK(Counter(&c.c, "results_replayed") == 1);
  CHECK(Counter(&c.c, "results_rejected") == 3);
  // Only the honest copy is stored.
  CHECK(DbInt(&c.c, "SELECT count(*) FROM results WHERE attempt_id=" +
                        std::to_string(body.attempt_id())) == 1);
  REQUIRE_OK(w.SendBye("done misbehaving"));

  // Honest real workers finish the job correctly.
  for (int i = 0; i < 2; ++i) REQUIRE_OK(c->AddWorker("h" + std::to_string(i)));
  auto end = c->WaitForJobEnd(*job, 60'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  CheckJobInvariants(&c.c, *job, kShards, 1);
  // Honest workers add nothing to the misbehaviour counters.
  CHECK(Counter(&c.c, "results_forged") == forged);
  CHECK(Counter(&c.c, "results_replayed") == 1);
  CHECK(Counter(&c.c, "results_rejected") == 3);
}

TEST_CASE("simulated workers run a job to completion", "[integration]") {
  Cluster c;
  StartCluster(&c.c, 0);
  const int kShards = 30;
  auto job = c->SubmitBench(kShards, 32, 2);
  REQUIRE_OK(job);
  zmq::context_t ctx(1);
  std::vector<std::unique_ptr<SimWorker>> sims;
  // A token each (copies of a shard go to workers of different tokens),
  // all made before any worker joins: a joined worker is not stepped while
  // a CLI call runs, and would be lost as silent.
  std::vector<std::string> tokens;
  for (int i = 0; i < 4; ++i) {
    auto token = c->CreateToken(1, "1h");
    REQUIRE_OK(token);
    tokens.push_back(*token);
  }
  for (int i = 0; i < 4; ++i) {
    const std::string* token = &tokens[size_t(i)];
    SimWorkerOptions o;
    o.name = "sim" + std::to_string(i);
    o.slots = 2;
    auto w = SimWorker::FromToken(&ctx, *token, o);
    REQUIRE_OK(w);
    REQUIRE_OK((*w)->Enroll(5000));
    REQUIRE_OK((*w)->Join(5000));
    sims.push_back(std::move(*w));
  }
  std::string state_sql = "SELECT state FROM jobs WHERE id=" + std::to_string(*job);
  auto deadline = SystemClock::Get()->MonotonicMs() + 60'000;
  int64_t next_check = 0;
  std::string state;
  while (SystemClock::Get()->MonotonicMs() < deadline) {
    for (auto& w : sims) REQUIRE_OK(w->Step(5));
    if (SystemClock::Get()->MonotonicMs() >= next_check) {
      next_check = SystemClock::Get()->MonotonicMs() + 100;
      auto rows = DbRows(&c.c, state_sql);
      state = rows.at(0).at(0);
      if (state != "running" && state != "queued") break;
    }
  }
  CHECK(state == "succeeded");
  CheckJobInvariants(&c.c, *job, kShards, 2);
  // The job's state is committed before the last ACKs leave (they wait for
  // the WAL's fsync): step the workers until those arrive.
  auto all_acked = [&] {
    for (auto& w : sims)
      if (w->stats().acks != w->stats().results_sent) return false;
    return true;
  };
  const int64_t ack_deadline = SystemClock::Get()->MonotonicMs() + 10'000;
  while (!all_acked() && SystemClock::Get()->MonotonicMs() < ack_deadline)
    for (auto& w : sims) REQUIRE_OK(w->Step(5));
  uint64_t acks = 0;
  for (auto& w : sims) {
    INFO(w->stats().results_sent << " results, " << w->stats().acks << " acks");
    CHECK(w->stats().bad_assigns == 0);
    CHECK(w->stats().rejects == 0);
    CHECK(w->stats().acks == w->stats().results_sent);
    acks += w->stats().acks;
  }
  CHECK(acks == 2 * kShards);
  CHECK(Counter(&c.c, "results_rejected") == 0);
}

TEST_CASE("enrollment refuses wrong, used-up and expired tokens",
          "[integration]") {
  Cluster c;
  StartCluster(&c.c, 0);
  // Each failure: non-zero exit and one clear line on stderr.
  auto check_refused = [&](const CommandResult& r, const std::string& why) {
    INFO(r.Describe());
    CHECK(r.exit_code != 0);
    CHECK(!r.timed_out);
    std::string err = Trim(r.err);
    CHECK(!err.empty());
    CHECK(err.find('\n') == std::string::npos);
    CHECK(err.find(why) != std::string::npos);
  };

  SECTION("a wrong token") {
    auto real = c->CreateToken(1, "1h");
    REQUIRE_OK(real);
    auto t = DecodeEnrollmentToken(*real);
    REQUIRE_OK(t);
    t->secret = RandomBytes(kTokenSecretBytes);  // well-formed, unknown secret
    check_refused(c->EnrollWorker("wrong", EncodeEnrollmentToken(*t)),
                  "unknown token");
    // Garbage is refused before anything is sent.
    CommandResult garbage = c->EnrollWorker("garbage", "pcfarm1.not-a-token");
    INFO(garbage.Describe());
    CHECK(garbage.exit_code != 0);
    CHECK(Trim(garbage.err).find('\n') == std::string::npos);
    CHECK(!Trim(garbage.err).empty());
  }
  SECTION("a used-up token") {
    auto token = c->CreateToken(1, "1h");
    REQUIRE_OK(token);
    CommandResult first = c->EnrollWorker("first", *token);
    INFO(first.Describe());
    REQUIRE(first.exit_code == 0);
    check_refused(c->EnrollWorker("second", *token), "used up");
  }
  SECTION("an expired token") {
    CommandResult r = c->Cli({"token", "create", "--uses", "5", "--ttl", "1s",
                              "--json"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    json t = json::parse(r.LastLine());
    int64_t expires_ms = t.at("expires_ms").get<int64_t>();
    REQUIRE(WaitUntil([&] { return NowMs() > expires_ms + 50; }, 5000, 20));
    check_refused(c->EnrollWorker("late", t.at("token").get<std::string>()),
                  "expired");
  }
  // Only the one good enrollment (used-up section) may have made a worker.
  CHECK(DbInt(&c.c, "SELECT count(*) FROM workers WHERE name!='first'") == 0);
}

TEST_CASE("the CLI fails fast and clearly", "[integration]") {
  Cluster c;
  StartCluster(&c.c, 0);

  SECTION("an unreachable coordinator") {
    auto port = PickFreePort();
    REQUIRE_OK(port);
    std::string profile =
        ProfileWithEndpoint(&c.c, "tcp://127.0.0.1:" + std::to_string(*port));
    CommandResult r = c->Run({c->Binary("pcfarm"), "--profile", profile,
                              "--timeout", "1", "jobs"},
                             10'000);
    INFO(r.Describe());
    CHECK(r.exit_code != 0);
    CHECK(!r.timed_out);
    CHECK(r.seconds < 2.5);
    CHECK(!Trim(r.err).empty());
    CHECK(Trim(r.err).find('\n') == std::string::npos);
  }
  SECTION("an unknown job id") {
    for (const char* cmd : {"status", "wait", "cancel"}) {
      CommandResult r = c->Cli({cmd, "987654"});
      INFO(r.Describe());
      CHECK(r.exit_code == 1);
      CHECK(r.err.find("987654") != std::string::npos);
      CHECK(Trim(r.err).find('\n') == std::string::npos);
    }
  }
  SECTION("bad arguments") {
    for (std::vector<std::string> args :
         {std::vector<std::string>{"status", "not-a-number"},
          {"submit", "bench", "--shards", "0"},
          {"submit", "bench", "--shards", "2", "--size", "8"},
          {"token", "create", "--ttl", "forever"},
          {"no-such-command"}}) {
      CommandResult r = c->Cli(args);
      INFO(r.Describe());
      CHECK(r.exit_code != 0);
      CHECK(!r.timed_out);
      CHECK(!Trim(r.err).empty());
    }
    // Nothing was submitted by the bad submits.
    CHECK(DbInt(&c.c, "SELECT count(*) FROM jobs") == 0);
  }
  SECTION("the happy path, for contrast") {
    CommandResult r = c->Cli({"jobs"});
    INFO(r.Describe());
    CHECK(r.exit_code == 0);
  }
}

TEST_CASE("a result computed while the coordinator is down is delivered "
          "from the spool",
          "[integration]") {
  MiniClusterOptions o;
  o.lease_ms = 120'000;  // the lease must outlive the outage
  Cluster c(o);
  StartCluster(&c.c, 1);
  int64_t job = 0, attempt = 0;
  // The shard must still be running when the coordinator stops; if it was
  // too quick, try again with a bigger one.
  for (int size : {768, 1280, 2048, 3072}) {
    auto submitted = c->SubmitBench(1, size, 1, 3);
    REQUIRE_OK(submitted);
    job = *submitted;
    // Its attempt, leased or (on a quick machine) already answered.
    std::string attempt_sql = "SELECT id FROM attempts WHERE job_id=" +
                              std::to_string(job);
    REQUIRE(WaitUntil([&] { return c->db().QueryInt(attempt_sql).ok(); },
                      30'000, 2));
    attempt = DbInt(&c.c, attempt_sql);
    REQUIRE_OK(c->StopCoordinator(10'000, /*require_clean_exit=*/false));
    int64_t delivered = DbInt(&c.c, "SELECT count(*) FROM results WHERE attempt_id=" +
                                        std::to_string(attempt));
    if (delivered == 0) break;
    WARN("shard of size " << size << " finished before the stop; trying bigger");
    REQUIRE_OK(c->StartCoordinator());
    attempt = 0;
  }
  REQUIRE(attempt != 0);
  // The worker finishes while the coordinator is away and spools the result.
  REQUIRE(WaitUntil([&] { return HasSpooledResult(c->worker_dir(0)); },
                    60'000, 10));
  REQUIRE_OK(c->KillWorker(0));
  int64_t restart_ms = NowMs();
  REQUIRE_OK(c->StartWorker(0));
  REQUIRE_OK(c->StartCoordinator());
  auto end = c->WaitForJobEnd(job, 60'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  // The spooled result of the original attempt came in after the restart,
  // and no other attempt was needed.
  auto rows = DbRows(&c.c, "SELECT attempt_id, received_ms FROM results WHERE "
                           "shard_id IN (SELECT id FROM shards WHERE job_id=" +
                               std::to_string(job) + ")");
  REQUIRE(rows.size() == 1);
  CHECK(std::stoll(rows[0][0]) == attempt);
  CHECK(std::stoll(rows[0][1]) >= restart_ms);
  CHECK(DbInt(&c.c, "SELECT count(*) FROM attempts WHERE job_id=" +
                        std::to_string(job)) == 1);
  CheckJobInvariants(&c.c, job, 1, 1);
  // Delivered and ACKed: the spool is empty again.
  CHECK(WaitUntil([&] { return !HasSpooledResult(c->worker_dir(0)); }, 10'000));
}

}  // namespace
}  // namespace pcfarm
