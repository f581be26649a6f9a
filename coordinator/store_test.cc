#include "coordinator/store.h"

#include <sqlite3.h>
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace pcfarm {
namespace {

// The number of the last migration (store_schema.cc).
constexpr int kLatestSchema = 17;

std::string TempDir() {
  char tmpl[] = "/tmp/pcfarm_store_test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

std::string FileBytes(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) return "";
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  fclose(f);
  return out;
}

// The names in `dir`, sorted.
std::vector<std::string> DirEntries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

struct StoreFixture {
  std::string dir = TempDir();
  std::string path = dir + "/state.db";
  FakeClock clock;
  std::unique_ptr<Store> store;
  StoreFixture() { Reopen(); }
  ~StoreFixture() {
    store.reset();
    std::filesystem::remove_all(dir);
  }
  void Reopen() {
    store.reset();
    auto s = Store::Open(path, &clock);
    REQUIRE(s.ok());
    store = std::move(s).value();
  }
  // The first column of the first row of `sql`, read on a connection of
  // its own.
  int64_t DbInt(const char* sql) {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) ==
            SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(h, sql, -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return v;
  }
};

JobSpec TwoShardJob() {
  JobSpec spec;
  spec.kind = "infer";
  spec.params = R"({"model":"m"})";
  spec.priority = 3;
  spec.shards = {{"p0", "", 0}, {"p1", "cuda", 1 << 20}};
  return spec;
}

TEST_CASE_METHOD(StoreFixture, "a batch commits its transitions together",
                 "[store]") {
  REQUIRE(store->BeginBatch().ok());
  CHECK(store->BeginBatch().code() == StatusCode::kFailedPrecondition);
  auto a = store->AddWorker("pc-a", "sign-a", "curve-a");
  REQUIRE(a.ok());
  // A failing transition undoes only itself.
  CHECK(store->AddWorker("pc-dup", "sign-x", "curve-a").status().code() ==
        StatusCode::kAlreadyExists);
  auto b = store->AddWorker("pc-b", "sign-b", "curve-b");
  REQUIRE(b.ok());
  REQUIRE(store->CommitBatch().ok());
  CHECK(store->CommitBatch().code() == StatusCode::kFailedPrecondition);
  Reopen();
  CHECK(store->FindWorkerByCurveKey("curve-a").ok());
  CHECK(store->FindWorkerByCurveKey("curve-b").ok());
  CHECK(store->ListWorkers()->size() == 2);
  // A batch that is never committed leaves nothing behind.
  REQUIRE(store->BeginBatch().ok());
  REQUIRE(store->AddWorker("pc-c", "sign-c", "curve-c").ok());
  Reopen();
  CHECK_FALSE(store->FindWorkerByCurveKey("curve-c").ok());
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "migrations run once and data survives reopen",
                 "[store]") {
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  auto id = store->AddWorker("pc-1", "sign", "curve");
  REQUIRE(id.ok());
  // A second run of migration 1 would fail on CREATE TABLE.
  Reopen();
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  auto w = store->FindWorkerByCurveKey("curve");
  REQUIRE(w.ok());
  CHECK(w->id == *id);
  CHECK(w->name == "pc-1");
  REQUIRE(store->CheckConsistency().ok());
  // The journal mode is stored in the file: WAL.
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &q, nullptr) ==
          SQLITE_OK);
  REQUIRE(sqlite3_step(q) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(q, 0))) ==
        "wal");
  sqlite3_finalize(q);
  sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM schema_version", -1, &q, nullptr);
  REQUIRE(sqlite3_step(q) == SQLITE_ROW);
  // One row per migration, not per open.
  CHECK(sqlite3_column_int(q, 0) == kLatestSchema);
  sqlite3_finalize(q);
  sqlite3_close(h);
}

TEST_CASE_METHOD(StoreFixture, "migration 5 keeps every row and constraint",
                 "[store]") {
  // A version-4 database with a job in progress, then the latest program.
  int64_t attempt = 0, worker = 0;
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 4);
    REQUIRE(old.ok());
    REQUIRE(*(*old)->SchemaVersion() == 4);
    auto w = (*old)->AddWorker("pc-1", "sign", "curve");
    REQUIRE(w.ok());
    auto job = (*old)->CreateJob(TwoShardJob());
    REQUIRE(job.ok());
    // Shard 0 leased, as the version-4 program wrote it (today's LeaseShard
    // reads columns a version-4 database does not have).
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
    const std::string lease_sql =
        "INSERT INTO attempts(id,shard_id,job_id,worker_id,state,leased_ms,deadline_ms) "
        "SELECT 1, id, job_id, " + std::to_string(*w) + ", 'leased', " +
        std::to_string(clock.NowMs()) + ", " + std::to_string(clock.NowMs() + 60'000) +
        " FROM shards WHERE idx=0; UPDATE shards SET state='leased' WHERE idx=0; "
        "UPDATE jobs SET state='running';";
    REQUIRE(sqlite3_exec(h, lease_sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
    REQUIRE((*old)->SetAttemptShardHash(1, "h").ok());
    attempt = 1;
    worker = *w;
  }
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  REQUIRE(store->CheckConsistency().ok());
  // The lease made by the version-4 program is answered by this one.
  Verifier verifier;
  auto rec = store->RecordResult(attempt, worker, "out", "sig", verifier, 5);
  REQUIRE(rec.ok());
  CHECK(rec->verdict == ResultVerdict::kAccepted);
  auto jobs = store->ListJobs();
  REQUIRE(jobs.ok());
  REQUIRE(jobs->size() == 1);
  CHECK((*jobs)[0].state == "running");
  CHECK((*jobs)[0].shards_accepted == 1);
  CHECK((*jobs)[0].shards_total == 2);
  // The CHECKs still hold.
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  for (const char* bad : {"UPDATE jobs SET state='paused'",
                          "UPDATE shards SET state='lost'",
                          "UPDATE attempts SET state='accepted'",
                          "UPDATE results SET outcome='maybe'"}) {
    INFO(bad);
    CHECK(sqlite3_exec(h, bad, nullptr, nullptr, nullptr) == SQLITE_CONSTRAINT);
  }
  sqlite3_close(h);
  // And the transitions still run on the rebuilt tables.
  auto w2 = store->AddWorker("pc-2", "sign2", "curve2");
  REQUIRE(w2.ok());
  auto lease = store->LeaseShard(*w2, DeviceCaps{{{"cpu", 1 << 30}, {"cuda", 1 << 30}}}, 60'000);
  REQUIRE(lease.ok());
  REQUIRE(lease->has_value());
  CHECK((*lease)->shard_idx == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "migration 6 gives old jobs and workers their counts",
                 "[store]") {
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 5);
    REQUIRE(old.ok());
    REQUIRE((*old)->AddWorker("pc-1", "sign", "curve").ok());
    REQUIRE((*old)->CreateJob(TwoShardJob()).ok());
  }
  // A result accepted by a version-5 program, written as it wrote it.
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  for (const char* sql : {
           "INSERT INTO attempts(id,shard_id,job_id,worker_id,state,leased_ms,"
           "deadline_ms) VALUES(1,1,1,1,'returned',0,1)",
           "INSERT INTO results(id,attempt_id,shard_id,worker_id,body,signature,"
           "outcome,received_ms) VALUES(1,1,1,1,'out','sig','agreed',0)",
           "UPDATE shards SET state='accepted', accepted_result_id=1 WHERE id=1",
           "UPDATE jobs SET state='running', shards_accepted=1",
           "UPDATE workers SET agreed=1"}) {
    INFO(sql);
    REQUIRE(sqlite3_exec(h, sql, nullptr, nullptr, nullptr) == SQLITE_OK);
  }
  sqlite3_close(h);
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  REQUIRE(store->CheckConsistency().ok());
  CHECK(store->GetJob(1)->summary == R"({"shards":1})");
  CHECK(DbInt("SELECT attempts_failed FROM workers WHERE id=1") == 0);
  CHECK(DbInt("SELECT failures_uncounted FROM shards WHERE id=1") == 0);
}

TEST_CASE_METHOD(StoreFixture, "migration 7 leaves old jobs without an owner",
                 "[store]") {
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 6);
    REQUIRE(old.ok());
    REQUIRE(*(*old)->SchemaVersion() == 6);
    REQUIRE((*old)->CreateJob(TwoShardJob()).ok());
  }
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  REQUIRE(store->CheckConsistency().ok());
  CHECK(store->GetJob(1)->owner_client_id == 0);
  CHECK(DbInt("SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND "
              "name='jobs_by_owner'") == 1);
  JobSpec mine = TwoShardJob();
  mine.owner_client_id = 4;
  auto id = store->CreateJob(mine);
  REQUIRE(id.ok());
  CHECK(store->GetJob(*id)->owner_client_id == 4);
  auto old_jobs = store->ListJobs("", 1000, 0);
  REQUIRE(old_jobs.ok());
  REQUIRE(old_jobs->size() == 1);
  CHECK(old_jobs->front().id == 1);
}

