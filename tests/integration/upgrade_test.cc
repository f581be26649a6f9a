// Upgrades and mixed versions (issue 15, parts 2 and 3), with real
// processes: the data directory that today's release made
// (tests/fixtures/datadir-v9, see its README) opens with this build, shows
// the same jobs, workers, users and blobs, and its unfinished jobs finish;
// a data directory of a newer schema is refused, byte for byte untouched;
// workers and CLIs that speak another protocol version are told what to
// upgrade, counted, and such workers are listed as outdated.
#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "base/clock.h"
#include "coordinator/client_profile.h"
#include "coordinator/store.h"
#include "proto/wire.h"
#include "tests/integration/cluster_helpers.h"  // first of ours: it configures Catch
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"
#include "tests/integration/stepping.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every file under `dir` (relative path -> bytes), and every directory.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::string rel = fs::relative(e.path(), dir).string();
    out[rel] = e.is_directory() ? "<dir>" : ReadAll(e.path().string());
  }
  return out;
}

json JobById(const json& jobs, int64_t id) {
  for (const auto& j : jobs) {
    if (j["job_id"].get<int64_t>() == id) return j;
  }
  return json();
}

TEST_CASE("the data directory of schema version 9 opens and its jobs finish",
          "[integration][upgrade]") {
  const json expected =
      json::parse(ReadAll(std::string(PCFARM_DATADIR_FIXTURE) + "/expected.json"));
  REQUIRE(expected["schema_version"] == 9);
  Cluster c;
  REQUIRE_OK(c->InitFromDataDir(PCFARM_DATADIR_FIXTURE));
  REQUIRE_OK(c->StartCoordinator());
  CHECK(DbInt(&c.c, "SELECT MAX(version) FROM schema_version") ==
        Store::LatestSchemaVersion());

  // The same jobs, as the release that made them showed them.
  auto jobs = c->CliJson({"jobs"});
  REQUIRE_OK(jobs);
  REQUIRE(jobs->size() == expected["jobs"].size());
  for (const auto& want : expected["jobs"]) {
    int64_t id = want["job_id"].get<int64_t>();
    INFO("job " << id << ": " << want.dump());
    json have = JobById(*jobs, id);
    REQUIRE(have.is_object());
    for (const char* field : {"kind", "state", "owner", "priority", "redundancy",
                              "shards_total", "shards_accepted", "reason",
                              "created_ms"}) {
      INFO(field);
      CHECK(have[field] == want[field]);
    }
    auto status = c->JobStatus(id);
    REQUIRE_OK(status);
    CHECK((*status)["state"] == want["state"]);
  }
  std::map<std::string, int64_t> job_of;  // state -> job id
  for (const auto& j : expected["jobs"]) job_of[j["state"]] = j["job_id"];
  REQUIRE(job_of.size() == 5);

  // Its workers (none connected), its users, tokens and blobs.
  auto workers = c->Workers();
  REQUIRE_OK(workers);
  REQUIRE(workers->size() == expected["workers"].size());
  for (size_t i = 0; i < workers->size(); ++i) {
    CHECK((*workers)[i]["name"] == expected["workers"][i]["name"]);
    CHECK((*workers)[i]["connected"] == false);
    CHECK((*workers)[i]["outdated"] == false);
  }
  CommandResult clients = c->Cli({"client", "list"});
  INFO(clients.Describe());
  CHECK(clients.exit_code == 0);
  CHECK(clients.out.find("alice") != std::string::npos);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM tokens WHERE uses_left > 0") >= 1);
  auto blobs = DbRows(&c.c, "SELECT hash FROM blobs");
  CHECK(blobs.size() == 2);
  for (const auto& b : blobs) {
    CHECK(fs::exists(c->coordinator_dir() + "/blobs/" + b[0].substr(0, 2) + "/" + b[0]));
  }
  // alice's profile still works, and still sees only her job.
  CommandResult mine = c->Run({c->Binary("pcfarm"), "--profile",
                               c->coordinator_dir() + "/alice.profile", "jobs", "--json"},
                              30'000);
  INFO(mine.Describe());
  REQUIRE(mine.exit_code == 0);
  json alice_jobs = json::parse(mine.LastLine());
  REQUIRE(alice_jobs.size() == 1);
  CHECK(alice_jobs[0]["job_id"] == job_of["queued"]);

  // The leases of the workers that never come back expire (their deadlines
  // passed long ago); new workers finish the running and the queued job.
  REQUIRE_OK(c->AddWorker("new0"));
  REQUIRE_OK(c->AddWorker("new1"));
  for (const char* state : {"running", "queued"}) {
    INFO(state << " job " << job_of[state]);
    auto end = c->WaitForJobEnd(job_of[state], 180'000);
    REQUIRE_OK(end);
    CHECK(*end == "succeeded");
  }
  auto after = c->CliJson({"jobs"});
  REQUIRE_OK(after);
  for (const char* state : {"succeeded", "failed", "cancelled"}) {
    INFO(state);
    CHECK(JobById(*after, job_of[state])["state"] == state);
    CHECK(JobById(*after, job_of[state])["updated_ms"] ==
          JobById(expected["jobs"], job_of[state])["updated_ms"]);
  }
  json running = JobById(*after, job_of["running"]);
  CHECK(running["shards_accepted"] == running["shards_total"]);
  // The shards accepted before the upgrade were not run again.
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM (SELECT shard_id FROM attempts WHERE "
                    "state='returned' GROUP BY shard_id HAVING COUNT(*) > 1)") == 0);
  REQUIRE_OK(c->StopCoordinator());
  FakeClock clock;
  auto store = Store::Open(c->coordinator_dir() + "/coordinator.db", &clock);
  REQUIRE_OK(store);
  REQUIRE_OK((*store)->CheckConsistency());
}

TEST_CASE("a data directory of a newer schema is refused and left untouched",
          "[integration][upgrade]") {
  Cluster c;
  REQUIRE_OK(c->InitFromDataDir(PCFARM_DATADIR_FIXTURE));
  // What a later release would have written.
  const int newer = Store::LatestSchemaVersion() + 1;
  {
    sqlite3* h = nullptr;
    REQUIRE(sqlite3_open((c->coordinator_dir() + "/coordinator.db").c_str(), &h) ==
            SQLITE_OK);
    std::string sql = "CREATE TABLE from_the_future(x); INSERT INTO schema_version "
                      "VALUES(" + std::to_string(newer) + ", 0)";
    CHECK(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(h);
  }
  auto before = Snapshot(c->coordinator_dir());
  CommandResult r = c->Run({c->Binary("pcfarm-coordinator"), "serve", "--data",
                            c->coordinator_dir()},
                           30'000);
  INFO(r.Describe());
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("schema version " + std::to_string(newer)) != std::string::npos);
  CHECK(r.err.find("newer pcfarm-coordinator") != std::string::npos);
  CHECK(r.err.find("left untouched") != std::string::npos);
  // Byte for byte, and nothing added (no journal, no folder).
  auto after = Snapshot(c->coordinator_dir());
  CHECK(after.size() == before.size());
  for (const auto& [path, bytes] : before) {
    INFO(path);
    REQUIRE(after.count(path));
    CHECK(after[path] == bytes);
  }
}

// A ClientRequest of protocol `version` sent on a connection with `profile`'s
// keys: the raw reply, or nullopt after 5 s.
std::optional<wire::ClientReply> CallWithVersion(const ClientProfile& profile,
                                                 uint32_t version,
                                                 uint64_t request_id) {
  zmq::context_t ctx(1);
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(profile.server_curve_pk.data(), 32));
  s.set(zmq::sockopt::curve_publickey, zmq::const_buffer(profile.client_curve_pk.data(), 32));
  s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(profile.client_curve_sk.data(), 32));
  s.connect(profile.endpoint);
  wire::ClientRequest req;
  req.set_version(version);
  req.set_request_id(request_id);
  req.mutable_list_jobs();
  std::string bytes = req.SerializeAsString();
  s.send(zmq::buffer(bytes), zmq::send_flags::none);
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(5000));
  if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
  zmq::message_t m;
  if (!s.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
  wire::ClientReply reply;
  if (!reply.ParseFromArray(m.data(), static_cast<int>(m.size()))) return std::nullopt;
  return reply;
}

