// Riding out coordinator restarts (issue "Ride out coordinator restarts"):
// `pcfarm wait` keeps waiting through five restarts of a real coordinator
// (kill -9 and SIGTERM in turn) and exits 0 when its job succeeds; a submit
// sent again with its request key (its reply lost in a restart) makes one
// job; and every `pcfarm submit` makes its own.
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/cli/cli_common.h"
#include "coordinator/cli/client.h"
#include "coordinator/client_profile.h"
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

using nlohmann::json;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos;
       p = text.find(what, p + 1))
    ++n;
  return n;
}

void SleepMs(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Shards with more than one attempt that ran to its end (returned).
constexpr char kShardsReturnedTwice[] =
    "SELECT COUNT(*) FROM (SELECT shard_id FROM attempts WHERE state='returned' "
    "GROUP BY shard_id HAVING COUNT(*) > 1)";

// A bench SubmitRequest of `shards` small shards.
wire::ClientRequest BenchSubmit(int shards, const std::string& request_key) {
  wire::ClientRequest req;
  auto* s = req.mutable_submit();
  s->set_kind("bench");
  s->set_redundancy(1);
  s->set_params(json{{"size", 32}, {"reps", 1}}.dump());
  for (int i = 0; i < shards; ++i) {
    s->add_shard_params(json{{"n", 32}, {"seed", i + 1}, {"reps", 1}}.dump());
  }
  s->set_request_key(request_key);
  return req;
}

TEST_CASE("pcfarm wait rides out five coordinator restarts",
          "[integration][restart]") {
  Cluster c;
  StartCluster(&c.c, 1);
  // Long enough for one worker to still be busy after the five restarts
  // (it accepts some 20 shards a second here, and the coordinator is up for
  // a few seconds of them, and a CI machine is some times faster); more
  // workers finish it afterwards.
  const int kShards = 2500;
  auto job = c->SubmitBench(kShards, 256, 1, 3);
  REQUIRE_OK(job);
  const std::string j = std::to_string(*job);
  const std::string log = c->dir() + "/wait.log";
  ChildProcess waiter;
  REQUIRE_OK(waiter.Start(
      {c->Binary("pcfarm"), "--profile", c->admin_profile(), "--timeout", "1",
       "wait", j, "--poll", "0.2", "--max-wait", "600"},
      log));
  REQUIRE(WaitUntil([&] { return Count(ReadAll(log), "shards accepted") > 0; },
                    10'000));
  for (int i = 0; i < 5; ++i) {
    INFO("restart " << i + 1 << "; wait's output: " << ReadAll(log));
    REQUIRE(waiter.running());
    REQUIRE(
        DbInt(&c.c, "SELECT state IN ('queued','running') FROM jobs WHERE id=" +
                        j) == 1);
    if (i % 2 == 0) {
      REQUIRE_OK(c->KillCoordinator());
    } else {
      // A graceful stop is prompt (within 5 s).
      auto t0 = std::chrono::steady_clock::now();
      REQUIRE_OK(c->StopCoordinator());
      CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
    }
    // Down for longer than wait's --timeout, so some request of it goes
    // unanswered.
    SleepMs(2500);
    REQUIRE_OK(c->StartCoordinator());
    // Wait said the coordinator was unreachable, and that it answers again.
    REQUIRE(WaitUntil(
        [&] { return Count(ReadAll(log), "answers again") == size_t(i + 1); },
        30'000));
    // And the worker is back at work before the next restart.
    int64_t accepted =
        DbInt(&c.c, "SELECT shards_accepted FROM jobs WHERE id=" + j);
    REQUIRE(WaitUntil(
        [&] {
          return DbInt(&c.c, "SELECT shards_accepted FROM jobs WHERE id=" + j) >
                 accepted;
        },
        30'000));
  }
  int64_t accepted =
      DbInt(&c.c, "SELECT shards_accepted FROM jobs WHERE id=" + j);
  INFO("accepted after the restarts: " << accepted);
  REQUIRE(accepted < kShards);
  REQUIRE_OK(c->AddWorker("w1"));
  REQUIRE_OK(c->AddWorker("w2"));
  REQUIRE_OK(c->AddWorker("w3"));
  REQUIRE_OK(waiter.Wait(300'000));
  std::string out = ReadAll(log);
  INFO("wait's output: " << out);
  CHECK(waiter.exit_code() == 0);
  CHECK(Count(out, "is unreachable since") == 5);
  CHECK(Count(out, "answers again") == 5);
  CHECK(Count(out, "still waiting for job " + j) == 10);
  CHECK(out.find("state:      succeeded") != std::string::npos);
  CHECK(DbInt(&c.c, "SELECT state='succeeded' FROM jobs WHERE id=" + j) == 1);
  CHECK(DbInt(&c.c, "SELECT shards_accepted FROM jobs WHERE id=" + j) ==
        kShards);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 1);
  // No shard ran to its end twice, through kill -9 and SIGTERM alike.
  CHECK(DbInt(&c.c, kShardsReturnedTwice) == 0);
}

TEST_CASE(
    "pcfarm wait gives up at --max-wait while the coordinator is away, and "
    "not for a refusal",
    "[integration][restart]") {
  Cluster c;
  StartCluster(&c.c, 0);
  auto job = c->SubmitBench(1, 32, 1);
  REQUIRE_OK(job);
  const std::string j = std::to_string(*job);
  // An unknown job is a refusal: it ends the wait at once.
  CommandResult unknown = c->Cli({"wait", "999"}, 1, 10'000);
  INFO(unknown.Describe());
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.err.find("no job 999") != std::string::npos);
  CHECK(unknown.seconds < 3);

  REQUIRE_OK(c->StopCoordinator());
  CommandResult r =
      c->Cli({"wait", j, "--poll", "0.2", "--max-wait", "4"}, 1, 30'000);
  INFO(r.Describe());
  CHECK(r.exit_code == 1);
  CHECK(r.seconds >= 4);
  CHECK(r.seconds < 10);
  CHECK(Count(r.err, "is unreachable since") == 1);
  CHECK(r.err.find("gave up waiting after --max-wait 4 s") !=
        std::string::npos);
}

TEST_CASE("a submit sent again with its request key makes one job",
          "[integration][restart]") {
  Cluster c;
  StartCluster(&c.c, 0);
  auto admin = LoadClientProfile(c->admin_profile());
  REQUIRE_OK(admin);
  const std::string key = NewRequestKey();
  REQUIRE(key.size() == 32);
  wire::ClientRequest req = BenchSubmit(4, key);
  uint64_t first = 0;
  {
    CoordinatorClient client(*admin, 5'000);
    auto r = client.Call(req);
    REQUIRE_OK(r);
    first = r->submit().job_id();
  }
  // The reply is lost in a kill -9; the CLI sends the same request again,
  // on a new connection, to the restarted coordinator.
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  CoordinatorClient client(*admin, 5'000);
  auto again = client.Call(req);
  REQUIRE_OK(again);
  CHECK(again->submit().job_id() == first);
  // And once more after a clean restart, on the same connection.
  REQUIRE_OK(c->StopCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  auto third = client.Call(req);
  REQUIRE_OK(third);
  CHECK(third->submit().job_id() == first);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 1);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards") == 4);
  auto rows = DbRows(&c.c, "SELECT request_key FROM jobs");
  REQUIRE(rows.size() == 1);
  CHECK(rows[0][0] == key);

  // Keys are per client: another user's submit with the same key is its own.
  CommandResult added = c->Cli(
      {"client", "add", "--name", "bob", "--out", c->dir() + "/bob.profile"});
  INFO(added.Describe());
  REQUIRE(added.exit_code == 0);
  auto bob_profile = LoadClientProfile(c->dir() + "/bob.profile");
  REQUIRE_OK(bob_profile);
  CoordinatorClient bob(*bob_profile, 5'000);
  auto bobs = bob.Call(req);
  REQUIRE_OK(bobs);
  CHECK(bobs->submit().job_id() != first);
  auto bobs_again = bob.Call(req);
  REQUIRE_OK(bobs_again);
  CHECK(bobs_again->submit().job_id() == bobs->submit().job_id());
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 2);

  // A key that is not 32..64 lowercase hex digits is refused.
  for (const std::string& bad :
       {std::string("abc"), std::string(32, 'G'), std::string(65, 'a')}) {
    INFO("key " << bad);
    auto r = client.Call(BenchSubmit(1, bad));
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == (bad.size() > 64
                                    ? StatusCode::kResourceExhausted
                                    : StatusCode::kInvalidArgument));
  }
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 2);
}

TEST_CASE("each pcfarm submit makes its own job, also across an outage",
          "[integration][restart]") {
  Cluster c;
  StartCluster(&c.c, 0);
  auto a = c->SubmitBench(2, 32, 1);
  auto b = c->SubmitBench(2, 32, 1);
  REQUIRE_OK(a);
  REQUIRE_OK(b);
  CHECK(*a != *b);
  auto keys = DbRows(&c.c, "SELECT request_key FROM jobs ORDER BY id");
  REQUIRE(keys.size() == 2);
  CHECK(keys[0][0].size() == 32);
  CHECK(keys[1][0].size() == 32);
  CHECK(keys[0][0] != keys[1][0]);

  // A submit while the coordinator is away: its first try gets no answer
  // within --timeout 1, a later one (same key) does. One job more.
  REQUIRE_OK(c->StopCoordinator());
  ChildProcess submit;
  const std::string log = c->dir() + "/submit.log";
  REQUIRE_OK(submit.Start(
      {c->Binary("pcfarm"), "--profile", c->admin_profile(), "--timeout", "1",
       "submit", "bench", "--shards", "2", "--size", "32", "--json"},
      log));
  SleepMs(1500);
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(submit.Wait(30'000));
  INFO(ReadAll(log));
  CHECK(submit.exit_code() == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 3);
  CHECK(DbInt(&c.c, "SELECT COUNT(DISTINCT request_key) FROM jobs") == 3);

  // With the coordinator away for good: kSubmitTries tries, one line.
  REQUIRE_OK(c->StopCoordinator());
  CommandResult r =
      c->Cli({"submit", "bench", "--shards", "1", "--size", "32"}, 1, 30'000);
  INFO(r.Describe());
  CHECK(r.exit_code == 1);
  CHECK(Count(r.err, "\n") == 1);
  CHECK(r.err.find("sent 3 times") != std::string::npos);
  CHECK(r.seconds < 10);
}

TEST_CASE(
    "a rolling restart by SIGTERM counts no worker lost and re-runs no "
    "returned shard",
    "[integration][restart]") {
  // A liveness of 2 s (not 600 ms): on a loaded machine a sanitizer-built
  // worker can fall silent that long while it works, and this tests the
  // restart, not the silence.
  // The workers likewise: with their default 600 ms, one dropped its first
  // connection to a restarted coordinator that was slow to WELCOME it, and
  // the coordinator then counted that connection's silence as a lost worker.
  MiniClusterOptions o;
  o.heartbeat_liveness = 10;
  o.worker_heartbeat_liveness = 10;
  Cluster c(o);
  StartCluster(&c.c, 3);
  const int kShards = 400;
  auto job = c->SubmitBench(kShards, 256, 1, 3);
  REQUIRE_OK(job);
  const std::string j = std::to_string(*job);
  auto accepted = [&] {
    return DbInt(&c.c, "SELECT shards_accepted FROM jobs WHERE id=" + j);
  };
  for (int round = 0; round < 2; ++round) {
    INFO("restart " << round + 1);
    // All three are running shards of the job when it stops.
    REQUIRE(WaitUntil(
        [&] {
          return DbInt(&c.c, "SELECT COUNT(DISTINCT worker_id) FROM attempts "
                             "WHERE state='leased' AND job_id=" + j) == 3 &&
                 accepted() > 10 * (round + 1);
        },
        60'000, 5));
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE_OK(c->StopCoordinator());
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(took < std::chrono::seconds(5));
    CHECK(c->CoordinatorLog().find("coordinator stopping (3 workers connected)") !=
          std::string::npos);
    int64_t before = accepted();
    // Away for longer than the workers' liveness window (10 x 200 ms), as
    // an upgrade may be: told it is going away, a worker does not count
    // that silence as a lost coordinator.
    SleepMs(3500);
    REQUIRE_OK(c->StartCoordinator());
    REQUIRE_OK(c->WaitForConnectedWorkers(3, 30'000));
    REQUIRE(WaitUntil([&] { return accepted() > before; }, 30'000));
  }
  auto end = c->WaitForJobEnd(*job, 300'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  CHECK(accepted() == kShards);
  // No worker was lost: not by the coordinator that stopped, not by the one
  // that started (events are kept across restarts; counters are this run's).
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM events WHERE kind='worker_lost'") == 0);
  CHECK(Counter(&c.c, "workers_lost") == 0);
  // Their shards kept running through the restarts: none was leased again
  // (lost or expired), and none that had returned ran again.
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE state IN "
                    "('lost','expired')") == 0);
  CHECK(DbInt(&c.c, kShardsReturnedTwice) == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE job_id=" + j) == kShards);
  // The workers heard that it was going away, and did not count misses.
  // (In one CI run of the sanitizer build on a loaded machine, one worker
  // logged one GOING_AWAY of the two and no silence either; it lost
  // nothing, as checked above. So: at least once each, and a "back" for
  // every "going away".)
  for (int i = 0; i < 3; ++i) {
    std::string log = ReadAll(c->dir() + "/worker-" + std::to_string(i) + "-w" +
                              std::to_string(i) + ".log");
    INFO("worker " << i << " log:\n" << log.substr(log.size() > 4000 ? log.size() - 4000 : 0));
    const size_t away = Count(log, "the coordinator is going away");
    CHECK(away >= 1);
    CHECK(away <= 2);
    CHECK(Count(log, "the coordinator is back") == away);
    CHECK(Count(log, "coordinator silent") == 0);
  }
}

TEST_CASE("SIGTERM to a worker releases its running shard within 5 s",
          "[integration][restart]") {
  MiniClusterOptions o;
  o.lease_ms = 120'000;  // the shard below takes longer than the default 15 s
  Cluster c(o);
  StartCluster(&c.c, 1);
  // One shard of some seconds even on a many-core machine: 100 products of
  // 2048 x 2048 matrices (1.7 TFLOP; with 1024 x 1024 a CI machine's
  // OpenBLAS on every core may finish it within the 300 ms below).
  auto job = c->SubmitBench(1, 2048, 1, 100);
  REQUIRE_OK(job);
  const std::string j = std::to_string(*job);
  const std::string log = c->dir() + "/worker-0-w0.log";
  REQUIRE(WaitUntil([&] { return Count(ReadAll(log), "accepted: bench") == 1; },
                    30'000));
  SleepMs(300);
  REQUIRE(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE state='leased'") == 1);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE_OK(c->StopWorker(0, 10'000));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  INFO(ReadAll(log));
  CHECK(Count(ReadAll(log), "stopping: 1 running shards released") == 1);
  // Released at once (its BYE), not when its lease expires.
  REQUIRE(WaitUntil(
      [&] {
        return DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE state='leased'") == 0;
      },
      5'000));
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE state='pending'") == 1);
  REQUIRE_OK(c->AddWorker("w1"));
  auto end = c->WaitForJobEnd(*job, 120'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");
  CHECK(DbInt(&c.c, kShardsReturnedTwice) == 0);
}

}  // namespace
}  // namespace pcfarm