TEST_CASE_METHOD(StoreFixture, "migration 14: workers are available once touched, not before",
                 "[store]") {
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 13);
    REQUIRE(old.ok());
    REQUIRE(*(*old)->SchemaVersion() == 13);
    REQUIRE((*old)->AddWorker("pc-1", "sign-1", "curve-1").ok());
  }
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  REQUIRE(store->CheckConsistency().ok());
  CHECK(DbInt("SELECT available_ms FROM workers WHERE id=1") == 0);
  clock.AdvanceMs(5);
  REQUIRE(store->TouchWorker(1, /*available=*/false).ok());
  CHECK(DbInt("SELECT available_ms FROM workers WHERE id=1") == 0);
  REQUIRE(store->TouchWorker(1).ok());
  CHECK(DbInt("SELECT available_ms FROM workers WHERE id=1") == clock.NowMs());
  CHECK(DbInt("SELECT last_seen_ms FROM workers WHERE id=1") == clock.NowMs());
  REQUIRE(store->WorkerGone(1).ok());
  CHECK(DbInt("SELECT available_ms FROM workers WHERE id=1") == 0);
}

TEST_CASE_METHOD(StoreFixture,
                 "migration 15: open-ended jobs record where their rounds start; older ones "
                 "are not rewound",
                 "[store]") {
  store.reset();
  std::filesystem::remove(path);
  JobSpec spec;
  spec.kind = "finetune";
  spec.params = "{}";
  spec.open_ended = true;
  spec.shards = {{"round-1", "", 0}};
  {
    auto old = Store::Open(path, &clock, 14);
    REQUIRE(old.ok());
    REQUIRE(*(*old)->SchemaVersion() == 14);
  }
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  CHECK(DbInt("SELECT COUNT(*) FROM job_round_starts") == 0);
  for (int i = 0; i < 2; ++i) REQUIRE(store->CreateJob(spec).ok());
  CHECK(DbInt("SELECT round FROM job_round_starts WHERE job_id=2 AND first_shard=0") == 1);
  // Job 1 as a job from before migration 15: no start rows.
  sqlite3* h = nullptr;
  // Job 1's round 1 is applied with a worker's result in it; when that
  // worker is quarantined, the job keeps the round (and says so).
  auto w1 = store->AddWorker("pc-1", "sign-1", "curve-1");
  REQUIRE(w1.ok());
  auto lease = store->LeaseShard(*w1, DeviceCaps{{{"cpu", 1 << 30}}}, 60'000);
  REQUIRE((lease.ok() && lease->has_value() && (*lease)->job_id == 1));
  Verifier verifier;
  auto r = store->RecordResult((*lease)->attempt_id, *w1, "x", "s", verifier, 5);
  REQUIRE(r.ok());
  REQUIRE(r->verdict == ResultVerdict::kAccepted);
  JobAdvance next;
  next.expected_shards_total = 1;
  next.summary = R"({"step":1,"round_first_shard":1})";
  next.shards = {{"round-2", "", 0}};
  next.round = 1;
  next.round_info = "{}";
  REQUIRE(store->AdvanceJob(1, next).ok());
  CHECK(DbInt("SELECT round FROM job_round_starts WHERE job_id=1 AND first_shard=1") == 2);
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, "DELETE FROM job_round_starts WHERE job_id=1", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(h);
  REQUIRE(store->BanWorker(*w1, "test").ok());
  CHECK(store->GetJob(1)->summary == next.summary);
  CHECK(DbInt("SELECT COUNT(*) FROM events WHERE kind='job_not_rewound'") == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture,
                 "migration 8 leaves old jobs without a request key",
                 "[store]") {
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 7);
    REQUIRE(old.ok());
    REQUIRE(*(*old)->SchemaVersion() == 7);
    JobSpec owned = TwoShardJob();
    owned.owner_client_id = 4;
    REQUIRE((*old)->CreateJob(owned).ok());
    REQUIRE((*old)->CreateJob(owned).ok());
  }
  Reopen();
  REQUIRE(*store->SchemaVersion() == kLatestSchema);
  REQUIRE(store->CheckConsistency().ok());
  CHECK(DbInt("SELECT COUNT(*) FROM jobs WHERE request_key IS NULL") == 2);
  CHECK(DbInt("SELECT COUNT(*) FROM sqlite_master WHERE type='index' AND "
              "name='jobs_by_request_key'") == 1);
  JobSpec keyed = TwoShardJob();
  keyed.owner_client_id = 4;
  keyed.request_key = "0123456789abcdef0123456789abcdef";
  auto id = store->CreateJob(keyed);
  REQUIRE(id.ok());
  CHECK(*id == 3);
  CHECK(*store->CreateJob(keyed) == 3);
}

