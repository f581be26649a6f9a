#include "coordinator/scheduler.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

namespace pcfarm {
namespace {

constexpr int64_t kMiB = 1 << 20;

struct SchedFixture {
  std::string dir;
  FakeClock clock;
  std::unique_ptr<Store> store;
  std::unique_ptr<Scheduler> sched;
  DeviceCaps cpu{{{"cpu", 1024 * kMiB}}};

  explicit SchedFixture(SchedulerOptions opts = {}) {
    char tmpl[] = "/tmp/pcfarm_sched_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto s = Store::Open(dir + "/state.db", &clock);
    REQUIRE(s.ok());
    store = std::move(s).value();
    sched = std::make_unique<Scheduler>(store.get(), opts);
  }
  ~SchedFixture() {
    sched.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
  int64_t Worker(const std::string& name) {
    auto id = store->AddWorker(name, "sign-" + name, "curve-" + name);
    REQUIRE(id.ok());
    return *id;
  }
  // A worker enrolled with the token whose secret hash is `token_hash`
  // (made on first use).
  int64_t Enrolled(const std::string& name, const std::string& token_hash) {
    (void)store->AddToken(token_hash, 100, clock.NowMs() + 3'600'000);  // AlreadyExists after
    auto id = store->EnrollWorker(token_hash, name, "sign-" + name, "curve-" + name);
    REQUIRE(id.ok());
    return *id;
  }
  int64_t Job(int shards, int redundancy = 1, int priority = 0,
              const std::string& kind = "infer") {
    JobSpec spec;
    spec.kind = kind;
    spec.params = "{}";
    spec.priority = priority;
    spec.redundancy = redundancy;
    for (int i = 0; i < shards; ++i) {
      spec.shards.push_back({"params-" + std::to_string(i), "", 0});
    }
    auto id = store->CreateJob(spec);
    REQUIRE(id.ok());
    return *id;
  }
  int64_t PolicyJob(int shards, VerifyPolicy verify, const std::string& kind = "infer") {
    JobSpec spec;
    spec.kind = kind;
    spec.params = "{}";
    spec.verify = verify;
    for (int i = 0; i < shards; ++i) {
      spec.shards.push_back({"params-" + std::to_string(i), "", 0});
    }
    auto id = store->CreateJob(spec);
    REQUIRE(id.ok());
    return *id;
  }
  Lease MustLease(int64_t worker) {
    auto l = sched->LeaseNext(worker, cpu);
    INFO(l.status().ToString());
    REQUIRE(l.ok());
    REQUIRE(l->has_value());
    return **l;
  }
  bool NoLease(int64_t worker) {
    auto l = sched->LeaseNext(worker, cpu);
    REQUIRE(l.ok());
    return !l->has_value();
  }
  RecordOutcome MustRecord(const Lease& l, int64_t worker,
                           const std::string& body) {
    auto r = sched->RecordResult(l.attempt_id, worker, body, "sig");
    REQUIRE(r.ok());
    return *r;
  }
  // An open-ended finetune job (verify auto) with round 1's one shard.
  static JobSpec FinetuneSpec() {
    JobSpec spec;
    spec.kind = "finetune";
    spec.params = "{}";
    spec.verify = VerifyPolicy::kAuto;
    spec.open_ended = true;
    spec.shards = {{"round-1", "", 0}};
    return spec;
  }
  std::string ShardState(int64_t job, int idx) {
    return (*store->ListShards(job))[idx].state;
  }
  // The first column of the first row of `sql`, on a connection of its own.
  int64_t DbInt(const char* sql) {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open_v2((dir + "/state.db").c_str(), &h, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(h, sql, -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    const int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return v;
  }
};

struct MaxThree : SchedFixture {
  MaxThree() : SchedFixture(SchedulerOptions{60000, 3}) {}
};

TEST_CASE_METHOD(SchedFixture, "a lease starts the job and carries the shard",
                 "[scheduler]") {
  int64_t w = Worker("pc-1");
  int64_t job = Job(1);
  CHECK(store->GetJob(job)->state == "queued");
  Lease l = MustLease(w);
  CHECK(l.job_id == job);
  CHECK(l.shard_idx == 0);
  CHECK(l.job_kind == "infer");
  CHECK(l.shard_params == "params-0");
  CHECK(l.deadline_ms == clock.NowMs() + 60000);
  CHECK(store->GetJob(job)->state == "running");
  CHECK(ShardState(job, 0) == "leased");
  // Redundancy 1: nobody else gets the leased shard.
  CHECK(NoLease(Worker("pc-2")));
  CHECK(NoLease(w));
  CHECK(sched->LeaseNext(999, cpu).status().code() == StatusCode::kNotFound);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "copies of a shard go to workers of different tokens and networks",
                 "[scheduler][sybil]") {
  // Two identities from one multi-use token (one person) cannot make up a
  // shard's redundancy, nor its re-run after a disagreement.
  int64_t s1 = Enrolled("sybil-1", "token-s"), s2 = Enrolled("sybil-2", "token-s");
  int64_t h1 = Enrolled("honest-1", "token-h1"), h2 = Enrolled("honest-2", "token-h2");
  CHECK(store->GetWorker(s1)->token_id == store->GetWorker(s2)->token_id);
  CHECK(store->GetWorker(s1)->token_id != 0);
  int64_t job = Job(1, 2);
  Lease a = MustLease(s1);
  CHECK(ShardState(job, 0) == "pending");
  CHECK(NoLease(s2));  // same token as the live copy's worker
  Lease b = MustLease(h1);
  CHECK(a.shard_id == b.shard_id);
  MustRecord(a, s1, "forged");
  CHECK(MustRecord(b, h1, "honest").verdict == ResultVerdict::kDisagreed);
  CHECK(NoLease(s2));  // its token's copy was returned: still not independent
  Lease c = MustLease(h2);
  CHECK(MustRecord(c, h2, "honest").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");

  // Workers added without a token (0) are told apart by their public
  // network when it is known; private and unknown networks say nothing.
  int64_t n1 = Worker("net-1"), n2 = Worker("net-2"), n3 = Worker("net-3"), n4 = Worker("lan-4");
  REQUIRE(store->SetWorkerNetwork(n1, "v4:203.0.113.0/24").ok());
  REQUIRE(store->SetWorkerNetwork(n2, "v4:203.0.113.0/24").ok());
  REQUIRE(store->SetWorkerNetwork(n3, "v4:198.51.100.0/24").ok());
  CHECK(store->GetWorker(n2)->network == "v4:203.0.113.0/24");
  int64_t job2 = Job(1, 3);
  Lease d = MustLease(n1);
  CHECK(d.job_id == job2);
  CHECK(NoLease(n2));
  MustLease(n3);
  MustLease(n4);  // no token, no network: independent of everyone
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE("EarnedSpeed: a claimed speed counts once earned, and as far as measured",
          "[scheduler]") {
  MeasuredSpeed m{3 * 10e9, 3.0, 3};  // 10 GFLOP/s measured over three shards
  CHECK(EarnedSpeed(15, 10, m) == 15);            // within the slack: as claimed
  CHECK(EarnedSpeed(1000, 10, m) == Approx(20));  // a lie: 2x the measured
  CHECK(EarnedSpeed(15, 9, m) == 0);              // too few agreeing results
  CHECK(EarnedSpeed(15, 10, MeasuredSpeed{2e10, 2.0, 2}) == 0);  // too few measured
  CHECK(EarnedSpeed(0, 10, m) == 0);
  CHECK(EarnedSpeed(15, 10, MeasuredSpeed{0, 0, 5}) == 0);
}

TEST_CASE("IndependenceNetwork: public /24 and /48, nothing for private addresses",
          "[scheduler][sybil]") {
  CHECK(IndependenceNetwork("203.0.113.7") == "v4:203.0.113.0/24");
  CHECK(IndependenceNetwork("203.0.113.200:5555") == "v4:203.0.113.0/24");
  CHECK(IndependenceNetwork("::ffff:198.51.100.9") == "v4:198.51.100.0/24");
  CHECK(IndependenceNetwork("2001:db8:abcd:12::1") == "v6:2001:0db8:abcd::/48");
  CHECK(IndependenceNetwork("[2001:db8:abcd:12::1]:7071") == "v6:2001:0db8:abcd::/48");
  for (const char* none : {"127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.1", "192.168.1.20",
                           "169.254.3.3", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "::",
                           "fd00::1", "fe80::1", "", "garbage", "1.2.3", "[::1", "::ffff:10.0.0.1"}) {
    INFO(none);
    CHECK(IndependenceNetwork(none).empty());
  }
  CHECK_FALSE(IndependenceNetwork("172.32.0.1").empty());  // just outside 172.16/12
  CHECK_FALSE(IndependenceNetwork("100.128.0.1").empty());  // just outside 100.64/10
}

TEST_CASE_METHOD(SchedFixture, "a banned worker gets nothing and loses its work",
                 "[scheduler]") {
  int64_t bad = Worker("bad");
  int64_t job = Job(2, 2);
  Lease a = MustLease(bad);
  Lease b = MustLease(bad);  // the other shard
  MustRecord(a, bad, "r");
  auto report = store->BanWorker(bad, "test");
  REQUIRE(report.ok());
  REQUIRE(report->cancelled.size() == 1);
  CHECK(report->cancelled[0].attempt_id == b.attempt_id);
  CHECK(sched->LeaseNext(bad, cpu).status().code() ==
        StatusCode::kPermissionDenied);
  // Its unverified result no longer counts: two fresh workers are needed.
  int64_t w1 = Worker("w1"), w2 = Worker("w2");
  Lease l1 = MustLease(w1), l2 = MustLease(w2);
  CHECK(l1.shard_id == a.shard_id);
  CHECK(l2.shard_id == a.shard_id);
  CHECK(MustRecord(l1, w1, "r").verdict == ResultVerdict::kWaiting);
  CHECK(MustRecord(l2, w2, "r").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetWorker(bad)->agreed == 0);
  REQUIRE(store->CheckConsistency().ok());
  (void)job;
}

TEST_CASE_METHOD(SchedFixture, "backend and memory needs are respected",
                 "[scheduler]") {
  JobSpec spec;
  spec.kind = "train";
  spec.params = "{}";
  spec.shards = {{"big", "cuda", 8000 * kMiB}, {"any", "", 0}, {"roomy", "", 16000 * kMiB}};
  auto job = store->CreateJob(spec);
  REQUIRE(job.ok());
  int64_t cpu_pc = Worker("cpu-pc"), gpu_pc = Worker("gpu-pc"),
          small_gpu = Worker("small-gpu"), mixed = Worker("mixed");
  Lease l = MustLease(cpu_pc);
  CHECK(l.shard_params == "any");
  CHECK(l.needs_backend.empty());
  CHECK(l.needs_memory_bytes == 0);
  CHECK(NoLease(cpu_pc));
  auto none = sched->LeaseNext(small_gpu, DeviceCaps{{{"cuda", 4000 * kMiB}}});
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  // One device must hold both: 32000 MiB of CPU and a 4000 MiB GPU hold
  // "roomy" (any backend) but not "big" (CUDA, 8000 MiB).
  const DeviceCaps mixed_caps{{{"cpu", 32000 * kMiB}, {"cuda", 4000 * kMiB}}};
  auto got = sched->LeaseNext(mixed, mixed_caps);
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->shard_params == "roomy");
  CHECK((*got)->needs_backend.empty());
  CHECK((*got)->needs_memory_bytes == 16000 * kMiB);
  none = sched->LeaseNext(mixed, mixed_caps);
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());
  got = sched->LeaseNext(gpu_pc, DeviceCaps{{{"vulkan", 12000 * kMiB}, {"cuda", 12000 * kMiB}}});
  REQUIRE(got.ok());
  REQUIRE(got->has_value());
  CHECK((*got)->shard_params == "big");
  CHECK((*got)->needs_backend == "cuda");
  CHECK((*got)->needs_memory_bytes == 8000 * kMiB);
}

TEST_CASE("a worker's devices: the largest memory per backend", "[scheduler]") {
  const DeviceCaps caps{{{"cpu", 32 * kMiB}, {"cuda", 4 * kMiB}, {"cuda", 8 * kMiB}}};
  CHECK(caps.MemoryFor("") == 32 * kMiB);
  CHECK(caps.MemoryFor("cpu") == 32 * kMiB);
  CHECK(caps.MemoryFor("cuda") == 8 * kMiB);
  CHECK(caps.MemoryFor("vulkan") == -1);
  CHECK(DeviceCaps{}.MemoryFor("") == -1);
}

TEST_CASE_METHOD(SchedFixture, "priority first, then fair across jobs",
                 "[scheduler]") {
  int64_t low1 = Job(3, 1, 0);
  int64_t low2 = Job(3, 1, 0);
  int64_t high = Job(2, 1, 5);
  std::vector<int64_t> order;
  for (int i = 0; i < 8; ++i) order.push_back(MustLease(Worker("w" + std::to_string(i))).job_id);
  // Both high shards first, then the two low jobs alternate, older first.
  CHECK(order == std::vector<int64_t>{high, high, low1, low2, low1, low2, low1, low2});
}

TEST_CASE_METHOD(SchedFixture, "a lease its worker still runs is renewed, up to the longest attempt",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(1);
  Lease l = MustLease(w1);  // deadline 60 s on
  const int64_t start = clock.NowMs();
  auto renew = [&](int64_t worker) {
    auto r = store->RenewLeases(worker, {l.attempt_id, 99999}, 60'000, 150'000);
    REQUIRE(r.ok());
    return *r;
  };
  // More than half the lease left: nothing is written.
  clock.AdvanceMs(29'000);
  CHECK(renew(w1).empty());
  // Less than half: now + 60 s. Another worker cannot renew it.
  clock.AdvanceMs(2'000);
  CHECK(renew(w2).empty());
  auto r = renew(w1);
  REQUIRE(r.size() == 1);
  CHECK(r[0].attempt_id == l.attempt_id);
  CHECK(r[0].deadline_ms == start + 91'000);
  // Past the first deadline it still holds.
  clock.AdvanceMs(40'000);  // start + 71 s
  CHECK(sched->ExpireLeases()->released_attempts.empty());
  // Renewals stop at 150 s from the lease: then it expires as before.
  r = renew(w1);
  REQUIRE(r.size() == 1);
  CHECK(r[0].deadline_ms == start + 131'000);
  clock.AdvanceMs(40'000);  // start + 111 s
  r = renew(w1);
  REQUIRE(r.size() == 1);
  CHECK(r[0].deadline_ms == start + 150'000);
  clock.AdvanceMs(30'000);  // start + 141 s
  CHECK(renew(w1).empty());  // capped
  clock.AdvanceMs(9'000);
  auto report = sched->ExpireLeases();
  REQUIRE(report.ok());
  CHECK(report->released_attempts == std::vector<int64_t>{l.attempt_id});
  CHECK(renew(w1).empty());  // an expired attempt is not renewed
  CHECK((*store->ListShards(job))[0].state == "pending");
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "an expired lease goes back to pending",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(1);
  Lease l = MustLease(w1);
  clock.AdvanceMs(59999);
  CHECK(sched->ExpireLeases()->released_attempts.empty());
  clock.AdvanceMs(1);
  auto report = sched->ExpireLeases();
  REQUIRE(report.ok());
  CHECK(report->released_attempts == std::vector<int64_t>{l.attempt_id});
  auto shard = (*store->ListShards(job))[0];
  CHECK(shard.state == "pending");
  CHECK(shard.attempts_failed == 1);
  // Never the same shard to the same worker twice.
  CHECK(NoLease(w1));
  Lease again = MustLease(w2);
  CHECK(again.shard_id == l.shard_id);
  // The late result of the expired attempt is refused.
  auto late = sched->RecordResult(l.attempt_id, w1, "late", "sig");
  CHECK(late.status().code() == StatusCode::kFailedPrecondition);
  CHECK(MustRecord(again, w2, "ok").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "a lost worker's shards are re-issued",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(2);
  Lease a = MustLease(w1), b = MustLease(w1);
  auto report = sched->WorkerLost(w1);
  REQUIRE(report.ok());
  CHECK(report->released_attempts.size() == 2);
  CHECK(ShardState(job, 0) == "pending");
  CHECK(ShardState(job, 1) == "pending");
  CHECK(MustLease(w2).shard_id == a.shard_id);
  CHECK(MustLease(w2).shard_id == b.shard_id);
  CHECK(sched->WorkerLost(999).status().code() == StatusCode::kNotFound);
  auto events = store->ListEvents();
  bool seen = false;
  for (auto& e : *events) seen |= e.kind == "attempt_lost";
  CHECK(seen);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(MaxThree, "past the retry limit the job fails with a reason",
                 "[scheduler]") {
  int64_t job = Job(2);
  Lease other;
  for (int i = 1; i <= 3; ++i) {
    int64_t w = Worker("pc-" + std::to_string(i));
    Lease l = MustLease(w);
    if (i == 1) {
      other = MustLease(Worker("keeper"));  // shard 1, stays leased
      CHECK(l.shard_idx == 0);
    }
    REQUIRE(l.shard_idx == 0);
    clock.AdvanceMs(30000);
    if (i < 3) {
      REQUIRE(sched->WorkerLost(w).ok());
      CHECK(store->GetJob(job)->state == "running");
    } else {
      clock.AdvanceMs(30000);
      auto report = sched->ExpireLeases();
      REQUIRE(report.ok());
      CHECK(report->failed_jobs == std::vector<int64_t>{job});
    }
  }
  auto info = store->GetJob(job);
  CHECK(info->state == "failed");
  CHECK(info->reason == "shard 0 of job " + std::to_string(job) +
                            " failed 3 times: lease expired on worker 'pc-3'");
  CHECK(ShardState(job, 0) == "failed");
  CHECK(ShardState(job, 1) == "cancelled");
  CHECK(NoLease(Worker("late")));
  REQUIRE(store->CheckConsistency().ok());
  (void)other;
}

TEST_CASE_METHOD(SchedFixture, "redundancy 2 accepts when two workers agree",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2"), w3 = Worker("pc-3");
  int64_t job = Job(1, 2);
  Lease a = MustLease(w1);
  CHECK(ShardState(job, 0) == "pending");  // wants a second attempt
  Lease b = MustLease(w2);
  CHECK(a.shard_id == b.shard_id);
  CHECK(ShardState(job, 0) == "leased");
  CHECK(NoLease(w3));
  CHECK(MustRecord(a, w1, "answer").verdict == ResultVerdict::kWaiting);
  CHECK(store->AcceptedResults(job)->empty());
  RecordOutcome o = MustRecord(b, w2, "answer");
  CHECK(o.verdict == ResultVerdict::kAccepted);
  CHECK(o.job_finished);
  auto info = store->GetJob(job);
  CHECK(info->state == "succeeded");
  CHECK(info->shards_accepted == 1);
  auto results = store->AcceptedResults(job);
  REQUIRE(results->size() == 1);
  CHECK((*results)[0].shard_idx == 0);
  CHECK((*results)[0].body == "answer");
  for (int64_t w : {w1, w2}) {
    auto info = store->GetWorker(w);
    CHECK(info->agreed == 1);
    CHECK(info->trust == Approx(2.0 / 3.0));
  }
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture,
                 "disagreement schedules a third run and the odd one loses trust",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2"), w3 = Worker("pc-3"),
          w4 = Worker("pc-4");
  int64_t job = Job(1, 2);
  Lease a = MustLease(w1), b = MustLease(w2);
  MustRecord(a, w1, "right");
  RecordOutcome o = MustRecord(b, w2, "wrong");
  CHECK(o.verdict == ResultVerdict::kDisagreed);
  CHECK_FALSE(o.job_finished);
  CHECK(ShardState(job, 0) == "pending");
  CHECK((*store->ListShards(job))[0].attempts_failed == 1);
  CHECK(NoLease(w1));
  Lease c = MustLease(w3);
  CHECK(c.shard_id == a.shard_id);
  CHECK(NoLease(w4));  // one more agreeing result is all it needs
  CHECK(MustRecord(c, w3, "right").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  CHECK((*store->AcceptedResults(job))[0].body == "right");
  auto odd = store->GetWorker(w2);
  CHECK(odd->disagreed == 1);
  CHECK(odd->agreed == 0);
  CHECK(odd->trust == Approx(1.0 / 3.0));
  CHECK(store->GetWorker(w1)->trust > 0.5);
  CHECK(store->GetWorker(w3)->agreed == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(MaxThree, "results that never agree fail the job",
                 "[scheduler]") {
  int64_t job = Job(1, 2);
  std::vector<int64_t> ws;
  for (int i = 0; i < 4; ++i) ws.push_back(Worker("pc-" + std::to_string(i)));
  Lease a = MustLease(ws[0]), b = MustLease(ws[1]);
  MustRecord(a, ws[0], "x");
  MustRecord(b, ws[1], "y");
  MustRecord(MustLease(ws[2]), ws[2], "z");
  RecordOutcome o = MustRecord(MustLease(ws[3]), ws[3], "w");
  CHECK(o.job_finished);
  CHECK(o.report.failed_jobs == std::vector<int64_t>{job});
  auto info = store->GetJob(job);
  CHECK(info->state == "failed");
  CHECK(info->reason.find("failed 3 times: results disagree") != std::string::npos);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "a comparator registered for a kind is used",
                 "[scheduler]") {
  sched->verifier().Register("train", [](std::string_view a, std::string_view b) {
    return a.substr(0, 4) == b.substr(0, 4);  // stands in for a tolerance
  });
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(1, 2, 0, "train");
  Lease a = MustLease(w1), b = MustLease(w2);
  MustRecord(a, w1, "loss1.0001");
  CHECK(MustRecord(b, w2, "loss1.0002").verdict == ResultVerdict::kAccepted);
  CHECK((*store->AcceptedResults(job))[0].body == "loss1.0001");
}

TEST_CASE_METHOD(SchedFixture, "replays, strangers and unknown attempts",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(2);
  Lease a = MustLease(w1);
  CHECK(sched->RecordResult(a.attempt_id, w2, "r", "s").status().code() ==
        StatusCode::kPermissionDenied);
  CHECK(sched->RecordResult(12345, w1, "r", "s").status().code() ==
        StatusCode::kNotFound);
  CHECK(MustRecord(a, w1, "r").verdict == ResultVerdict::kAccepted);
  // The same result again (a replay, or a resend after a lost ACK).
  auto replay = sched->RecordResult(a.attempt_id, w1, "r", "s");
  CHECK(replay.status().code() == StatusCode::kAlreadyExists);
  auto forged = sched->RecordResult(a.attempt_id, w1, "other", "s");
  CHECK(forged.status().code() == StatusCode::kAlreadyExists);
  // The shard was accepted exactly once.
  auto info = store->GetJob(job);
  CHECK(info->shards_accepted == 1);
  CHECK(info->state == "running");
  CHECK((*store->AcceptedResults(job))[0].body == "r");
  CHECK(store->GetWorker(w1)->agreed == 1);
  // The other shard is still there to run; the accepted one is not re-issued.
  Lease b = MustLease(w2);
  CHECK(b.shard_idx == 1);
  CHECK(NoLease(w2));
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "cancel stops live attempts", "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(3);
  Lease a = MustLease(w1), b = MustLease(w2);
  auto report = store->CancelJob(job, "changed my mind");
  REQUIRE(report.ok());
  REQUIRE(report->cancelled.size() == 2);
  CHECK(report->cancelled[0].attempt_id == a.attempt_id);
  CHECK(report->cancelled[0].worker_id == w1);
  CHECK(report->cancelled[1].attempt_id == b.attempt_id);
  CHECK(sched->RecordResult(a.attempt_id, w1, "r", "s").status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(NoLease(Worker("pc-3")));
  auto info = store->GetJob(job);
  CHECK(info->state == "cancelled");
  CHECK(info->reason == "changed my mind");
  clock.AdvanceMs(120000);
  CHECK(sched->ExpireLeases()->released_attempts.empty());
  REQUIRE(store->CheckConsistency().ok());
}

// ---- verification policies (verify_policy.h) ----

TEST_CASE_METHOD(SchedFixture, "auto: a new worker's result waits for an independent check",
                 "[scheduler][verify]") {
  int64_t a1 = Enrolled("alice-1", "token-a"), a2 = Enrolled("alice-2", "token-a");
  int64_t b = Enrolled("bob", "token-b");
  int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
  CHECK(store->GetJob(job)->verify == VerifyPolicy::kAuto);
  Lease l = MustLease(a1);
  RecordOutcome first = MustRecord(l, a1, "answer");
  CHECK(first.verdict == ResultVerdict::kWaiting);
  CHECK(first.check_ordered);
  CHECK(ShardState(job, 0) == "pending");
  CHECK(NoLease(a2));  // the same token cannot check it
  Lease c = MustLease(b);
  CHECK(c.shard_id == l.shard_id);
  RecordOutcome second = MustRecord(c, b, "answer");
  CHECK(second.verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  for (int64_t w : {a1, b}) {
    auto info = store->GetWorker(w);
    CHECK(info->checks == 1);
    CHECK(info->streak == 1);
    CHECK(info->strikes == 0);
  }
  auto v = store->GetJobVerification(job);
  REQUIRE(v.ok());
  CHECK(v->checked_shards == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture,
                 "auto: an untrusted worker with kMaxAwaitingCheck results awaiting checks "
                 "takes no new first copy",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  int64_t job = PolicyJob(8, VerifyPolicy::kAuto);
  std::vector<Lease> firsts;
  for (int i = 0; i < kMaxAwaitingCheck; ++i) {
    firsts.push_back(MustLease(a));
    REQUIRE(MustRecord(firsts.back(), a, "answer").check_ordered);
  }
  // Four shards wait for bob's checks: alice gets nothing more, though four
  // shards were never run.
  CHECK(NoLease(a));
  // A check decided frees one place.
  Lease c = MustLease(b);
  CHECK(c.shard_id == firsts[0].shard_id);
  CHECK(MustRecord(c, b, "answer").verdict == ResultVerdict::kAccepted);
  Lease next = MustLease(a);
  CHECK(next.shard_idx == kMaxAwaitingCheck);
  REQUIRE(MustRecord(next, a, "answer").check_ordered);
  CHECK(NoLease(a));
  // The cap counts results of running jobs only: a cancelled job's
  // pending results do not hold alice back.
  REQUIRE(store->CancelJob(job, "test").ok());
  PolicyJob(2, VerifyPolicy::kAuto);
  REQUIRE(MustRecord(MustLease(a), a, "answer").check_ordered);
  Lease bl = MustLease(b);
  CHECK(bl.shard_idx == 0);  // bob checks the shard alice ran
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "auto: a trusted worker is spot-checked as the die says",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  int64_t carol = Enrolled("carol", "token-c");
  double roll = 0.5;
  sched->set_check_die([&] { return roll; });
  // Ten checked agreements make alice's streak 10: p = 1 still; at 20, 0.5.
  // Bob and carol check her in turn (nobody is available: the worker that
  // asks takes the check); one checker alone would not lengthen it.
  int checks = 0;
  for (int i = 0; i < 20; ++i) {
    int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
    Lease l = MustLease(a);
    RecordOutcome o = MustRecord(l, a, "ok");
    if (o.check_ordered) {
      const int64_t checker = checks++ % 2 == 0 ? b : carol;
      Lease c = MustLease(checker);
      CHECK(MustRecord(c, checker, "ok").verdict == ResultVerdict::kAccepted);
    }
    CHECK(store->GetJob(job)->state == "succeeded");
  }
  auto info = store->GetWorker(a);
  CHECK(info->streak == 20);
  CHECK(info->checks >= 10);
  // At streak 20 p = 0.5: a roll of 0.5 passes unchecked; then at streak
  // 21 p = 10/21 = 0.476: 0.47 is checked.
  int64_t j1 = PolicyJob(1, VerifyPolicy::kAuto);
  CHECK(MustRecord(MustLease(a), a, "ok").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(j1)->state == "succeeded");
  CHECK(store->GetWorker(a)->streak == 21);
  roll = 0.47;
  int64_t j2 = PolicyJob(1, VerifyPolicy::kAuto);
  CHECK(MustRecord(MustLease(a), a, "ok").check_ordered);
  CHECK(store->GetJob(j2)->state == "running");
  CHECK(MustRecord(MustLease(b), b, "ok").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(j2)->state == "succeeded");
  // none never checks; a redundant job of redundancy 1 neither.
  roll = 0;
  int64_t j3 = PolicyJob(1, VerifyPolicy::kNone);
  CHECK(MustRecord(MustLease(b), b, "ok").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(j3)->state == "succeeded");
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "auto: agreements with one same checker do not make a worker trusted",
                 "[scheduler][verify]") {
  // Two identities of one person (their own tokens) checking each other:
  // the first agreement counts, the same partner again does not.
  int64_t a = Enrolled("mallory-1", "token-m1"), b = Enrolled("mallory-2", "token-m2");
  for (int i = 0; i < 15; ++i) {
    PolicyJob(1, VerifyPolicy::kAuto);
    REQUIRE(MustRecord(MustLease(a), a, "forged").check_ordered);
    CHECK(MustRecord(MustLease(b), b, "forged").verdict == ResultVerdict::kAccepted);
  }
  CHECK(store->GetWorker(a)->streak == 1);
  CHECK(store->GetWorker(b)->streak == 1);
  CHECK(store->GetWorker(a)->checks == 15);
  // An agreement with a third worker counts; a disagreement starts over.
  int64_t c = Enrolled("carol", "token-c");
  PolicyJob(1, VerifyPolicy::kAuto);
  REQUIRE(MustRecord(MustLease(a), a, "forged").check_ordered);
  CHECK(MustRecord(MustLease(c), c, "forged").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetWorker(a)->streak == 2);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "auto: with no independent worker a result is accepted unchecked",
                 "[scheduler][verify]") {
  // One owner's PCs, enrolled with one token, have nobody to check them.
  int64_t a1 = Enrolled("alice-1", "token-a");
  Enrolled("alice-2", "token-a");
  int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
  RecordOutcome o = MustRecord(MustLease(a1), a1, "answer");
  CHECK_FALSE(o.check_ordered);
  CHECK(o.verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  // An independent worker not seen for over a minute (not connected) does
  // not count.
  int64_t b = Enrolled("bob", "token-b");
  (void)b;
  clock.AdvanceMs(61 * 1000);
  REQUIRE(store->TouchWorker(a1).ok());
  int64_t j2 = PolicyJob(1, VerifyPolicy::kAuto);
  CHECK_FALSE(MustRecord(MustLease(a1), a1, "answer").check_ordered);
  CHECK(store->GetJob(j2)->state == "succeeded");
}

TEST_CASE_METHOD(SchedFixture,
                 "a caught worker's unchecked results run again; caught three times, it is quarantined",
                 "[scheduler][verify]") {
  int64_t cheat = Enrolled("cheat", "token-c");
  int64_t h1 = Enrolled("honest-1", "token-1"), h2 = Enrolled("honest-2", "token-2");
  // Two results of the cheat accepted unchecked in a job that checks
  // nothing (its other shard is still running, so the job is too).
  int64_t open_job = PolicyJob(3, VerifyPolicy::kNone);
  Lease u1 = MustLease(cheat);
  Lease u2 = MustLease(cheat);
  MustRecord(u1, cheat, "lazy-0");
  MustRecord(u2, cheat, "lazy-1");
  Lease other = MustLease(h1);
  CHECK(store->GetJob(open_job)->shards_accepted == 2);
  // Three auto shards: the cheat's answer is checked, disagrees, and a
  // third copy decides against it.
  std::vector<int64_t> quarantined;
  for (int i = 0; i < 3; ++i) {
    INFO("round " << i);
    int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
    Lease l = MustLease(cheat);
    CHECK(MustRecord(l, cheat, "forged").check_ordered);
    CHECK(MustRecord(MustLease(h1), h1, "true").verdict == ResultVerdict::kDisagreed);
    RecordOutcome o = MustRecord(MustLease(h2), h2, "true");
    CHECK(o.verdict == ResultVerdict::kAccepted);
    CHECK(store->GetJob(job)->state == "succeeded");
    CHECK(store->GetWorker(cheat)->strikes == i + 1);
    CHECK(store->GetWorker(cheat)->streak == 0);
    // Caught once, its unchecked results in running jobs run again.
    CHECK(store->GetJob(open_job)->shards_accepted == 0);
    quarantined.insert(quarantined.end(), o.quarantined.begin(), o.quarantined.end());
  }
  CHECK(quarantined == std::vector<int64_t>{cheat});
  auto w = store->GetWorker(cheat);
  CHECK(w->banned);
  CHECK(sched->LeaseNext(cheat, cpu).status().code() == StatusCode::kPermissionDenied);
  // Its two unchecked results in the running job run again.
  CHECK(store->GetJob(open_job)->shards_accepted == 0);
  CHECK(ShardState(open_job, 0) == "pending");
  CHECK(ShardState(open_job, 1) == "pending");
  CHECK(w->agreed == 0);
  REQUIRE(store->CheckConsistency().ok());
  MustRecord(other, h1, "x");
  MustRecord(MustLease(h1), h1, "x");
  MustRecord(MustLease(h1), h1, "x");
  CHECK(store->GetJob(open_job)->state == "succeeded");
  // Lifted by an admin, it starts again as a new worker.
  REQUIRE(store->UnbanWorker(cheat, "test").ok());
  w = store->GetWorker(cheat);
  CHECK_FALSE(w->banned);
  CHECK(w->strikes == 0);
  CHECK(w->streak == 0);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "a check copy may go to the worker whose own attempt expired",
                 "[scheduler][verify]") {
  // The only independent worker had the shard first and was killed with
  // it: its lease expired while it restarted. The check must not wait
  // forever for it.
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
  Lease first = MustLease(b);
  clock.AdvanceMs(61'000);
  REQUIRE(sched->ExpireLeases().ok());
  REQUIRE(store->TouchWorker(b).ok());
  REQUIRE(store->TouchWorker(a).ok());
  Lease l = MustLease(a);
  CHECK(l.shard_id == first.shard_id);
  CHECK(MustRecord(l, a, "r").check_ordered);
  Lease c = MustLease(b);
  CHECK(c.shard_id == first.shard_id);
  CHECK(MustRecord(c, b, "r").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  // Without a check, a worker does not take again a shard it let expire.
  int64_t j2 = PolicyJob(1, VerifyPolicy::kNone);
  MustLease(b);
  clock.AdvanceMs(61'000);
  REQUIRE(sched->ExpireLeases().ok());
  CHECK(NoLease(b));
  CHECK(store->GetJob(j2)->state == "running");
  REQUIRE(store->CheckConsistency().ok());
}

// A job kind with a cheap check: its check results say "holds" or "fails".
struct CheapCheck : SchedFixture {
  CheapCheck() {
    sched->verifier().RegisterCheck("infer", [](std::string_view body) -> Result<bool> {
      if (body != "holds" && body != "fails") return InvalidArgument("no verdict");
      return body == "holds";
    });
  }
};

TEST_CASE_METHOD(CheapCheck, "a cheap check that holds accepts the checked result",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
  Lease l = MustLease(a);
  CHECK(l.checks_result_id == 0);
  RecordOutcome o = MustRecord(l, a, "answer");
  REQUIRE(o.check_ordered);
  Lease c = MustLease(b);
  CHECK(c.shard_id == l.shard_id);
  CHECK(c.checks_result_id == o.result_id);
  auto work = store->GetAttemptWork(c.attempt_id);
  REQUIRE(work.ok());
  CHECK(work->checks_result_id == o.result_id);
  CHECK(*store->GetResultBody(o.result_id) == "answer");
  CHECK(MustRecord(c, b, "holds").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");
  auto accepted = store->AcceptedResults(job);
  REQUIRE(accepted.ok());
  REQUIRE(accepted->size() == 1);
  CHECK((*accepted)[0].body == "answer");  // the claim, not the verdict
  for (int64_t w : {a, b}) {
    CHECK(store->GetWorker(w)->streak == 1);
    CHECK(store->GetWorker(w)->checks == 1);
  }
  CHECK(store->GetJobVerification(job)->checked_shards == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(CheapCheck, "a refuted result runs again; the re-run decides who lied",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b"),
          c = Enrolled("carol", "token-c");
  SECTION("the claim was false: the re-run is accepted, the claimant struck") {
    int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
    RecordOutcome o = MustRecord(MustLease(a), a, "forged");
    REQUIRE(o.check_ordered);
    Lease check = MustLease(b);
    REQUIRE(check.checks_result_id == o.result_id);
    RecordOutcome v = MustRecord(check, b, "fails");
    CHECK(v.verdict == ResultVerdict::kDisagreed);
    CHECK(ShardState(job, 0) == "pending");
    // The next attempt runs the shard (not another check), on a third worker.
    Lease rerun = MustLease(c);
    CHECK(rerun.checks_result_id == 0);
    CHECK(MustRecord(rerun, c, "answer").verdict == ResultVerdict::kAccepted);
    CHECK(store->GetJob(job)->state == "succeeded");
    CHECK((*store->AcceptedResults(job))[0].body == "answer");
    CHECK(store->GetWorker(a)->strikes == 1);
    CHECK(store->GetWorker(a)->disagreed == 1);
    CHECK(store->GetWorker(b)->strikes == 0);
    CHECK(store->GetWorker(b)->agreed == 1);
    CHECK(store->GetWorker(c)->agreed == 1);
  }
  SECTION("the checker lied: the re-run agrees with the claim, the checker is struck") {
    int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
    RecordOutcome o = MustRecord(MustLease(a), a, "answer");
    Lease check = MustLease(b);
    REQUIRE(check.checks_result_id == o.result_id);
    MustRecord(check, b, "fails");
    Lease rerun = MustLease(c);
    CHECK(rerun.checks_result_id == 0);
    CHECK(MustRecord(rerun, c, "answer").verdict == ResultVerdict::kAccepted);
    CHECK(store->GetJob(job)->state == "succeeded");
    CHECK((*store->AcceptedResults(job))[0].body == "answer");
    CHECK(store->GetWorker(a)->strikes == 0);
    CHECK(store->GetWorker(b)->strikes == 1);
    CHECK(store->GetWorker(c)->strikes == 0);
  }
  SECTION("a check that expired is leased again as a check") {
    int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
    RecordOutcome o = MustRecord(MustLease(a), a, "answer");
    Lease check = MustLease(b);
    REQUIRE(check.checks_result_id == o.result_id);
    clock.AdvanceMs(10 * 60 * 1000);
    REQUIRE(sched->ExpireLeases().ok());
    Lease again = MustLease(c);
    CHECK(again.checks_result_id == o.result_id);
    CHECK(MustRecord(again, c, "holds").verdict == ResultVerdict::kAccepted);
    CHECK(store->GetJob(job)->state == "succeeded");
  }
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(CheapCheck, "redundant jobs and kinds without a check run full copies",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  // Redundancy 2 of an infer job: two full runs, no check.
  Job(1, 2);
  CHECK(MustLease(a).checks_result_id == 0);
  CHECK(MustLease(b).checks_result_id == 0);
  // An auto bench job: its check is a second run.
  PolicyJob(1, VerifyPolicy::kAuto, "bench");
  RecordOutcome o = MustRecord(MustLease(a), a, "x");
  REQUIRE(o.check_ordered);
  CHECK(MustLease(b).checks_result_id == 0);
}

TEST_CASE_METHOD(SchedFixture, "collusion: checks go to trusted workers; a quarantine voids its agreements",
                 "[scheduler][verify]") {
  int64_t c1 = Enrolled("cheat-1", "token-c1"), c2 = Enrolled("cheat-2", "token-c2");
  SECTION("with no trusted worker, two new identities may check each other; "
          "quarantining one re-runs what they agreed on") {
    int64_t job = PolicyJob(2, VerifyPolicy::kAuto);
    RecordOutcome o = MustRecord(MustLease(c1), c1, "forged");
    REQUIRE(o.check_ordered);
    Lease check = MustLease(c2);
    REQUIRE(check.shard_id != 0);
    CHECK(MustRecord(check, c2, "forged").verdict == ResultVerdict::kAccepted);
    CHECK(ShardState(job, 0) == "accepted");
    CHECK(store->GetWorker(c2)->agreed == 1);
    REQUIRE(sched->Quarantine(c1, "test").ok());
    CHECK(ShardState(job, 0) == "pending");
    CHECK(store->GetWorker(c2)->agreed == 0);
    CHECK(store->GetJob(job)->shards_accepted == 0);
    REQUIRE(store->CheckConsistency().ok());
  }
  SECTION("an honest worker outvoted by a pair gets its strike back when one is quarantined") {
    int64_t h = Enrolled("honest", "token-h");
    int64_t job = PolicyJob(2, VerifyPolicy::kAuto);
    REQUIRE(MustRecord(MustLease(c1), c1, "forged").check_ordered);
    CHECK(MustRecord(MustLease(h), h, "true").verdict == ResultVerdict::kDisagreed);
    CHECK(MustRecord(MustLease(c2), c2, "forged").verdict == ResultVerdict::kAccepted);
    CHECK(store->GetWorker(h)->strikes == 1);  // framed
    REQUIRE(sched->Quarantine(c1, "test").ok());
    CHECK(store->GetWorker(h)->strikes == 0);
    CHECK(ShardState(job, 0) == "pending");  // and the shard runs again
    REQUIRE(store->CheckConsistency().ok());
  }
  SECTION("in an open-ended job, a quarantine rewinds to the first applied round it "
          "sided with; the round in flight alone when it sided with none") {
    int64_t h1 = Enrolled("honest-1", "token-h1"), h2 = Enrolled("honest-2", "token-h2");
    auto job = store->CreateJob(FinetuneSpec());
    REQUIRE(job.ok());
    const bool pair_in_round_1 = GENERATE(true, false);
    INFO("the pair answered round 1: " << pair_in_round_1);
    // Round 1: one pair agrees on its one shard, and the round is applied.
    const int64_t r1a = pair_in_round_1 ? c1 : h1, r1b = pair_in_round_1 ? c2 : h2;
    REQUIRE(MustRecord(MustLease(r1a), r1a, "forged").check_ordered);
    CHECK(MustRecord(MustLease(r1b), r1b, "forged").verdict == ResultVerdict::kAccepted);
    JobAdvance next;
    next.expected_shards_total = 1;
    next.summary = R"({"step":1,"round_first_shard":1})";
    next.shards = {{"round-2a", "", 0}, {"round-2b", "", 0}};
    next.round = 1;
    next.round_info = R"({"step":1})";
    REQUIRE(store->AdvanceJob(*job, next).ok());
    // Round 2: the cheats agree on its first shard; its second is leased.
    REQUIRE(MustRecord(MustLease(c1), c1, "forged").check_ordered);
    CHECK(MustRecord(MustLease(c2), c2, "forged").verdict == ResultVerdict::kAccepted);
    Lease running = MustLease(h1);
    CHECK(running.shard_idx == 2);
    CHECK(store->GetJob(*job)->shards_accepted == 2);
    auto report = store->BanWorker(c1, "test");
    REQUIRE(report.ok());
    auto info = store->GetJob(*job);
    if (pair_in_round_1) {
      // Back to the start of round 1: every shard since is dropped, the
      // running one cancelled, the rounds forgotten, the pair's agreements
      // void, and the job waits for its planner to plan round 1 again.
      for (int i = 0; i < 3; ++i) CHECK(ShardState(*job, i) == "cancelled");
      CHECK(info->shards_accepted == 0);
      CHECK(info->shards_dropped == 3);
      CHECK(info->summary ==
            R"({"round_first_shard":3,"replan":true,"rewinds":1,"round_started_ms":)" +
                std::to_string(clock.NowMs()) + "}");
      REQUIRE(report->cancelled.size() == 1);
      CHECK(report->cancelled[0].attempt_id == running.attempt_id);
      CHECK(store->JobRounds(*job, 0, 0)->empty());
      CHECK(store->GetWorker(c2)->agreed == 0);
      auto waiting = store->JobsAwaitingAdvance();
      REQUIRE(waiting.ok());
      REQUIRE(waiting->size() == 1);
      // The planner plans round 1 again; a later rewind finds its start.
      JobAdvance again;
      again.expected_shards_total = 3;
      again.summary = R"({"rewinds":1,"round_first_shard":3})";
      again.shards = {{"round-1", "", 0}};
      REQUIRE(store->AdvanceJob(*job, again).ok());
      REQUIRE(MustRecord(MustLease(c2), c2, "forged").check_ordered);
      CHECK(MustRecord(MustLease(h2), h2, "forged").verdict == ResultVerdict::kAccepted);
      JobAdvance round2;
      round2.expected_shards_total = 4;
      round2.summary = R"({"step":1,"rewinds":1,"round_first_shard":4})";
      round2.shards = {{"round-2a", "", 0}};
      round2.round = 1;
      round2.round_info = R"({"step":1})";
      REQUIRE(store->AdvanceJob(*job, round2).ok());
      REQUIRE(store->BanWorker(c2, "test").ok());
      info = store->GetJob(*job);
      CHECK(ShardState(*job, 3) == "cancelled");
      CHECK(info->summary.find(R"("rewinds":2)") != std::string::npos);
      CHECK(info->summary.find(R"("round_first_shard":5)") != std::string::npos);
      INFO(store->CheckConsistency().ToString());
      CHECK(store->CheckConsistency().ok());
    } else {
      CHECK(ShardState(*job, 0) == "accepted");  // applied without them: kept
      CHECK(ShardState(*job, 1) == "pending");   // in flight: runs again
      CHECK(ShardState(*job, 2) == "leased");
      CHECK(info->shards_accepted == 1);
      CHECK(info->summary == R"({"step":1,"round_first_shard":1})");  // the planner's, kept
      CHECK(store->JobRounds(*job, 0, 0)->size() == 1);
    }
    REQUIRE(store->CheckConsistency().ok());
  }
  SECTION("a running job keeps the versions of its latest rounds within --rewind-keep; "
          "a quarantine beyond them rewinds to the oldest kept") {
    int64_t h1 = Enrolled("honest-1", "token-h1"), h2 = Enrolled("honest-2", "token-h2");
    const std::string in(64, 'a');  // an input (the model): always kept
    REQUIRE(store->RecordBlob(in, 5000).ok());
    JobSpec spec = FinetuneSpec();
    spec.blobs = {in};
    auto job = store->CreateJob(spec);
    REQUIRE(job.ok());
    auto answer = [&](int64_t x, int64_t y) {
      if (MustRecord(MustLease(x), x, "ok").check_ordered) MustRecord(MustLease(y), y, "ok");
    };
    // Round r's version and optimizer state, 100 bytes each.
    auto version = [](int r) { return std::string(62, 'b') + "0" + char('0' + r); };
    auto optimizer = [](int r) { return std::string(62, 'c') + "0" + char('0' + r); };
    auto apply = [&](int r) {
      clock.AdvanceMs(1000);
      JobAdvance next;
      next.expected_shards_total = r;
      next.blobs = {{version(r), 100}, {optimizer(r), 100}};
      next.summary = "{\"step\":" + std::to_string(r) + ",\"round_first_shard\":" +
                     std::to_string(r) + ",\"adapter\":{\"adapter_model.safetensors\":\"" +
                     version(r) + "\"},\"optimizer\":\"" + optimizer(r) + "\"}";
      next.shards = {{"round-" + std::to_string(r + 1), "", 0}};
      next.round = r;
      next.round_info = "{}";
      REQUIRE(store->AdvanceJob(*job, next).ok());
    };
    answer(c1, c2);  // the pair answers round 1
    apply(1);
    for (int r = 2; r <= 4; ++r) {
      answer(h1, h2);
      apply(r);
    }
    CHECK(store->JobBlobs(*job)->size() == 9);
    CHECK(DbInt("SELECT COUNT(*) FROM job_round_starts") == 5);
    // The applied rounds' outputs are emptied; the rows stay.
    CHECK(DbInt("SELECT COUNT(*) FROM results") >= 4);
    CHECK(DbInt("SELECT COUNT(*) FROM results WHERE length(body)>0") == 0);
    // Everything fits: nothing goes.
    auto trim = store->TrimRoundStarts(*job, 600, {in});
    REQUIRE(trim.ok());
    CHECK(trim->starts == 0);
    CHECK(store->JobBlobs(*job)->size() == 9);
    // 250 bytes: beside the start of round 5 (in flight, from version 4),
    // the start of round 4 (version 3, 200 bytes) fits, round 3's does not.
    trim = store->TrimRoundStarts(*job, 250, {in});
    REQUIRE(trim.ok());
    CHECK(trim->starts == 3);
    CHECK(trim->oldest_round == 4);
    CHECK(trim->blobs == 4);  // versions and optimizer states 1 and 2
    CHECK(trim->bytes == 400);
    std::vector<std::string> left = {in, version(3), version(4), optimizer(3), optimizer(4)};
    std::sort(left.begin(), left.end());
    CHECK(*store->JobBlobs(*job) == left);
    CHECK(DbInt("SELECT MIN(round) FROM job_round_starts") == 4);
    CHECK(store->TrimRoundStarts(*job, 250, {in})->starts == 0);  // once
    // The released blobs are linked to no job: the collector deletes them.
    auto dropped = store->DropUnlinkedBlobs(clock.NowMs(), 100);
    REQUIRE(dropped.ok());
    CHECK(dropped->size() == 4);
    CHECK(*store->HasBlob(version(3)));
    // The pair's round 1 is beyond the horizon: the rewind goes back to
    // round 4, the oldest start kept; rounds 1-3 stay applied.
    answer(h1, h2);  // round 5's shard, in flight
    CHECK(DbInt("SELECT COUNT(*) FROM results r JOIN shards s ON s.id=r.shard_id WHERE "
                "s.idx=4 AND length(r.body)=2") >= 1);  // "ok": kept until applied
    REQUIRE(store->BanWorker(c1, "test").ok());
    for (int i = 0; i < 3; ++i) CHECK(ShardState(*job, i) == "accepted");
    CHECK(ShardState(*job, 3) == "cancelled");
    CHECK(ShardState(*job, 4) == "cancelled");
    auto info = store->GetJob(*job);
    CHECK(info->summary.find("\"optimizer\":\"" + optimizer(3) + "\"") != std::string::npos);
    CHECK(info->summary.find(R"("replan":true)") != std::string::npos);
    CHECK(store->JobRounds(*job, 0, 0)->size() == 3);
    CHECK(DbInt("SELECT COUNT(*) FROM events WHERE kind='job_rewound' AND message LIKE "
                "'%round 4%beyond the rewind horizon%'") == 1);
    // An ended job is left to the ended-job rule.
    REQUIRE(store->CancelJob(*job, "done").ok());
    CHECK(store->TrimRoundStarts(*job, 0, {in})->starts == 0);
    INFO(store->CheckConsistency().ToString());
    REQUIRE(store->CheckConsistency().ok());
  }
  SECTION("with a trusted worker connected, a new identity cannot take a check") {
    int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
    // Alice, bob and carol check each other in a ring: each agrees with two
    // others in turn, so each one's streak grows (one partner would not).
    const int64_t ring[3] = {a, b, Enrolled("carol", "token-c3")};
    for (int i = 0; i < 30; ++i) {
      const int64_t claimant = ring[i % 3], checker = ring[(i + 1) % 3];
      PolicyJob(1, VerifyPolicy::kAuto);
      if (MustRecord(MustLease(claimant), claimant, "ok").check_ordered) {
        CHECK(MustRecord(MustLease(checker), checker, "ok").verdict == ResultVerdict::kAccepted);
      }
    }
    REQUIRE(store->GetWorker(a)->streak >= 10);
    REQUIRE(store->GetWorker(b)->streak >= 10);
    REQUIRE(store->TouchWorker(a).ok());
    REQUIRE(store->TouchWorker(b).ok());
    PolicyJob(1, VerifyPolicy::kAuto);
    Lease first = MustLease(c1);
    RecordOutcome o = MustRecord(first, c1, "forged");
    REQUIRE(o.check_ordered);
    CHECK(NoLease(c2));  // alice and bob, trusted and connected, check it
    // The check is drawn for one of them; the other may not take it.
    auto la = sched->LeaseNext(a, cpu);
    REQUIRE(la.ok());
    const int64_t drawn = la->has_value() ? a : b, other = drawn == a ? b : a;
    Lease check = la->has_value() ? **la : MustLease(b);
    CHECK(check.shard_id == first.shard_id);
    CHECK(NoLease(other));
    CHECK(MustRecord(check, drawn, "ok").verdict == ResultVerdict::kDisagreed);
    // The deciding copy also waits for a trusted worker: the other one.
    CHECK(NoLease(c2));
    CHECK(MustRecord(MustLease(other), other, "ok").verdict == ResultVerdict::kAccepted);
    CHECK(store->GetWorker(c1)->strikes == 1);
    // Once no trusted worker was seen for a minute, a new one may check.
    clock.AdvanceMs(2 * 60 * 1000);
    PolicyJob(1, VerifyPolicy::kAuto);
    REQUIRE(store->TouchWorker(c1).ok());
    REQUIRE(store->TouchWorker(c2).ok());
    REQUIRE(MustRecord(MustLease(c1), c1, "x").check_ordered);
    CHECK(MustLease(c2).shard_id != 0);
  }
  REQUIRE(store->CheckConsistency().ok());
}

// The draw of checks among candidates, claim after claim.
struct DrawFixture : SchedFixture {
  // A colluder and `honest` others, enrolled with their own tokens and
  // available (touched): {colluder, honest-0, ...}.
  std::vector<int64_t> Candidates(int honest) {
    std::vector<int64_t> out = {Enrolled("colluder", "token-c")};
    for (int i = 0; i < honest; ++i) {
      out.push_back(Enrolled("honest-" + std::to_string(i), "token-h" + std::to_string(i)));
    }
    for (int64_t w : out) REQUIRE(store->TouchWorker(w).ok());
    return out;
  }
  // `claims` times a new claimant's result is picked for a check and every
  // candidate asks, in order: exactly one takes it, the one DrawnCheckers
  // names. The job is cancelled then (nobody's streak grows). How many
  // checks each took.
  std::map<int64_t, int> DrawChecks(const std::vector<int64_t>& candidates, int claims) {
    std::map<int64_t, int> drawn;
    for (int i = 0; i < claims; ++i) {
      INFO("claim " << i);
      int64_t claimant = Enrolled("claimant-" + std::to_string(i), "token-k" + std::to_string(i));
      int64_t job = PolicyJob(1, VerifyPolicy::kAuto);
      REQUIRE(MustRecord(MustLease(claimant), claimant, "x").check_ordered);
      auto named = sched->DrawnCheckers();  // the daemon offers it work at once
      REQUIRE(named.ok());
      REQUIRE(named->size() == 1);
      int takers = 0;
      for (int64_t w : candidates) {
        auto l = sched->LeaseNext(w, cpu);
        REQUIRE(l.ok());
        if (l->has_value()) {
          ++takers;
          ++drawn[w];
          CHECK(w == named->front());
        }
      }
      CHECK(takers == 1);
      REQUIRE(store->CancelJob(job, "next").ok());
    }
    return drawn;
  }
};

TEST_CASE_METHOD(DrawFixture, "a check is drawn among workers whose free memory holds it",
                 "[scheduler][verify]") {
  const std::vector<int64_t> candidates = Candidates(2);
  // All have 1 GiB; two of them said only 32 MiB of it are free now.
  REQUIRE(store->SetWorkerDevices(candidates[0],
                                  R"([{"backend":"cpu","memory_bytes":1073741824}])", 1)
              .ok());
  for (int i = 1; i <= 2; ++i)
    REQUIRE(store->SetWorkerDevices(candidates[size_t(i)],
                                    R"([{"backend":"cpu","memory_bytes":1073741824,)"
                                    R"("free_bytes":33554432}])", 1)
                .ok());
  for (int i = 0; i < 6; ++i) {
    INFO("claim " << i);
    int64_t claimant = Enrolled("claimant-" + std::to_string(i), "token-k" + std::to_string(i));
    JobSpec spec;
    spec.kind = "infer";
    spec.params = "{}";
    spec.verify = VerifyPolicy::kAuto;
    spec.shards.push_back({"needs-64-MiB", "", 64 * kMiB});
    auto job = store->CreateJob(spec);
    REQUIRE(job.ok());
    Lease l = **sched->LeaseNext(claimant, DeviceCaps{{{"cpu", 1024 * kMiB}}});
    REQUIRE(MustRecord(l, claimant, "x").check_ordered);
    auto named = sched->DrawnCheckers();
    REQUIRE(named.ok());
    REQUIRE(named->size() == 1);
    CHECK(named->front() == candidates[0]);
    REQUIRE(store->CancelJob(*job, "next").ok());
  }
}

TEST_CASE_METHOD(DrawFixture, "a check is drawn among workers with one device that holds it",
                 "[scheduler][verify]") {
  const std::vector<int64_t> candidates = Candidates(2);
  // A CUDA shard of 64 MiB: candidate 0's GPU holds it. Candidate 1 has
  // 1 GiB of CPU but a GPU with 32 MiB free; candidate 2 a 1 GiB Vulkan
  // device and no CUDA one. Neither has one device with both.
  REQUIRE(store->SetWorkerDevices(candidates[0],
                                  R"([{"backend":"cpu","memory_bytes":33554432},)"
                                  R"({"backend":"cuda","memory_bytes":1073741824}])", 1)
              .ok());
  REQUIRE(store->SetWorkerDevices(candidates[1],
                                  R"([{"backend":"cpu","memory_bytes":1073741824},)"
                                  R"({"backend":"cuda","memory_bytes":1073741824,)"
                                  R"("free_bytes":33554432}])", 1)
              .ok());
  REQUIRE(store->SetWorkerDevices(candidates[2],
                                  R"([{"backend":"cpu","memory_bytes":1073741824},)"
                                  R"({"backend":"vulkan","memory_bytes":1073741824}])", 1)
              .ok());
  for (int i = 0; i < 6; ++i) {
    INFO("claim " << i);
    int64_t claimant = Enrolled("claimant-" + std::to_string(i), "token-k" + std::to_string(i));
    JobSpec spec;
    spec.kind = "infer";
    spec.params = "{}";
    spec.verify = VerifyPolicy::kAuto;
    spec.shards.push_back({"cuda-64-MiB", "cuda", 64 * kMiB});
    auto job = store->CreateJob(spec);
    REQUIRE(job.ok());
    Lease l = **sched->LeaseNext(claimant, DeviceCaps{{{"cuda", 1024 * kMiB}}});
    REQUIRE(MustRecord(l, claimant, "x").check_ordered);
    auto named = sched->DrawnCheckers();
    REQUIRE(named.ok());
    REQUIRE(named->size() == 1);
    CHECK(named->front() == candidates[0]);
    REQUIRE(store->CancelJob(*job, "next").ok());
  }
}

TEST_CASE_METHOD(DrawFixture, "a check goes to the worker drawn for it, not to the first that asks",
                 "[scheduler][verify]") {
  // A colluder that computes nothing always asks first; the draw does not
  // care. Candidates: available (touched), independent, untrusted all.
  const std::vector<int64_t> candidates = Candidates(4);
  const int64_t colluder = candidates[0];
  std::map<int64_t, int> drawn = DrawChecks(candidates, 80);  // the colluder asks first
  for (int64_t w : candidates) {
    INFO("worker " << w);
    CHECK(drawn[w] > 0);  // each is drawn sometimes (P(never) = 0.8^80)
  }
  CHECK(drawn[colluder] < 40);  // about 1 in 5 (16), not every time
  // A worker paused by its idle policy, or gone, is not drawn: after 15 s
  // only the colluder and honest-0 were available, so one of them is drawn
  // (a paused or gone worker does not ask: the daemon offers it nothing).
  clock.AdvanceMs(16'000);
  REQUIRE(store->TouchWorker(colluder).ok());
  REQUIRE(store->TouchWorker(candidates[1]).ok());
  REQUIRE(store->TouchWorker(candidates[2], /*available=*/false).ok());
  int64_t claimant = Enrolled("claimant-last", "token-last");
  PolicyJob(1, VerifyPolicy::kAuto);
  REQUIRE(MustRecord(MustLease(claimant), claimant, "x").check_ordered);
  int takers = 0;
  for (int64_t w : {colluder, candidates[1]}) {
    auto l = sched->LeaseNext(w, cpu);
    REQUIRE(l.ok());
    takers += l->has_value() ? 1 : 0;
  }
  CHECK(takers == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(DrawFixture, "an untrusted candidate is drawn in proportion to (1 + streak)^2",
                 "[scheduler][verify]") {
  // Honest workers build streaks; a cheat's starts again at each catch.
  // honest-0 has 9 checked results in a row (weight 100, still untrusted),
  // the colluder and two others none (weight 1): honest-0 takes about 96%
  // of the checks, the colluder about 1%.
  const std::vector<int64_t> candidates = Candidates(3);
  const int64_t colluder = candidates[0];
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open((dir + "/state.db").c_str(), &h) == SQLITE_OK);
  const std::string sql = "UPDATE workers SET streak=9 WHERE id=" + std::to_string(candidates[1]);
  REQUIRE(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(h);
  std::map<int64_t, int> drawn = DrawChecks(candidates, 40);
  CHECK(drawn[candidates[1]] >= 30);  // 38.5 expected; P(< 30) < 1e-6
  CHECK(drawn[colluder] <= 5);        // 0.4 expected
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "a job's verification overhead is its extra copies' run time",
                 "[scheduler][verify]") {
  int64_t a = Enrolled("alice", "token-a"), b = Enrolled("bob", "token-b");
  int64_t job = PolicyJob(2, VerifyPolicy::kAuto);
  Lease l0 = MustLease(a);
  clock.AdvanceMs(1000);
  CHECK(MustRecord(l0, a, "r0").check_ordered);
  Lease c0 = MustLease(b);
  clock.AdvanceMs(500);
  CHECK(MustRecord(c0, b, "r0").verdict == ResultVerdict::kAccepted);
  auto v = store->GetJobVerification(job);
  REQUIRE(v.ok());
  CHECK(v->checked_shards == 1);
  CHECK(v->useful_ms == 1000);  // the first agreeing result is the accepted one
  CHECK(v->extra_ms == 500);
}

// ---- crash safety: a child runs transitions and is SIGKILLed at random ----

struct Record {
  int64_t attempt_id;
  int64_t worker_id;
};

[[noreturn]] void ChildWork(const std::string& path, int fd, uint32_t seed,
                            int64_t start_ms) {
  FakeClock clock(start_ms);
  auto opened = Store::Open(path, &clock);
  if (!opened.ok()) _exit(2);
  auto store = std::move(opened).value();
  Scheduler sched(store.get(), SchedulerOptions{10000, 5});
  std::mt19937 rng(seed);
  std::vector<int64_t> workers;
  for (int i = 0; i < 6; ++i) {
    std::string key = "curve-" + std::to_string(i);
    auto w = store->FindWorkerByCurveKey(key);
    if (w.ok()) {
      workers.push_back(w->id);
    } else {
      auto id = store->AddWorker("pc-" + std::to_string(i), "s", key);
      if (!id.ok()) _exit(3);
      workers.push_back(*id);
    }
  }
  std::vector<std::pair<Lease, int64_t>> leases;
  for (;;) {
    Record rec{0, 0};
    int op = int(rng() % 100);
    clock.AdvanceMs(rng() % 700);
    if (op < 8) {
      JobSpec spec;
      spec.kind = "infer";
      spec.params = "{}";
      spec.priority = int(rng() % 3);
      spec.redundancy = 1 + int(rng() % 2);
      // Some jobs spot-check adaptively (a die decides per result).
      if (spec.redundancy == 1 && rng() % 2) spec.verify = VerifyPolicy::kAuto;
      int n = 1 + int(rng() % 4);
      for (int i = 0; i < n; ++i) {
        spec.shards.push_back({std::to_string(rng()), "", 0});
      }
      if (!store->CreateJob(spec).ok()) _exit(4);
    } else if (op < 45) {
      int64_t w = workers[rng() % workers.size()];
      auto l = sched.LeaseNext(w, DeviceCaps{{{"cpu", 1 << 30}}});
      // A worker caught disagreeing three times is quarantined.
      if (!l.ok() && l.status().code() != StatusCode::kPermissionDenied) _exit(5);
      if (l.ok() && l->has_value()) leases.push_back({**l, w});
    } else if (op < 85 && !leases.empty()) {
      size_t i = rng() % leases.size();
      auto [lease, w] = leases[i];
      leases.erase(leases.begin() + long(i));
      std::string body = rng() % 10 == 0 ? "bad-" + std::to_string(rng())
                                         : "good-" + lease.shard_params;
      auto r = sched.RecordResult(lease.attempt_id, w, body, "sig");
      if (r.ok()) {
        rec = {lease.attempt_id, w};
      } else if (r.status().code() != StatusCode::kFailedPrecondition) {
        _exit(6);
      }
    } else if (op < 92) {
      if (!sched.ExpireLeases().ok()) _exit(7);
    } else if (op < 97) {
      if (!sched.WorkerLost(workers[rng() % workers.size()]).ok()) _exit(8);
    } else {
      auto jobs = store->ListJobs("running", 5);
      if (!jobs.ok()) _exit(9);
      if (!jobs->empty()) {
        auto c = store->CancelJob(jobs->back().id, "chaos");
        if (!c.ok()) _exit(10);
      }
    }
    if (write(fd, &rec, sizeof rec) != sizeof rec) _exit(11);
  }
}

TEST_CASE("a kill between statements leaves a consistent database",
          "[scheduler][crash]") {
  char tmpl[] = "/tmp/pcfarm_crash_test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string dir = tmpl, path = dir + "/state.db";
  std::mt19937 rng(20240607);
  int64_t start_ms = 1'700'000'000'000;
  int acked_total = 0;
  for (int round = 0; round < 12; ++round) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    start_ms += 100'000'000;  // each child's clock continues past the last
    uint32_t seed = rng();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      ChildWork(path, fds[1], seed, start_ms);
    }
    close(fds[1]);
    int ops = 20 + int(rng() % 400);
    std::vector<Record> acked;
    Record rec;
    for (int i = 0; i < ops && read(fds[0], &rec, sizeof rec) == sizeof rec; ++i) {
      if (rec.attempt_id) acked.push_back(rec);
    }
    kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    INFO("round " << round << " child status " << status);
    REQUIRE(WIFSIGNALED(status));
    while (read(fds[0], &rec, sizeof rec) == sizeof rec) {
      if (rec.attempt_id) acked.push_back(rec);
    }
    close(fds[0]);

    FakeClock clock(start_ms + 50'000'000);
    auto store = Store::Open(path, &clock);
    REQUIRE(store.ok());
    Status st = (*store)->CheckConsistency();
    INFO(st.ToString());
    REQUIRE(st.ok());
    // Every result the child was told is stored (its ACK) is there.
    Scheduler sched(store->get());
    for (const Record& r : acked) {
      auto again = sched.RecordResult(r.attempt_id, r.worker_id, "x", "s");
      REQUIRE(again.status().code() == StatusCode::kAlreadyExists);
    }
    acked_total += int(acked.size());
  }
  CHECK(acked_total > 0);

  // After the last crash, in-flight work is re-issued and every job ends.
  FakeClock clock(start_ms + 90'000'000);
  auto store = std::move(Store::Open(path, &clock)).value();
  Scheduler sched(store.get(), SchedulerOptions{10000, 5});
  REQUIRE(sched.ExpireLeases().ok());
  for (int i = 0; i < 40; ++i) {
    auto w = store->AddWorker("fresh-" + std::to_string(i), "s",
                              "fresh-curve-" + std::to_string(i));
    REQUIRE(w.ok());
    for (;;) {
      auto l = sched.LeaseNext(*w, DeviceCaps{{{"cpu", 1 << 30}}});
      REQUIRE(l.ok());
      if (!l->has_value()) break;
      REQUIRE(sched.RecordResult((*l)->attempt_id, *w,
                                 "good-" + (*l)->shard_params, "s")
                  .ok());
    }
  }
  auto jobs = store->ListJobs();
  REQUIRE(jobs.ok());
  CHECK(jobs->size() > 0);
  for (const JobInfo& j : *jobs) {
    INFO("job " << j.id << " " << j.state);
    CHECK((j.state == "succeeded" || j.state == "failed" ||
           j.state == "cancelled"));
  }
  REQUIRE(store->CheckConsistency().ok());
  store.reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

TEST_CASE_METHOD(SchedFixture, "a worker that cannot run its shard fails it",
                 "[scheduler]") {
  int64_t w1 = Worker("pc-1"), w2 = Worker("pc-2");
  int64_t job = Job(1);
  Lease l = MustLease(w1);
  CHECK(store->FailAttempt(l.attempt_id, w2, "oom", 5).status().code() ==
        StatusCode::kPermissionDenied);
  CHECK(store->FailAttempt(999, w1, "oom", 5).status().code() ==
        StatusCode::kNotFound);
  auto report = store->FailAttempt(l.attempt_id, w1, "out of memory", 5);
  REQUIRE(report.ok());
  CHECK(report->released_attempts == std::vector<int64_t>{l.attempt_id});
  CHECK(store->FailAttempt(l.attempt_id, w1, "oom", 5).status().code() ==
        StatusCode::kAlreadyExists);
  CHECK(sched->RecordResult(l.attempt_id, w1, "r", "s").status().code() ==
        StatusCode::kFailedPrecondition);
  auto shard = (*store->ListShards(job))[0];
  CHECK(shard.state == "pending");
  CHECK(shard.attempts_failed == 1);
  Lease again = MustLease(w2);
  CHECK(store->FailAttempt(again.attempt_id, w2, "driver crashed", 1)->failed_jobs ==
        std::vector<int64_t>{job});
  CHECK(store->GetJob(job)->reason.find("could not run it: driver crashed") !=
        std::string::npos);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(SchedFixture, "an attempt remembers its shard body hash",
                 "[scheduler]") {
  int64_t w = Worker("pc-1");
  Job(1);
  Lease l = MustLease(w);
  CHECK(store->AttemptShardHash(l.attempt_id).status().code() ==
        StatusCode::kNotFound);
  REQUIRE(store->SetAttemptShardHash(l.attempt_id, std::string(32, '\x07')).ok());
  CHECK(*store->AttemptShardHash(l.attempt_id) == std::string(32, '\x07'));
  CHECK(store->SetAttemptShardHash(424242, "h").code() == StatusCode::kNotFound);
}

TEST_CASE_METHOD(MaxThree,
                 "identities that fail far more than they deliver stop counting",
                 "[scheduler]") {
  // Three identities answer ok=false to everything. Each first failure
  // counts (an honest worker fails now and then); after that, a worker with
  // more failures than results + 1 no longer counts against a shard.
  std::vector<int64_t> bad = {Worker("bad-1"), Worker("bad-2"), Worker("bad-3")};
  int64_t warmup = Job(3);
  std::vector<Lease> first;  // one shard each
  for (int64_t w : bad) first.push_back(MustLease(w));
  for (size_t i = 0; i < bad.size(); ++i) {
    REQUIRE(store->FailAttempt(first[i].attempt_id, bad[i], "no", 3).ok());
  }
  int64_t honest = Worker("honest");
  for (int i = 0; i < 3; ++i) {
    Lease l = MustLease(honest);
    CHECK(MustRecord(l, honest, "ok").verdict == ResultVerdict::kAccepted);
  }
  CHECK(store->GetJob(warmup)->state == "succeeded");

  // Without the rule the three would fail this job's one shard (3 of 3).
  int64_t job = Job(1);
  for (int64_t w : bad) {
    Lease l = MustLease(w);
    auto r = sched->AttemptFailed(l.attempt_id, w, "no");
    REQUIRE(r.ok());
    CHECK(r->failed_jobs.empty());
  }
  auto shard = (*store->ListShards(job))[0];
  CHECK(shard.attempts_failed == 0);
  CHECK(shard.state == "pending");
  Lease l = MustLease(honest);
  CHECK(MustRecord(l, honest, "ok").verdict == ResultVerdict::kAccepted);
  CHECK(store->GetJob(job)->state == "succeeded");

  // A worker that delivers earns its counted failures back: one result,
  // one more counted failure.
  CHECK(FailureCounts(1, 0));
  CHECK_FALSE(FailureCounts(2, 0));
  CHECK(FailureCounts(2, 1));
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(MaxThree, "uncounted failures still end a shard at last",
                 "[scheduler]") {
  // Each worker spends its one counted failure on a decoy job first; then
  // none of their failures of the real shard count, but
  // kUncountedFailureFactor x max attempts failures in all end it.
  const int limit = 3 * kUncountedFailureFactor;
  int64_t decoy = Job(limit);
  std::vector<int64_t> workers;
  std::vector<Lease> first;  // one decoy shard each
  for (int i = 0; i < limit; ++i) {
    workers.push_back(Worker("flaky-" + std::to_string(i)));
    first.push_back(MustLease(workers.back()));
  }
  for (int i = 0; i < limit; ++i) {
    REQUIRE(store->FailAttempt(first[i].attempt_id, workers[i], "oom", 3).ok());
  }
  REQUIRE(store->CancelJob(decoy, "decoy").ok());
  int64_t job = Job(1);
  for (int i = 0; i < limit; ++i) {
    auto r = sched->AttemptFailed(MustLease(workers[i]).attempt_id, workers[i], "oom");
    REQUIRE(r.ok());
    CHECK(r->failed_jobs.empty() == (i + 1 < limit));
  }
  auto info = store->GetJob(job);
  CHECK(info->state == "failed");
  CHECK(info->reason.find("failed 12 times in all (0 counted)") != std::string::npos);
  REQUIRE(store->CheckConsistency().ok());
}

}  // namespace
}  // namespace pcfarm