// A HELLO of protocol `version` from `w` (a worker this build would be, but
// for its version number: a test-only adversary, never a shipped binary).
Status SendHelloOfVersion(SimWorker* w, uint32_t version) {
  wire::WorkerFrame f;
  f.set_version(version);
  f.mutable_hello()->set_software_version("pcfarm-worker of another release");
  f.mutable_hello()->set_slots(1);
  return w->SendRaw(f.SerializeAsString());
}

TEST_CASE("workers and CLIs of another protocol version are told what to upgrade",
          "[integration][upgrade]") {
  Cluster c;
  StartCluster(&c.c, 1);
  zmq::context_t ctx(1);
  // Two enrolled workers: one of a newer protocol, one of an older.
  std::unique_ptr<SimWorker> newer, older;
  for (auto* w : {&newer, &older}) {
    auto token = c->CreateToken(1, "1h");
    REQUIRE_OK(token);
    SimWorkerOptions o;
    o.name = w == &newer ? "newer-worker" : "older-worker";
    o.auto_work = false;
    auto sim = SimWorker::FromToken(&ctx, *token, o);
    REQUIRE_OK(sim);
    REQUIRE_OK((*sim)->Enroll(5000));
    *w = std::move(*sim);
  }
  const uint32_t v = kProtocolVersion;
  REQUIRE_OK(SendHelloOfVersion(newer.get(), v + 1));
  auto r1 = newer->Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(r1);
  CHECK(r1->reject().reason() == wire::REJECT_WRONG_VERSION);
  CHECK(r1->reject().speaks_version() == v);
  INFO(r1->reject().detail());
  CHECK(r1->reject().detail().find("pcfarm-worker speaks protocol version " +
                                   std::to_string(v + 1) + " and the coordinator speaks " +
                                   std::to_string(v)) != std::string::npos);
  CHECK(r1->reject().detail().find("upgrade pcfarm-coordinator") != std::string::npos);

  REQUIRE_OK(SendHelloOfVersion(older.get(), v - 1));
  auto r2 = older->Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(r2);
  CHECK(r2->reject().reason() == wire::REJECT_WRONG_VERSION);
  INFO(r2->reject().detail());
  CHECK(r2->reject().detail().find("upgrade pcfarm-worker to the coordinator's release (pcfarm " +
                                   std::string(PcfarmRelease()) + ")") != std::string::npos);
  // Asking again is answered again, and never drops the worker.
  for (int i = 0; i < 30; ++i) REQUIRE_OK(SendHelloOfVersion(older.get(), v - 1));
  auto again = older->Expect(wire::CoordinatorFrame::kReject, 5000);
  REQUIRE_OK(again);
  CHECK(again->reject().reason() == wire::REJECT_WRONG_VERSION);

  // Listed as outdated, with the version they speak; the real worker works.
  auto workers = c->Workers();
  REQUIRE_OK(workers);
  INFO(workers->dump());
  std::map<std::string, json> by_name;
  for (const auto& w : *workers) by_name[w["name"]] = w;
  CHECK(by_name["newer-worker"]["outdated"] == true);
  CHECK(by_name["newer-worker"]["protocol_version"] == v + 1);
  CHECK(by_name["older-worker"]["outdated"] == true);
  CHECK(by_name["older-worker"]["protocol_version"] == v - 1);
  CHECK(by_name["w0"]["outdated"] == false);
  CHECK(by_name["w0"]["connected"] == true);
  CommandResult table = c->Cli({"workers"});
  INFO(table.Describe());
  CHECK(table.exit_code == 0);
  CHECK(table.out.find("outdated") != std::string::npos);
  CHECK(table.out.find("upgrade pcfarm-worker to the coordinator's release") !=
        std::string::npos);
  CHECK(Counter(&c.c, "worker_version_refusals") == 32);  // 1 + 1 + 30
  CHECK(Counter(&c.c, "workers_outdated") == 2);
  CHECK(Counter(&c.c, "workers_lost") == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM events WHERE kind='worker_outdated'") == 2);
  auto job = c->SubmitBench(2, 32, 1);
  REQUIRE_OK(job);
  auto end = c->WaitForJobEnd(*job, 60'000);
  REQUIRE_OK(end);
  CHECK(*end == "succeeded");

  // Upgraded: its next frame speaks our version, and it is served again
  // (once the refusals of its 30 other HELLOs are read).
  int refusals = 1;
  while (true) {
    auto f = older->Receive(500);
    REQUIRE_OK(f);
    if (!f->has_value()) break;
    refusals += (*f)->has_reject();
  }
  CHECK(refusals == 30);
  REQUIRE_OK(older->Join(5000));
  // It heartbeats while the list is asked for: a SimWorker with auto_work
  // off is silent otherwise, and a loaded machine can take longer than the
  // 600 ms liveness to answer (seen in CI).
  auto now = WhileStepping([&] { (void)older->Step(20); }, [&] { return c->Workers(); });
  REQUIRE_OK(now);
  for (const auto& w : *now) {
    if (w["name"] == "older-worker") {
      CHECK(w["outdated"] == false);
      CHECK(w["connected"] == true);
    }
  }
  CHECK(Counter(&c.c, "workers_outdated") == 1);

  // A CLI of another version: a refusal it can read, matched to its call.
  auto admin = LoadClientProfile(c->admin_profile());
  REQUIRE_OK(admin);
  auto reply = CallWithVersion(*admin, v + 1, 77);
  REQUIRE(reply.has_value());
  INFO(reply->ShortDebugString());
  CHECK(reply->version() == v);
  CHECK(reply->request_id() == 77);
  REQUIRE(reply->has_error());
  CHECK(reply->error().code() == "failed_precondition");
  CHECK(reply->error().speaks_version() == v);
  CHECK(reply->error().message().find("pcfarm speaks protocol version " +
                                      std::to_string(v + 1) + " and the coordinator speaks " +
                                      std::to_string(v)) != std::string::npos);
  auto old_cli = CallWithVersion(*admin, v - 1, 78);
  REQUIRE(old_cli.has_value());
  CHECK(old_cli->request_id() == 78);
  CHECK(old_cli->error().message().find("upgrade pcfarm to the coordinator's release") !=
        std::string::npos);
  CHECK(Counter(&c.c, "client_version_refusals") == 2);
  CHECK(Counter(&c.c, "wire_wrong_version") == 34);
}

}  // namespace
}  // namespace pcfarm