TEST_CASE_METHOD(StoreFixture, "a request key makes one job per client",
                 "[store]") {
  const std::string key = "00112233445566778899aabbccddeeff";
  JobSpec spec = TwoShardJob();
  spec.owner_client_id = 5;
  spec.request_key = key;
  CHECK(store->FindJobByRequestKey(5, key).status().code() ==
        StatusCode::kNotFound);
  auto first = store->CreateJob(spec);
  REQUIRE(first.ok());
  // The retry (its reply was lost) answers the same job and makes nothing,
  // whatever else it carries.
  JobSpec retry = spec;
  retry.priority = 9;
  retry.shards.push_back({"p2", "", 0});
  retry.blobs = {"not-recorded"};
  auto again = store->CreateJob(retry);
  REQUIRE(again.ok());
  CHECK(*again == *first);
  CHECK(store->GetJob(*first)->priority == 3);
  CHECK(store->ListShards(*first)->size() == 2);
  CHECK(DbInt("SELECT COUNT(*) FROM jobs") == 1);
  CHECK(DbInt("SELECT COUNT(*) FROM shards") == 2);
  CHECK(DbInt("SELECT COUNT(*) FROM events WHERE kind='job_created'") == 1);
  CHECK(*store->FindJobByRequestKey(5, key) == *first);

  // Keys are per client; another key, or none, makes a new job.
  spec.owner_client_id = 6;
  auto other_client = store->CreateJob(spec);
  REQUIRE(other_client.ok());
  CHECK(*other_client != *first);
  spec.owner_client_id = 5;
  spec.request_key = "ffeeddccbbaa99887766554433221100";
  auto other_key = store->CreateJob(spec);
  REQUIRE(other_key.ok());
  spec.request_key = "";
  auto plain1 = store->CreateJob(spec);
  auto plain2 = store->CreateJob(spec);
  REQUIRE((plain1.ok() && plain2.ok()));
  CHECK(DbInt("SELECT COUNT(DISTINCT id) FROM jobs") == 5);
  CHECK(*store->FindJobByRequestKey(6, key) == *other_client);
  CHECK(store->FindJobByRequestKey(7, key).status().code() ==
        StatusCode::kNotFound);
  CHECK(store->FindJobByRequestKey(5, "").status().code() ==
        StatusCode::kNotFound);

  // Inside a batch the second submit sees the first, and after a reopen
  // the key is still known.
  REQUIRE(store->BeginBatch().ok());
  spec.request_key = "aaaaaaaabbbbbbbbccccccccdddddddd";
  auto batched = store->CreateJob(spec);
  REQUIRE(batched.ok());
  CHECK(*store->CreateJob(spec) == *batched);
  REQUIRE(store->CommitBatch().ok());
  Reopen();
  CHECK(*store->CreateJob(spec) == *batched);
  CHECK(*store->FindJobByRequestKey(5, key) == *first);
  CHECK(DbInt("SELECT COUNT(*) FROM jobs") == 6);
  // The index refuses a second job with the key, whoever writes it.
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  CHECK(sqlite3_exec(
            h,
            "UPDATE jobs SET request_key='00112233445566778899aabbccddeeff' "
            "WHERE id=(SELECT MAX(id) FROM jobs)",
            nullptr, nullptr, nullptr) == SQLITE_CONSTRAINT);
  sqlite3_close(h);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "a database from a newer program is refused",
                 "[store]") {
  store.reset();
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, "INSERT INTO schema_version VALUES(99, 0)", nullptr,
                       nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(h);
  std::string before = FileBytes(path);
  auto s = Store::Open(path, &clock);
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().code() == StatusCode::kFailedPrecondition);
  CHECK(s.status().message().find("99") != std::string::npos);
  CHECK(s.status().message().find("newer") != std::string::npos);
  CHECK(s.status().message().find("untouched") != std::string::npos);
  // Nothing was written: the same bytes, and no journal left beside it.
  CHECK(FileBytes(path) == before);
  CHECK(DirEntries(dir) == std::vector<std::string>{"state.db"});
}

TEST_CASE_METHOD(StoreFixture,
                 "a migration that fails keeps none of the pending ones",
                 "[store]") {
  // A database of version 7 on which migration 9 cannot apply: something
  // already made a table called job_rounds. Migration 8 applies, 9 fails.
  store.reset();
  std::filesystem::remove(path);
  {
    auto old = Store::Open(path, &clock, 7);
    REQUIRE(old.ok());
    REQUIRE((*old)->AddWorker("pc-1", "sign", "curve").ok());
  }
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, "CREATE TABLE job_rounds(x)", nullptr, nullptr,
                       nullptr) == SQLITE_OK);
  sqlite3_close(h);
  std::string before = FileBytes(path);
  REQUIRE_FALSE(before.empty());
  auto s = Store::Open(path, &clock);
  REQUIRE_FALSE(s.ok());
  INFO(s.status().ToString());
  CHECK(s.status().message().find("migration 9") != std::string::npos);
  CHECK(s.status().message().find("schema version 7 as before") !=
        std::string::npos);
  // Migration 8 did not stay either: the file is as it was, and the
  // release of version 7 still opens it.
  CHECK(FileBytes(path) == before);
  CHECK(DirEntries(dir) == std::vector<std::string>{"state.db"});
  CHECK(DbInt("SELECT MAX(version) FROM schema_version") == 7);
  auto old = Store::Open(path, &clock, 7);
  REQUIRE(old.ok());
  // (Read with SQL: today's worker queries name columns of later versions.)
  CHECK(DbInt("SELECT COUNT(*) FROM workers WHERE name='pc-1'") == 1);
  old->reset();
  // Once the obstacle is gone, 8 and 9 apply.
  REQUIRE(sqlite3_open(path.c_str(), &h) == SQLITE_OK);
  REQUIRE(sqlite3_exec(h, "DROP TABLE job_rounds", nullptr, nullptr, nullptr) ==
          SQLITE_OK);
  sqlite3_close(h);
  Reopen();
  CHECK(*store->SchemaVersion() == kLatestSchema);
  CHECK(Store::LatestSchemaVersion() == kLatestSchema);
  CHECK(DbInt("SELECT COUNT(*) FROM schema_version") == kLatestSchema);
}

TEST_CASE("a file that is not a database is refused", "[store]") {
  std::string dir = TempDir();
  std::string path = dir + "/junk.db";
  FILE* f = fopen(path.c_str(), "w");
  fputs("this is not an SQLite database, it is garbage text\n", f);
  fclose(f);
  FakeClock clock;
  auto s = Store::Open(path, &clock);
  REQUIRE_FALSE(s.ok());
  CHECK(s.status().message().find(path) != std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_CASE_METHOD(StoreFixture, "workers", "[store]") {
  auto a = store->AddWorker("pc-1", "s1", "c1");
  REQUIRE(a.ok());
  auto dup = store->AddWorker("pc-2", "s2", "c1");
  CHECK(dup.status().code() == StatusCode::kAlreadyExists);
  CHECK(store->FindWorkerByCurveKey("nope").status().code() ==
        StatusCode::kNotFound);
  CHECK(store->GetWorker(999).status().code() == StatusCode::kNotFound);

  CHECK(store->SetWorkerDevices(*a, "{not json", 1).code() ==
        StatusCode::kInvalidArgument);
  CHECK(store->SetWorkerDevices(999, "[]", 1).code() == StatusCode::kNotFound);
  REQUIRE(store->SetWorkerDevices(*a, R"([{"backend":"cuda"}])", 42.5).ok());
  clock.AdvanceMs(5000);
  REQUIRE(store->TouchWorker(*a).ok());
  auto w = store->GetWorker(*a);
  REQUIRE(w.ok());
  CHECK(w->devices_json == R"([{"backend":"cuda"}])");
  CHECK(w->speed_gflops == 42.5);
  CHECK(w->last_seen_ms == clock.NowMs());
  CHECK(w->created_ms == clock.NowMs() - 5000);
  CHECK(w->trust == 0.5);
  CHECK_FALSE(w->banned);

  auto report = store->BanWorker(*a, "caught lying");
  REQUIRE(report.ok());
  CHECK(store->GetWorker(*a)->banned);
  auto all = store->ListWorkers();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 1);
  auto events = store->ListEvents();
  REQUIRE(events.ok());
  CHECK(events->back().kind == "worker_banned");
  CHECK(events->back().message.find("caught lying") != std::string::npos);
}

TEST_CASE_METHOD(StoreFixture, "tokens: uses, expiry, unknown", "[store]") {
  int64_t expires = clock.NowMs() + 60000;
  REQUIRE(store->AddToken("hash-a", 2, expires).ok());
  CHECK(store->AddToken("hash-b", 0, expires).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(store->ConsumeToken("hash-a").ok());
  CHECK(store->ConsumeToken("hash-a").ok());
  CHECK(store->ConsumeToken("hash-a").status().code() ==
        StatusCode::kResourceExhausted);
  CHECK(store->ConsumeToken("hash-x").status().code() == StatusCode::kNotFound);

  REQUIRE(store->AddToken("hash-c", 5, expires).ok());
  clock.AdvanceMs(60000);
  CHECK(store->ConsumeToken("hash-c").status().code() ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE_METHOD(StoreFixture, "enrollment takes a token use only on success",
                 "[store]") {
  REQUIRE(store->AddToken("tok", 1, clock.NowMs() + 1000).ok());
  REQUIRE(store->AddWorker("old", "s", "taken").ok());
  auto dup = store->EnrollWorker("tok", "new", "s2", "taken");
  CHECK(dup.status().code() == StatusCode::kAlreadyExists);
  auto ok = store->EnrollWorker("tok", "new", "s2", "fresh");
  REQUIRE(ok.ok());
  CHECK(store->GetWorker(*ok)->name == "new");
  CHECK(store->EnrollWorker("tok", "third", "s3", "other").status().code() ==
        StatusCode::kResourceExhausted);
  CHECK(store->EnrollWorker("bad", "third", "s3", "other").status().code() ==
        StatusCode::kNotFound);
}

TEST_CASE_METHOD(StoreFixture, "clients", "[store]") {
  auto a = store->AddClient("alice", "ck", ClientRole::kAdmin);
  REQUIRE(a.ok());
  CHECK(store->AddClient("bob", "ck", ClientRole::kSubmitter).status().code() ==
        StatusCode::kAlreadyExists);
  auto c = store->FindClientByCurveKey("ck");
  REQUIRE(c.ok());
  CHECK(c->name == "alice");
  CHECK(c->role == ClientRole::kAdmin);
  CHECK(store->FindClientByCurveKey("zz").status().code() ==
        StatusCode::kNotFound);
}

TEST_CASE_METHOD(StoreFixture, "client names are unique", "[store]") {
  REQUIRE(store->AddClient("alice", "ck1", ClientRole::kAdmin).ok());
  auto dup = store->AddClient("alice", "ck2", ClientRole::kSubmitter);
  REQUIRE_FALSE(dup.ok());
  CHECK(dup.status().code() == StatusCode::kAlreadyExists);
  CHECK(dup.status().message().find("named 'alice'") != std::string::npos);
  // The key is still free: nothing of the refused client was stored.
  CHECK(store->FindClientByCurveKey("ck2").status().code() ==
        StatusCode::kNotFound);
  auto key = store->AddClient("bob", "ck1", ClientRole::kSubmitter);
  CHECK(key.status().code() == StatusCode::kAlreadyExists);
  CHECK(key.status().message().find("curve key") != std::string::npos);
  CHECK(store->ListClients()->size() == 1);
}

TEST_CASE_METHOD(StoreFixture, "clients are listed, found by name and removed",
                 "[store]") {
  auto root = store->AddClient("root", "k-root", ClientRole::kAdmin);
  clock.AdvanceMs(1000);
  auto sub = store->AddClient("sub", "k-sub", ClientRole::kSubmitter);
  REQUIRE((root.ok() && sub.ok()));
  auto all = store->ListClients();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].id == *root);
  CHECK((*all)[0].name == "root");
  CHECK((*all)[0].curve_pk == "k-root");
  CHECK((*all)[0].role == ClientRole::kAdmin);
  CHECK((*all)[1].name == "sub");
  CHECK((*all)[1].role == ClientRole::kSubmitter);
  CHECK((*all)[1].created_ms == (*all)[0].created_ms + 1000);
  CHECK(store->FindClientByCurveKey("k-sub")->created_ms ==
        (*all)[1].created_ms);

  auto s = store->FindClientByName("sub");
  REQUIRE(s.ok());
  CHECK(s->id == *sub);
  CHECK(s->curve_pk == "k-sub");
  CHECK(store->FindClientByName("nobody").status().code() ==
        StatusCode::kNotFound);
  CHECK(store->RemoveClient("nobody").code() == StatusCode::kNotFound);

  // The last admin stays, whatever else is there.
  Status last = store->RemoveClient("root");
  CHECK(last.code() == StatusCode::kFailedPrecondition);
  CHECK(last.message().find("last admin") != std::string::npos);
  CHECK(store->FindClientByName("root").ok());

  REQUIRE(store->RemoveClient("sub").ok());
  CHECK(store->FindClientByName("sub").status().code() == StatusCode::kNotFound);
  CHECK(store->FindClientByCurveKey("k-sub").status().code() ==
        StatusCode::kNotFound);
  CHECK(store->RemoveClient("sub").code() == StatusCode::kNotFound);
  // Its name and key may be used again.
  REQUIRE(store->AddClient("sub", "k-sub", ClientRole::kSubmitter).ok());

  // With a second admin, the first may go; then the second is the last.
  REQUIRE(store->AddClient("root2", "k-root2", ClientRole::kAdmin).ok());
  REQUIRE(store->RemoveClient("root").ok());
  CHECK(store->RemoveClient("root2").code() == StatusCode::kFailedPrecondition);
  CHECK(store->ListClients()->size() == 2);
}

TEST_CASE_METHOD(StoreFixture, "jobs: create, read, list, cancel", "[store]") {
  JobSpec bad = TwoShardJob();
  bad.shards.clear();
  CHECK(store->CreateJob(bad).status().code() == StatusCode::kInvalidArgument);
  bad = TwoShardJob();
  bad.redundancy = 0;
  CHECK(store->CreateJob(bad).status().code() == StatusCode::kInvalidArgument);
  bad = TwoShardJob();
  bad.kind = "";
  CHECK(store->CreateJob(bad).status().code() == StatusCode::kInvalidArgument);

  auto id = store->CreateJob(TwoShardJob());
  REQUIRE(id.ok());
  auto job = store->GetJob(*id);
  REQUIRE(job.ok());
  CHECK(job->state == "queued");
  CHECK(job->kind == "infer");
  CHECK(job->priority == 3);
  CHECK(job->shards_total == 2);
  CHECK(job->shards_accepted == 0);
  CHECK(job->params == R"({"model":"m"})");
  auto shards = store->ListShards(*id);
  REQUIRE(shards.ok());
  REQUIRE(shards->size() == 2);
  CHECK((*shards)[1].idx == 1);
  CHECK((*shards)[1].state == "pending");
  CHECK(store->GetJob(77).status().code() == StatusCode::kNotFound);

  auto id2 = store->CreateJob(TwoShardJob());
  REQUIRE(id2.ok());
  auto cancelled = store->CancelJob(*id2, "by alice");
  REQUIRE(cancelled.ok());
  CHECK(cancelled->cancelled.empty());
  CHECK(store->GetJob(*id2)->state == "cancelled");
  CHECK(store->GetJob(*id2)->reason == "by alice");
  CHECK(store->CancelJob(*id2, "again").status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(store->CancelJob(99, "x").status().code() == StatusCode::kNotFound);

  CHECK(store->ListJobs()->size() == 2);
  CHECK(store->ListJobs()->front().id == *id2);  // newest first
  CHECK(store->ListJobs("queued")->size() == 1);
  CHECK(store->ListJobs("cancelled")->front().id == *id2);
  CHECK(store->ListShards(*id2)->front().state == "cancelled");
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "blob records and events", "[store]") {
  auto job = store->CreateJob(TwoShardJob());
  REQUIRE(job.ok());
  std::string h(64, 'a');
  CHECK(store->LinkJobBlob(*job, h).code() == StatusCode::kNotFound);
  REQUIRE(store->RecordBlob(h, 10).ok());
  REQUIRE(store->RecordBlob(h, 10).ok());
  REQUIRE(store->LinkJobBlob(*job, h).ok());
  REQUIRE(store->LinkJobBlob(*job, h).ok());
  CHECK(*store->JobBlobs(*job) == std::vector<std::string>{h});

  REQUIRE(store->AddEvent("note", *job, 0, "hello").ok());
  auto all = store->ListEvents();
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);  // job_created, note
  CHECK((*all)[0].kind == "job_created");
  CHECK((*all)[1].message == "hello");
  CHECK((*all)[1].job_id == *job);
  CHECK((*all)[1].worker_id == 0);
  CHECK(store->ListEvents((*all)[0].id)->size() == 1);
  CHECK(store->ListEvents(0, 1)->size() == 1);
}

TEST_CASE_METHOD(StoreFixture, "an ended job releases the blobs it does not keep; blobs "
                 "linked to no job are dropped after the grace", "[store][blob]") {
  std::string in(64, 'a'), made(64, 'b'), out(64, 'c'), shared(64, 'd'), loose(64, 'e'),
      uploaded(64, 'f'), both(64, '0');
  // Made by the coordinator or a worker: collectable; a client's upload
  // (and anything a client uploaded too) is not.
  for (const auto& h : {made, out, shared, loose, both})
    REQUIRE(store->RecordBlob(h, 10, /*collectable=*/true).ok());
  for (const auto& h : {in, uploaded, both}) REQUIRE(store->RecordBlob(h, 10).ok());
  JobSpec a = TwoShardJob();
  a.blobs = {in, made, out, shared};
  auto ja = store->CreateJob(a);
  REQUIRE(ja.ok());
  JobSpec b = TwoShardJob();
  b.blobs = {shared};
  auto jb = store->CreateJob(b);
  REQUIRE(jb.ok());
  CHECK(*store->ActiveJobsOfBlob(shared) == std::vector<int64_t>{*ja, *jb});
  CHECK(*store->ActiveJobsOfBlob(in) == std::vector<int64_t>{*ja});
  CHECK(store->ActiveJobsOfBlob(loose)->empty());
  // Running jobs keep everything; only an ended one is released.
  CHECK(store->EndedJobsToRelease(10)->empty());
  CHECK(store->ReleaseJobBlobs(*ja, {in}).status().code() == StatusCode::kFailedPrecondition);
  clock.AdvanceMs(10'000);
  // `loose` is linked to no job: dropped once recorded before the cut-off.
  auto dropped = store->DropUnlinkedBlobs(clock.NowMs() - 20'000, 100);
  REQUIRE(dropped.ok());
  CHECK(dropped->empty());  // within the grace
  dropped = store->DropUnlinkedBlobs(clock.NowMs(), 100);
  REQUIRE(dropped.ok());
  CHECK(*dropped == std::vector<std::string>{loose});
  CHECK_FALSE(*store->HasBlob(loose));

  REQUIRE(store->CancelJob(*ja, "done").ok());
  auto ended = store->EndedJobsToRelease(10);
  REQUIRE(ended.ok());
  REQUIRE(ended->size() == 1);
  CHECK(ended->front().id == *ja);
  auto released = store->ReleaseJobBlobs(*ja, {in, out});
  REQUIRE(released.ok());
  CHECK(*released == 2);  // made, shared
  CHECK(*store->JobBlobs(*ja) == std::vector<std::string>{in, out});
  CHECK(store->EndedJobsToRelease(10)->empty());  // once
  // `made` is linked to no job now; `shared` still to job b.
  dropped = store->DropUnlinkedBlobs(clock.NowMs() + 1, 100);
  REQUIRE(dropped.ok());
  CHECK(*dropped == std::vector<std::string>{made});
  CHECK(*store->HasBlob(shared));
  CHECK(*store->HasBlob(in));
  CHECK(*store->HasBlob(out));
  // The limit bounds one call.
  CHECK(*store->HasBlob(uploaded));  // a client's upload linked to no job stays
  CHECK(*store->HasBlob(both));
  // Recorded again (uploaded again): the grace starts over.
  REQUIRE(store->RecordBlob(std::string(64, '9'), 1, true).ok());
  clock.AdvanceMs(5'000);
  REQUIRE(store->RecordBlob(std::string(64, '9'), 1, true).ok());
  CHECK(store->DropUnlinkedBlobs(clock.NowMs() - 1'000, 100)->empty());
  CHECK(store->DropUnlinkedBlobs(clock.NowMs() + 1, 100)->size() == 1);
  for (char c : {'1', '2', '3'}) REQUIRE(store->RecordBlob(std::string(64, c), 1, true).ok());
  clock.AdvanceMs(1);
  CHECK(store->DropUnlinkedBlobs(clock.NowMs(), 2)->size() == 2);
  CHECK(store->DropUnlinkedBlobs(clock.NowMs(), 2)->size() == 1);
  REQUIRE(store->CheckConsistency().ok());
  // A job failed for a damaged blob (blob_checks.cc): ended like a cancel.
  CHECK(*store->ActiveJobsOfBlob(shared) == std::vector<int64_t>{*jb});
  auto failed = store->FailJob(*jb, "blob damaged");
  REQUIRE(failed.ok());
  CHECK(failed->failed_jobs == std::vector<int64_t>{*jb});
  CHECK(store->GetJob(*jb)->state == "failed");
  CHECK(store->GetJob(*jb)->reason == "blob damaged");
  CHECK(store->ActiveJobsOfBlob(shared)->empty());
  CHECK(store->FailJob(*jb, "again").status().code() == StatusCode::kFailedPrecondition);
  CHECK(store->FailJob(999, "none").status().code() == StatusCode::kNotFound);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "a job links its blobs when it is created",
                 "[store]") {
  std::string a(64, 'a'), b(64, 'b'), missing(64, 'c');
  CHECK_FALSE(*store->HasBlob(a));
  REQUIRE(store->RecordBlob(a, 10).ok());
  REQUIRE(store->RecordBlob(b, 20).ok());
  CHECK(*store->HasBlob(a));
  CHECK(*store->HasBlob(b));
  CHECK_FALSE(*store->HasBlob(missing));

  // One blob it refers to is not held: nothing of the job is stored.
  JobSpec bad = TwoShardJob();
  bad.blobs = {a, missing, b};
  auto refused = store->CreateJob(bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kNotFound);
  CHECK(refused.status().message().find(missing) != std::string::npos);
  CHECK(store->ListJobs()->empty());
  CHECK(DbInt("SELECT COUNT(*) FROM shards") == 0);
  CHECK(DbInt("SELECT COUNT(*) FROM job_blobs") == 0);
  CHECK(store->ListEvents()->empty());

  JobSpec good = TwoShardJob();
  good.blobs = {b, a, b};  // a repeat links once
  auto job = store->CreateJob(good);
  REQUIRE(job.ok());
  CHECK(*store->JobBlobs(*job) == std::vector<std::string>{a, b});
  CHECK(store->ListShards(*job)->size() == 2);
  // A job without blobs links none.
  auto plain = store->CreateJob(TwoShardJob());
  REQUIRE(plain.ok());
  CHECK(store->JobBlobs(*plain)->empty());
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "jobs are listed by owner", "[store]") {
  JobSpec spec = TwoShardJob();
  spec.owner_client_id = 5;
  auto a1 = store->CreateJob(spec);
  auto a2 = store->CreateJob(spec);
  spec.owner_client_id = 6;
  auto b1 = store->CreateJob(spec);
  auto legacy = store->CreateJob(TwoShardJob());  // no owner recorded
  REQUIRE((a1.ok() && a2.ok() && b1.ok() && legacy.ok()));
  REQUIRE(store->CancelJob(*a1, "x").ok());
  CHECK(store->GetJob(*a1)->owner_client_id == 5);
  CHECK(store->GetJob(*legacy)->owner_client_id == 0);

  auto ids = [](const Result<std::vector<JobInfo>>& jobs) {
    REQUIRE(jobs.ok());
    std::vector<int64_t> out;
    for (const auto& j : *jobs) out.push_back(j.id);
    return out;
  };
  CHECK(ids(store->ListJobs("", 1000, 5)) == std::vector<int64_t>{*a2, *a1});
  CHECK(ids(store->ListJobs("", 1000, 6)) == std::vector<int64_t>{*b1});
  CHECK(ids(store->ListJobs("", 1000, 0)) == std::vector<int64_t>{*legacy});
  CHECK(ids(store->ListJobs("", 1000, 7)).empty());
  CHECK(ids(store->ListJobs("queued", 1000, 5)) == std::vector<int64_t>{*a2});
  CHECK(ids(store->ListJobs("cancelled", 1000, 5)) ==
        std::vector<int64_t>{*a1});
  CHECK(ids(store->ListJobs("", 1, 5)) == std::vector<int64_t>{*a2});
  // -1: everyone's; a limit <= 0: no limit.
  CHECK(ids(store->ListJobs("", 1000, -1)).size() == 4);
  CHECK(ids(store->ListJobs()).size() == 4);
  CHECK(ids(store->ListJobs("", 0)).size() == 4);
  CHECK(ids(store->ListJobs("", 0, 5)) == std::vector<int64_t>{*a2, *a1});
}

TEST_CASE_METHOD(StoreFixture, "accepted results carry what a fetch shows",
                 "[store]") {
  auto w1 = store->AddWorker("pc-one", "s1", "c1");
  auto w2 = store->AddWorker("pc-two", "s2", "c2");
  REQUIRE((w1.ok() && w2.ok()));
  JobSpec spec = TwoShardJob();
  spec.shards = {{"p0", "", 0}, {"p1", "", 0}, {"p2", "", 0}};
  auto job = store->CreateJob(spec);
  REQUIRE(job.ok());
  DeviceCaps cpu{{{"cpu", 1 << 30}}};
  Verifier verifier;
  // pc-one leases shards 0 and 1, pc-two shard 2; results come in out of
  // order, and shard 1 is not accepted (yet).
  auto l0 = store->LeaseShard(*w1, cpu, 60'000);
  auto l1 = store->LeaseShard(*w1, cpu, 60'000);
  auto l2 = store->LeaseShard(*w2, cpu, 60'000);
  REQUIRE((l0.ok() && l0->has_value() && l1.ok() && l1->has_value() &&
           l2.ok() && l2->has_value()));
  REQUIRE((*l2)->shard_idx == 2);
  REQUIRE(store->RecordResult((*l2)->attempt_id, *w2, "out-2", "s", verifier, 5)
              .ok());
  REQUIRE(store->RecordResult((*l0)->attempt_id, *w1, "output-0", "s",
                              verifier, 5)
              .ok());

  auto all = store->AcceptedResults(*job);
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].shard_idx == 0);
  CHECK((*all)[0].params == "p0");
  CHECK((*all)[0].body == "output-0");
  CHECK((*all)[0].worker_id == *w1);
  CHECK((*all)[0].worker_name == "pc-one");
  CHECK((*all)[1].shard_idx == 2);
  CHECK((*all)[1].params == "p2");
  CHECK((*all)[1].body == "out-2");
  CHECK((*all)[1].worker_id == *w2);
  CHECK((*all)[1].worker_name == "pc-two");

  // Paging: from an index, and by size (params + body bytes).
  auto from1 = store->AcceptedResults(*job, 1);
  REQUIRE(from1.ok());
  REQUIRE(from1->size() == 1);
  CHECK(from1->front().shard_idx == 2);
  CHECK(store->AcceptedResults(*job, 3)->empty());
  CHECK(store->AcceptedResults(*job, 0, 10)->size() == 1);  // 2 + 8 bytes
  CHECK(store->AcceptedResults(*job, 0, 17)->size() == 2);  // + 2 + 5
  CHECK(store->AcceptedResults(*job, 0, 16)->size() == 1);
  // One result always comes back, however large.
  auto one = store->AcceptedResults(*job, 0, 1);
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  CHECK(one->front().shard_idx == 0);
  CHECK(store->AcceptedResults(999)->empty());
}

TEST_CASE_METHOD(StoreFixture, "events are pruned by age and by count",
                 "[store]") {
  for (int i = 0; i < 50; ++i) {
    REQUIRE(store->AddEvent("old", 0, 0, "e" + std::to_string(i)).ok());
  }
  clock.AdvanceMs(10'000);
  for (int i = 0; i < 30; ++i) {
    REQUIRE(store->AddEvent("new", 0, 0, "e" + std::to_string(i)).ok());
  }
  // Nothing is old enough and the table is under the count: nothing goes.
  CHECK(*store->PruneEvents(20'000, 1000) == 0);
  // By age: the 50 written 10 s ago.
  CHECK(*store->PruneEvents(5'000, 1000) == 50);
  auto left = store->ListEvents();
  REQUIRE(left->size() == 30);
  CHECK(left->front().kind == "new");
  // By count: the newest 10 stay.
  CHECK(*store->PruneEvents(60'000, 10) == 20);
  left = store->ListEvents();
  REQUIRE(left->size() == 10);
  CHECK(left->back().message == "e29");
  CHECK(left->front().message == "e20");
  // New events still get new ids.
  REQUIRE(store->AddEvent("later", 0, 0, "x").ok());
  CHECK(store->ListEvents()->back().id > left->back().id);
}

TEST_CASE_METHOD(StoreFixture, "an accepted result is folded into the job summary",
                 "[store]") {
  auto w1 = store->AddWorker("pc-1", "s1", "c1");
  auto w2 = store->AddWorker("pc-2", "s2", "c2");
  JobSpec spec = TwoShardJob();
  spec.redundancy = 2;
  spec.shards = {{"p0", "", 0}};
  auto job = store->CreateJob(spec);
  REQUIRE(job.ok());
  DeviceCaps cpu{{{"cpu", 1 << 30}}};
  auto a = store->LeaseShard(*w1, cpu, 60'000);
  auto b = store->LeaseShard(*w2, cpu, 60'000);
  REQUIRE((a.ok() && a->has_value() && b.ok() && b->has_value()));
  Verifier verifier;
  int folds = 0;
  SummaryFold fold = [&](std::string_view kind, std::string_view summary,
                         int64_t idx, std::string_view body) {
    ++folds;
    CHECK(kind == "infer");
    CHECK(idx == 0);
    return std::string(summary) + "+" + std::string(body);
  };
  CHECK(store->GetJob(*job)->summary == "{}");
  auto r1 = store->RecordResult((*a)->attempt_id, *w1, "first", "s", verifier, 5, fold);
  REQUIRE(r1.ok());
  CHECK(folds == 0);  // waiting for agreement: nothing accepted yet
  auto r2 = store->RecordResult((*b)->attempt_id, *w2, "first", "s", verifier, 5, fold);
  REQUIRE(r2.ok());
  CHECK(r2->verdict == ResultVerdict::kAccepted);
  CHECK(folds == 1);
  CHECK(store->GetJob(*job)->summary == "{}+first");
}

TEST_CASE_METHOD(StoreFixture, "a rejoining worker keeps only the leases it holds",
                 "[store]") {
  auto w = store->AddWorker("pc-1", "s1", "c1");
  JobSpec spec = TwoShardJob();
  spec.shards = {{"p0", "", 0}, {"p1", "", 0}, {"p2", "", 0}};
  REQUIRE(store->CreateJob(spec).ok());
  DeviceCaps cpu{{{"cpu", 1 << 30}}};
  CHECK(*store->CountPendingShards() == 3);
  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back((*store->LeaseShard(*w, cpu, 60'000))->attempt_id);
  CHECK(*store->CountPendingShards() == 0);
  CHECK(*store->LiveAttempts(*w) == ids);
  auto report = store->ReleaseWorker(*w, 5, {ids[0], ids[2], 999});
  REQUIRE(report.ok());
  CHECK(report->released_attempts == std::vector<int64_t>{ids[1]});
  CHECK(report->released_workers == std::vector<int64_t>{*w});
  CHECK(*store->LiveAttempts(*w) == std::vector<int64_t>{ids[0], ids[2]});
  CHECK(*store->CountPendingShards() == 1);
  REQUIRE(store->CheckConsistency().ok());
}

TEST_CASE_METHOD(StoreFixture, "an attempt tells what its result must answer",
                 "[store]") {
  auto w = store->AddWorker("pc-1", "s1", "c1");
  REQUIRE(store->CreateJob(TwoShardJob()).ok());
  auto l = store->LeaseShard(*w, DeviceCaps{{{"cpu", 1 << 30}}}, 60'000);
  REQUIRE((l.ok() && l->has_value()));
  auto work = store->GetAttemptWork((*l)->attempt_id);
  REQUIRE(work.ok());
  CHECK(work->shard_hash.empty());
  CHECK(work->kind == "infer");
  CHECK(work->params == "p0");
  REQUIRE(store->SetAttemptShardHash((*l)->attempt_id, "hash").ok());
  CHECK(store->GetAttemptWork((*l)->attempt_id)->shard_hash == "hash");
  CHECK(store->GetAttemptWork(12345).status().code() == StatusCode::kNotFound);
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

TEST_CASE_METHOD(StoreFixture, "an open-ended job waits for its planner round by round",
                 "[store]") {
  auto w = store->AddWorker("pc-1", "s1", "c1");
  REQUIRE(w.ok());
  JobSpec spec = TwoShardJob();
  spec.kind = "finetune";
  spec.open_ended = true;
  spec.shards = {{"step1-a", "", 0}, {"step1-b", "", 0}};
  auto job = store->CreateJob(spec);
  REQUIRE(job.ok());
  CHECK(store->GetJob(*job)->open_ended);
  DeviceCaps cpu{{{"cpu", 1 << 30}}};
  Verifier verifier;
  auto finish_round = [&](int shards) {
    bool awaits = false;
    for (int i = 0; i < shards; ++i) {
      auto l = store->LeaseShard(*w, cpu, 60'000);
      REQUIRE((l.ok() && l->has_value()));
      auto r = store->RecordResult((*l)->attempt_id, *w, "grad", "s", verifier, 5);
      REQUIRE(r.ok());
      CHECK(r->verdict == ResultVerdict::kAccepted);
      CHECK_FALSE(r->job_finished);
      awaits = r->job_awaits_advance;
      CHECK(awaits == (i == shards - 1));
    }
    return awaits;
  };
  CHECK(store->JobsAwaitingAdvance()->empty());
  REQUIRE(finish_round(2));
  // Every shard accepted: the job still runs, waiting for its planner.
  CHECK(store->GetJob(*job)->state == "running");
  auto waiting = store->JobsAwaitingAdvance();
  REQUIRE(waiting.ok());
  REQUIRE(waiting->size() == 1);
  CHECK(waiting->front().id == *job);

  JobAdvance next;
  next.expected_shards_total = 2;
  next.summary = R"({"step":1})";
  next.shards = {{"step2-a", "", 0}};
  next.blobs = {{std::string(64, 'a'), 10}};
  next.round = 1;
  next.round_info = R"({"step":1,"loss":2.5})";
  // A stale view (another shard count) changes nothing.
  JobAdvance stale = next;
  stale.expected_shards_total = 1;
  CHECK(store->AdvanceJob(*job, stale).code() == StatusCode::kFailedPrecondition);
  JobAdvance empty = next;
  empty.shards.clear();
  CHECK(store->AdvanceJob(*job, empty).code() == StatusCode::kInvalidArgument);
  // An advance planned off the event loop names the summary and the results
  // it read; one whose view changed meanwhile changes nothing.
  auto accepted = store->AcceptedResults(*job, 0);
  REQUIRE(accepted.ok());
  REQUIRE(accepted->size() == 2);
  CHECK((*accepted)[0].result_id > 0);
  CHECK((*accepted)[1].result_id > (*accepted)[0].result_id);
  const std::string summary_now = store->GetJob(*job)->summary;
  JobAdvance moved = next;
  moved.planned_summary = summary_now + " ";
  auto refused = store->AdvanceJob(*job, moved);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(refused.message(), Catch::Contains("summary changed"));
  moved = next;
  moved.results_from_shard = 0;
  moved.expected_result_ids = {(*accepted)[0].result_id, (*accepted)[1].result_id + 1};
  refused = store->AdvanceJob(*job, moved);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK_THAT(refused.message(), Catch::Contains("accepted results changed"));
  moved.expected_result_ids = {(*accepted)[1].result_id};
  CHECK(store->AdvanceJob(*job, moved).code() == StatusCode::kFailedPrecondition);
  CHECK(store->GetJob(*job)->shards_total == 2);  // nothing changed so far
  next.planned_summary = summary_now;
  next.results_from_shard = 0;
  next.expected_result_ids = {(*accepted)[0].result_id, (*accepted)[1].result_id};
  REQUIRE(store->AdvanceJob(*job, next).ok());
  // Applied once: the same advance again is stale.
  CHECK(store->AdvanceJob(*job, next).code() == StatusCode::kFailedPrecondition);
  auto j = store->GetJob(*job);
  CHECK(j->shards_total == 3);
  CHECK(j->shards_accepted == 2);
  CHECK(j->summary == R"({"step":1})");
  CHECK(*store->HasBlob(std::string(64, 'a')));
  CHECK(store->JobBlobs(*job)->size() == 1);
  CHECK(store->JobsAwaitingAdvance()->empty());
  auto shards = store->ListShards(*job);
  REQUIRE(shards->size() == 3);
  CHECK((*shards)[2].idx == 2);
  CHECK((*shards)[2].state == "pending");

  // Survives a restart half-way through a round.
  Reopen();
  REQUIRE(finish_round(1));
  CHECK(store->JobsAwaitingAdvance()->size() == 1);
  JobAdvance done;
  done.expected_shards_total = 3;
  done.end = JobAdvance::End::kSucceed;
  done.summary = R"({"step":2})";
  done.round = 2;
  done.round_info = R"({"step":2,"loss":2.0})";
  REQUIRE(store->AdvanceJob(*job, done).ok());
  j = store->GetJob(*job);
  CHECK(j->state == "succeeded");
  CHECK(j->summary == R"({"step":2})");
  CHECK(store->AdvanceJob(*job, done).code() == StatusCode::kFailedPrecondition);
  auto rounds = store->JobRounds(*job);
  REQUIRE(rounds.ok());
  REQUIRE(rounds->size() == 2);
  CHECK((*rounds)[0].round == 1);
  CHECK((*rounds)[1].info == R"({"step":2,"loss":2.0})");
  CHECK(store->JobRounds(*job, 2)->size() == 1);
  CHECK(store->JobRounds(*job, 0, 1)->size() == 1);

  // A plain job is not advanced, and a failing advance ends an open one.
  JobSpec plain = TwoShardJob();
  plain.shards = {{"x", "", 0}};
  auto pj = store->CreateJob(plain);
  REQUIRE(pj.ok());
  JobAdvance any;
  any.expected_shards_total = 1;
  any.shards = {{"y", "", 0}};
  CHECK(store->AdvanceJob(*pj, any).code() == StatusCode::kFailedPrecondition);
  REQUIRE(store->CancelJob(*pj, "not needed").ok());
  spec.shards = {{"only", "", 0}};
  auto job2 = store->CreateJob(spec);
  REQUIRE(job2.ok());
  REQUIRE(finish_round(1));
  JobAdvance fail;
  fail.expected_shards_total = 1;
  fail.end = JobAdvance::End::kFail;
  fail.reason = "the loss is not finite";
  REQUIRE(store->AdvanceJob(*job2, fail).ok());
  CHECK(store->GetJob(*job2)->state == "failed");
  CHECK(store->GetJob(*job2)->reason == "the loss is not finite");
}

}  // namespace
}  // namespace pcfarm
