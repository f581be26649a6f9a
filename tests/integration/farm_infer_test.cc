// Batch inference on the farm (issue: `pcfarm submit infer`, uploads,
// `pcfarm fetch`): real coordinator, worker and CLI processes on loopback.
// The farm's completions are compared, prompt by prompt, with
// `pcfarm local generate` on the same model and seed; uploads are
// interrupted, corrupted and refused; and a submitter may touch only its
// own jobs.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "coordinator/cli/client.h"
#include "coordinator/client_profile.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch
#include "tests/integration/farm_helpers.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

int64_t Mono() { return SystemClock::Get()->MonotonicMs(); }

void MakeModel(MiniCluster* c, const std::string& dir, const std::string& preset = "tiny") {
  REQUIRE_OK(MakeFarmModel(c, dir, preset));
}

// `pcfarm local generate --json` on this machine: one object per prompt.
std::vector<json> LocalGenerate(MiniCluster* c, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {c->Binary("pcfarm"), "local", "generate", "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = c->Run(argv, 300'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  std::vector<json> out;
  for (const auto& l : Lines(r.out)) out.push_back(json::parse(l));
  return out;
}

int64_t SubmitInfer(MiniCluster* c, const std::vector<std::string>& args) {
  auto job = SubmitFarmJob(c, "infer", args);
  REQUIRE_OK(job);
  return *job;
}

std::vector<json> Fetch(MiniCluster* c, int64_t job, const std::string& out,
                        bool partial = false) {
  REQUIRE_OK(FetchFarmJob(c, job, out, partial));
  std::vector<json> rows;
  for (const auto& l : Lines(ReadAll(out))) rows.push_back(json::parse(l));
  return rows;
}

// The farm's rows equal local generate's, prompt by prompt, each once.
void RequireSameAsLocal(const std::vector<json>& farm, const std::vector<json>& local) {
  REQUIRE(farm.size() == local.size());
  for (size_t i = 0; i < farm.size(); ++i) {
    INFO("prompt " << i << ": farm " << farm[i].dump() << " local " << local[i].dump());
    REQUIRE(farm[i]["index"] == i);
    CHECK(farm[i]["prompt"] == local[i]["prompt"]);
    CHECK(farm[i]["tokens"] == local[i]["tokens"]);
    CHECK(farm[i]["text"] == local[i]["text"]);
    CHECK(farm[i]["finish_reason"] == local[i]["finish_reason"]);
    CHECK_FALSE(farm[i]["worker"].get<std::string>().empty());
  }
}

std::string BlobPath(MiniCluster* c, const std::string& hex) {
  return c->coordinator_dir() + "/blobs/" + hex.substr(0, 2) + "/" + hex;
}

TEST_CASE("an infer job on three workers with redundancy 2 equals local generate",
          "[farm][infer]") {
  Cluster c;
  StartCluster(&c.c, 3);
  std::string model = c->dir() + "/model", prompts = c->dir() + "/prompts.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(prompts, PromptsFile(50)));

  SECTION("greedy") {
    int64_t job = SubmitInfer(&c.c, {"--model", model, "--prompts", prompts, "--max-tokens",
                                     "12", "--prompts-per-shard", "5", "--redundancy", "2"});
    auto end = c->WaitForJobEnd(job, 240'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    auto farm = Fetch(&c.c, job, c->dir() + "/out.jsonl");
    RequireSameAsLocal(farm, LocalGenerate(&c.c, {"--model", model, "--prompts", prompts,
                                                  "--max-tokens", "12"}));
    // Redundancy 2: every shard was run by two different workers that agreed.
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + std::to_string(job)) == 10);
    CHECK(DbInt(&c.c, "SELECT COUNT(DISTINCT r.shard_id || '/' || r.worker_id) FROM results r "
                      "JOIN shards s ON s.id=r.shard_id WHERE s.job_id=" +
                          std::to_string(job) + " AND r.outcome='agreed'") >= 20);
    auto st = c->JobStatus(job);
    REQUIRE_OK(st);
    CHECK((*st)["summary"]["prompts"] == 50);
    CHECK((*st)["summary"]["prompts_total"] == 50);
    CHECK((*st)["summary"]["tokens"].get<int64_t>() > 0);
    // A long timeout: under the sanitizer build with every core busy, 5 s
    // was seen to pass without an answer.
    CommandResult human = c->Cli({"status", std::to_string(job)}, 20, 60'000);
    INFO(human.Describe());
    CHECK(human.exit_code == 0);
    CHECK(human.out.find("prompts:    50 of 50 done") != std::string::npos);
    CHECK(human.out.find("tokens/s") != std::string::npos);
  }
  SECTION("verify auto: new workers' shards are checked by infer_check, not run again") {
    std::vector<std::string> s = {"--temperature", "0.8", "--seed", "77", "--max-tokens", "10"};
    std::vector<std::string> farm_args = {"--model", model, "--prompts", prompts,
                                          "--prompts-per-shard", "5", "--verify", "auto"};
    farm_args.insert(farm_args.end(), s.begin(), s.end());
    int64_t job = SubmitInfer(&c.c, farm_args);
    auto end = c->WaitForJobEnd(job, 240'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    std::vector<std::string> local_args = {"--model", model, "--prompts", prompts};
    local_args.insert(local_args.end(), s.begin(), s.end());
    RequireSameAsLocal(Fetch(&c.c, job, c->dir() + "/out.jsonl"),
                       LocalGenerate(&c.c, local_args));
    const std::string j = std::to_string(job);
    // Three new identities: each of their first results is checked, by a
    // check attempt on another worker, which agreed.
    const int64_t checks = DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE checks_result<>0 "
                                       "AND job_id=" + j);
    CHECK(checks == 10);
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM results r JOIN attempts a ON a.id=r.attempt_id "
                      "WHERE a.checks_result<>0 AND a.job_id=" + j +
                          " AND r.outcome='agreed' AND CAST(r.body AS TEXT) LIKE '%\"ok\":true%'") == 10);
    // Nobody ran a shard twice: every other attempt is the shard's one run.
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE checks_result=0 AND state='returned' "
                      "AND job_id=" + j) == 10);
    auto st = c->JobStatus(job);
    REQUIRE_OK(st);
    CHECK((*st)["verify"] == "auto");
    CHECK((*st)["verification"]["checked_shards"] == 10);
  }
  SECTION("sampled, with a seed") {
    std::vector<std::string> s = {"--temperature", "0.9", "--top-k", "40", "--top-p", "0.95",
                                  "--seed", "1234", "--max-tokens", "10"};
    std::vector<std::string> farm_args = {"--model", model, "--prompts", prompts,
                                          "--prompts-per-shard", "7", "--redundancy", "2"};
    farm_args.insert(farm_args.end(), s.begin(), s.end());
    int64_t job = SubmitInfer(&c.c, farm_args);
    auto end = c->WaitForJobEnd(job, 240'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    std::vector<std::string> local_args = {"--model", model, "--prompts", prompts};
    local_args.insert(local_args.end(), s.begin(), s.end());
    RequireSameAsLocal(Fetch(&c.c, job, c->dir() + "/out.jsonl"),
                       LocalGenerate(&c.c, local_args));
  }
}

TEST_CASE("a GGUF model and a model with an adapter agree with local generate",
          "[farm][infer]") {
  Cluster c;
  StartCluster(&c.c, 2);
  std::string prompts = c->dir() + "/prompts.jsonl";
  REQUIRE_OK(WriteAll(prompts, PromptsFile(12)));
  SECTION("GGUF") {
    std::string gguf = c->dir() + "/tiny.gguf";
    CommandResult r = c->Run({c->Binary("pcfarm"), "local", "make-model", "--out",
                              c->dir() + "/hf", "--config", "tiny", "--seed", "5", "--gguf", gguf},
                             60'000);
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    std::vector<std::string> g = {"--max-tokens", "16", "--temperature", "0.7", "--seed", "9"};
    std::vector<std::string> a = {"--model", gguf, "--prompts", prompts, "--prompts-per-shard",
                                  "4"};
    a.insert(a.end(), g.begin(), g.end());
    int64_t job = SubmitInfer(&c.c, a);
    auto end = c->WaitForJobEnd(job, 120'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    std::vector<std::string> l = {"--model", gguf, "--prompts", prompts};
    l.insert(l.end(), g.begin(), g.end());
    RequireSameAsLocal(Fetch(&c.c, job, c->dir() + "/out.jsonl"), LocalGenerate(&c.c, l));
    // The model travelled as one blob (with the prompts, and the claims
    // its checks read).
    const std::string j = std::to_string(job);
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM job_blobs WHERE job_id=" + j) ==
          2 + DbInt(&c.c, "SELECT COUNT(DISTINCT checks_result) FROM attempts WHERE job_id=" + j +
                              " AND checks_result<>0"));
  }
  SECTION("quantized at load (--quantize q8_0)") {
    std::string model = c->dir() + "/model";
    MakeModel(&c.c, model);
    std::vector<std::string> g = {"--max-tokens", "8", "--quantize", "q8_0"};
    std::vector<std::string> a = {"--model", model, "--prompts", prompts, "--prompts-per-shard",
                                  "6"};
    a.insert(a.end(), g.begin(), g.end());
    int64_t job = SubmitInfer(&c.c, a);
    auto end = c->WaitForJobEnd(job, 120'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    std::vector<std::string> l = {"--model", model, "--prompts", prompts};
    l.insert(l.end(), g.begin(), g.end());
    auto farm = Fetch(&c.c, job, c->dir() + "/out.jsonl");
    RequireSameAsLocal(farm, LocalGenerate(&c.c, l));
    // The job carries it (the planner unit test: every shard does too).
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs WHERE id=" + std::to_string(job) +
                          " AND params LIKE '%\"quantize\":\"q8_0\"%'") == 1);
  }
  SECTION("adapter") {
    std::string model = std::string(PCFARM_LLAMA_FIXTURE_DIR) + "/llama_tiny";
    std::vector<std::string> a = {"--model", model, "--adapter", model + "/adapter",
                                  "--prompts", prompts, "--max-tokens", "8",
                                  "--prompts-per-shard", "3"};
    int64_t job = SubmitInfer(&c.c, a);
    auto end = c->WaitForJobEnd(job, 120'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    auto farm = Fetch(&c.c, job, c->dir() + "/out.jsonl");
    RequireSameAsLocal(farm, LocalGenerate(&c.c, {"--model", model, "--adapter",
                                                  model + "/adapter", "--prompts", prompts,
                                                  "--max-tokens", "8"}));
    // The adapter changes the answers.
    auto base = LocalGenerate(&c.c, {"--model", model, "--prompts", prompts, "--max-tokens", "8"});
    int differ = 0;
    for (size_t i = 0; i < base.size(); ++i) differ += base[i]["tokens"] != farm[i]["tokens"];
    CHECK(differ > 0);
  }
}

TEST_CASE("locality: a shard goes to the worker that holds its model", "[farm][infer]") {
  Cluster c;
  StartCluster(&c.c, 3);
  std::string model = c->dir() + "/model", prompts = c->dir() + "/prompts.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(prompts, PromptsFile(4)));
  // A first one-shard job while only w2 runs puts the model on w2 alone
  // (without locality the fastest idle worker would go first).
  REQUIRE_OK(c->StopWorker(0));
  REQUIRE_OK(c->StopWorker(1));
  // --verify none: w2 alone runs it (a check would wait for w0 or w1).
  int64_t first = SubmitInfer(&c.c, {"--model", model, "--prompts", prompts, "--max-tokens", "4",
                                     "--verify", "none"});
  REQUIRE(*c->WaitForJobEnd(first, 60'000) == "succeeded");
  REQUIRE(Fetch(&c.c, first, c->dir() + "/a.jsonl")[0]["worker"] == "w2");
  REQUIRE_OK(c->StartWorker(0));
  REQUIRE_OK(c->StartWorker(1));
  REQUIRE_OK(c->WaitForConnectedWorkers(3, 30'000));
  // Later one-shard jobs of the same model go to w2, not to the others.
  for (int i = 0; i < 4; ++i) {
    REQUIRE_OK(WriteAll(prompts, PromptsFile(4 + i)));
    // (Unchecked: a check copy would put the model on a second worker.)
    int64_t job = SubmitInfer(&c.c, {"--model", model, "--prompts", prompts, "--max-tokens", "4",
                                     "--verify", "none"});
    REQUIRE(*c->WaitForJobEnd(job, 60'000) == "succeeded");
    CHECK(Fetch(&c.c, job, c->dir() + "/b.jsonl")[0]["worker"] == "w2");
  }
}

TEST_CASE("a blob damaged on or missing from the coordinator's disk fails its job by name",
          "[farm][infer]") {
  Cluster c;
  StartCluster(&c.c, 1);
  std::string model = c->dir() + "/model", prompts = c->dir() + "/prompts.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(prompts, PromptsFile(2)));
  REQUIRE_OK(c->StopWorker(0));
  const std::vector<std::string> args = {"--model",      model, "--prompts", prompts,
                                         "--max-tokens", "4",   "--verify",  "none"};
  int64_t job = SubmitInfer(&c.c, args);
  auto rows = c->db().Query("SELECT hash FROM blobs WHERE size=" +
                            std::to_string(fs::file_size(model + "/model.safetensors")));
  REQUIRE_OK(rows);
  REQUIRE(rows->size() == 1);
  const std::string hex = rows->at(0).at(0);
  const std::string weights = BlobPath(&c.c, hex);
  std::string what, worker_saw;
  SECTION("damaged") {
    // The coordinator's copy of the weights goes bad on its disk (same
    // size, one byte): no download of it ever hashes right. Three tries,
    // then a failed attempt naming the blob; the coordinator re-hashes its
    // copy, sets it aside and fails the job with that reason (before: the
    // shard waited on the worker for up to --max-attempt-ms).
    std::string bad = ReadAll(weights);
    bad[bad.size() / 2] ^= 0x40;
    REQUIRE_OK(WriteAll(weights, bad));
    what = " is damaged on the coordinator's disk";
    worker_saw = "given up after 3 tries";
    REQUIRE_OK(c->StartWorker(0));
    auto end = c->WaitForJobEnd(job, 60'000);
    INFO(c->DumpLogs(20000));
    REQUIRE_OK(end);
    REQUIRE(*end == "failed");
    CHECK(ReadAll(c->coordinator_dir() + "/damaged/" + hex) == bad);
  }
  SECTION("missing") {
    // Its file is gone: the worker is told so and fails the shard at once.
    REQUIRE(fs::remove(weights));
    what = " is missing from the coordinator's disk";
    worker_saw = "the coordinator does not hold it (no blob " + hex + ")";
    REQUIRE_OK(c->StartWorker(0));
    auto end = c->WaitForJobEnd(job, 60'000);
    INFO(c->DumpLogs(20000));
    REQUIRE_OK(end);
    REQUIRE(*end == "failed");
  }
  auto job_row = c->JobStatus(job);
  REQUIRE_OK(job_row);
  INFO(job_row->dump());
  CHECK((*job_row)["reason"].get<std::string>().find("blob " + hex + what) != std::string::npos);
  const std::string id = std::to_string(job);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM attempts WHERE job_id=" + id + " AND state='failed'") ==
        1);
  CHECK(c->DumpLogs(100000).find(worker_saw) != std::string::npos);
  CHECK_FALSE(fs::exists(weights));
  // Submitted again: the weights are uploaded afresh, and it runs on the
  // same worker.
  int64_t again = SubmitInfer(&c.c, args);
  auto second = c->WaitForJobEnd(again, 120'000);
  REQUIRE_OK(second);
  CHECK(*second == "succeeded");
  CHECK(fs::exists(weights));
  CHECK(Fetch(&c.c, again, c->dir() + "/out.jsonl").size() == 2);
}

TEST_CASE("a job rides out kill -9 of a worker and of the coordinator", "[farm][infer]") {
  MiniClusterOptions o;
  o.lease_ms = 4000;
  Cluster c(o);
  StartCluster(&c.c, 2);
  std::string model = c->dir() + "/model", prompts = c->dir() + "/prompts.jsonl";
  MakeModel(&c.c, model, "small");
  REQUIRE_OK(WriteAll(prompts, PromptsFile(24)));
  std::vector<std::string> gen = {"--max-tokens", "40"};
  std::vector<std::string> a = {"--model", model, "--prompts", prompts, "--prompts-per-shard",
                                "2"};
  a.insert(a.end(), gen.begin(), gen.end());
  int64_t job = SubmitInfer(&c.c, a);
  std::string accepted = "SELECT shards_accepted FROM jobs WHERE id=" + std::to_string(job);
  // Mid-job: some shards accepted, others running.
  int64_t deadline = Mono() + 120'000;
  while (DbInt(&c.c, accepted) < 2 && Mono() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(DbInt(&c.c, accepted) >= 2);
  REQUIRE_OK(c->KillWorker(0));
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(c->StartWorker(0));
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  std::vector<std::string> l = {"--model", model, "--prompts", prompts};
  l.insert(l.end(), gen.begin(), gen.end());
  RequireSameAsLocal(Fetch(&c.c, job, c->dir() + "/out.jsonl"), LocalGenerate(&c.c, l));
}

TEST_CASE("uploads: deduplicated, resumed after kill -9, corrupt and unknown keys refused",
          "[farm][upload]") {
  Cluster c;
  StartCluster(&c.c, 0);
  // Random bytes: nothing compresses, nothing repeats.
  std::string file = c->dir() + "/big.bin";
  {
    std::mt19937_64 rng(7);
    std::string data(size_t(192) << 20, '\0');
    for (size_t i = 0; i + 8 <= data.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&data[i], &v, 8);
    }
    REQUIRE_OK(WriteAll(file, data));
  }
  const int64_t size = int64_t(fs::file_size(file));

  SECTION("an interrupted upload resumes from what the coordinator holds") {
    ChildProcess upload;
    REQUIRE_OK(upload.Start({c->Binary("pcfarm"), "--profile", c->admin_profile(), "--timeout",
                             "2", "upload", file, "--json"},
                            c->dir() + "/upload.log"));
    // Kill the coordinator once it holds a good part of the file.
    std::string partial_dir = c->coordinator_dir() + "/partial";
    int64_t held = 0;
    int64_t deadline = Mono() + 60'000;
    while (held < (48 << 20) && Mono() < deadline && upload.running()) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(partial_dir, ec)) {
        held = std::max<int64_t>(held, int64_t(e.file_size(ec)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    REQUIRE(held >= (48 << 20));
    REQUIRE_OK(c->KillCoordinator());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    REQUIRE_OK(c->StartCoordinator());
    REQUIRE_OK(upload.Wait(120'000));
    std::string log = ReadAll(c->dir() + "/upload.log");
    INFO(log);
    REQUIRE(upload.exit_code() == 0);
    json r = json::parse(Lines(log).back());
    CHECK(r["size"] == size);
    // Resumed: what was held before the kill was not sent again (at most
    // the chunks in flight were).
    CHECK(r["sent"].get<int64_t>() <= size + (16 << 20));
    CHECK(log.find("resuming from what the coordinator holds") != std::string::npos);
    std::string hex = r["hash"];
    CHECK(HashToHex(Blake2b256(ReadAll(BlobPath(&c.c, hex)))) == hex);
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs WHERE hash='" + hex + "'") == 1);
    // Deduplicated: the second time nothing is sent, quickly.
    auto again = c->CliJson({"upload", file});
    REQUIRE_OK(again);
    CHECK((*again)["deduplicated"] == true);
    CHECK((*again)["sent"] == 0);
    CHECK((*again)["seconds"].get<double>() < 2.0);
  }
  SECTION("a corrupt upload is refused and nothing is stored") {
    auto profile = LoadClientProfile(c->admin_profile());
    REQUIRE_OK(profile);
    CoordinatorClient client(*profile, 10'000);
    std::string good = "the bytes the hash was made from, repeated. ";
    for (int i = 0; i < 12; ++i) good += good;
    std::string bad = good;
    bad[bad.size() / 2] ^= 0x20;
    const std::string hash = HashToBytes(Blake2b256(good));
    wire::ClientRequest begin;
    begin.mutable_upload_begin()->set_hash(hash);
    begin.mutable_upload_begin()->set_size(good.size());
    REQUIRE_OK(client.Call(begin));
    wire::ClientRequest chunk;
    chunk.mutable_upload_chunk()->set_hash(hash);
    chunk.mutable_upload_chunk()->set_offset(0);
    chunk.mutable_upload_chunk()->set_data(bad);
    auto r = client.Call(chunk);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kCorruption);
    CHECK_FALSE(fs::exists(BlobPath(&c.c, HashToHex(Blake2b256(good)))));
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs") == 0);
    // A chunk out of order is refused, naming where to resume.
    REQUIRE_OK(client.Call(begin));
    chunk.mutable_upload_chunk()->set_offset(4096);
    chunk.mutable_upload_chunk()->set_data(good.substr(4096, 100));
    auto gap = client.Call(chunk);
    REQUIRE_FALSE(gap.ok());
    CHECK(gap.status().message().find("resume from there") != std::string::npos);
  }
  SECTION("an upload by id begun again once complete is present, and the coordinator lives") {
    // A client that lost the last chunk's reply, or resumes from its cache,
    // begins the same upload id again: the coordinator once took the hash
    // from the request (empty for an upload by id) and died on it.
    auto profile = LoadClientProfile(c->admin_profile());
    REQUIRE_OK(profile);
    CoordinatorClient client(*profile, 10'000);
    const std::string data = "bytes uploaded by id, then begun again";
    const std::string id(16, '\x5a');
    wire::ClientRequest begin;
    begin.mutable_upload_begin()->set_upload_id(id);
    begin.mutable_upload_begin()->set_size(data.size());
    REQUIRE_OK(client.Call(begin));
    wire::ClientRequest chunk;
    chunk.mutable_upload_chunk()->set_upload_id(id);
    chunk.mutable_upload_chunk()->set_offset(0);
    chunk.mutable_upload_chunk()->set_data(data);
    REQUIRE_OK(client.Call(chunk));
    const std::string hex = HashToHex(Blake2b256(data));
    for (int i = 0; i < 2; ++i) {
      auto again = client.Call(begin);
      REQUIRE_OK(again);
      CHECK(again->upload_begin().present());
      CHECK(again->upload_begin().hash() == HashToBytes(Blake2b256(data)));
    }
    // One blob, under its hash (the hash of nothing would have been a
    // second row, where assertions are compiled out).
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs WHERE hash='" + hex + "'") == 1);
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs") == 1);
  }
  SECTION("an unknown client key may not upload") {
    auto admin = LoadClientProfile(c->admin_profile());
    REQUIRE_OK(admin);
    ClientProfile stranger = *admin;
    CurveKeyPair keys = CurveKeyPair::Generate();
    stranger.client_curve_pk = keys.public_key();
    stranger.client_curve_sk = keys.secret_key();
    REQUIRE_OK(SaveClientProfile(c->dir() + "/stranger.profile", stranger));
    CommandResult r = c->Run({c->Binary("pcfarm"), "--profile", c->dir() + "/stranger.profile",
                              "upload", file},
                             60'000);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("unknown client key") != std::string::npos);
    CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs") == 0);
  }
}

TEST_CASE("an upload that would eat the disk reserve is refused", "[farm][upload]") {
  MiniClusterOptions o;
  o.coordinator_args = {"--min-free-disk", "1000000TiB"};
  Cluster c(o);
  StartCluster(&c.c, 0);
  REQUIRE_OK(WriteAll(c->dir() + "/f.bin", "some bytes"));
  CommandResult r = c->Cli({"upload", c->dir() + "/f.bin"});
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--min-free-disk") != std::string::npos);
  CHECK(Lines(r.err).size() == 1);
}

TEST_CASE("a worker gets no shard its free memory cannot hold until memory frees up",
          "[farm][infer][memory]") {
  MiniClusterOptions o;
  o.heartbeat_liveness = 10;  // the SimWorker steps only when read
  Cluster c(o);
  StartCluster(&c.c, 0);
  std::string model = c->dir() + "/model", prompts = c->dir() + "/p.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(prompts, "{\"prompt\": \"hello\"}\n"));
  CommandResult r = c->Cli({"submit", "infer", "--model", model, "--prompts", prompts,
                            "--max-tokens", "2", "--verify", "none"},
                           10, 60'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  const int64_t need = DbInt(&c.c, "SELECT MAX(needs_memory_bytes) FROM shards");
  REQUIRE(need > (64 << 10));  // the tiny model: ~430 KiB
  REQUIRE(need < (int64_t(1) << 30));
  auto token = c->CreateToken(1, "1h");
  REQUIRE_OK(token);
  zmq::context_t ctx(1);
  SimWorkerOptions so;
  so.auto_work = false;
  so.memory_bytes = uint64_t(1) << 30;   // enough in total ...
  so.free_bytes = uint64_t(need) / 2;    // ... but a game holds most of it
  auto sim = SimWorker::FromToken(&ctx, *token, so);
  REQUIRE_OK(sim);
  SimWorker& w = **sim;
  REQUIRE_OK(w.Enroll(5000));
  REQUIRE_OK(w.Join(5000));
  const std::string devices =
      "SELECT json_extract(devices,'$[0].free_bytes') FROM workers WHERE id=" +
      std::to_string(w.worker_id());
  CHECK(DbInt(&c.c, devices) == need / 2);
  // It asks again (READY with the same free memory): still nothing.
  for (int i = 0; i < 3; ++i) {
    REQUIRE_OK(w.SendReady(1));
    REQUIRE_OK(w.Step(300));
  }
  CHECK(w.stats().assigns == 0);
  CHECK(DbInt(&c.c, "SELECT state='pending' FROM shards") == 1);
  // The game quits: its next READY says so, and the shard comes.
  w.set_free_bytes(uint64_t(1) << 30);
  REQUIRE_OK(w.SendReady(1));
  auto assign = w.Expect(wire::CoordinatorFrame::kAssign, 10'000);
  REQUIRE_OK(assign);
  CHECK(w.stats().assigns == 1);
  // A move that large is stored, for the draw of checkers too.
  CHECK(DbInt(&c.c, devices) == int64_t(1) << 30);
}

TEST_CASE("bad infer inputs: one line, exit 1, nothing uploaded or queued", "[farm][infer]") {
  Cluster c;
  StartCluster(&c.c, 0);
  std::string model = c->dir() + "/model";
  MakeModel(&c.c, model);
  auto bad = [&](const std::string& prompts_text, std::vector<std::string> extra,
                 const std::string& expect) {
    std::string prompts = c->dir() + "/p.jsonl";
    REQUIRE_OK(WriteAll(prompts, prompts_text));
    std::vector<std::string> a = {"submit", "infer", "--model", model, "--prompts", prompts};
    a.insert(a.end(), extra.begin(), extra.end());
    CommandResult r = c->Cli(a, 10, 60'000);
    INFO(r.Describe());
    CHECK(r.exit_code == 1);
    CHECK(Lines(r.err).size() == 1);
    CHECK(r.err.find(expect) != std::string::npos);
  };
  bad("{\"prompt\": \"ok\"}\nnot json\n", {}, "p.jsonl:2");
  bad("{\"prompt\": \"ok\"}\n{\"messages\": []}\n", {}, "p.jsonl:2");
  bad("{\"text\": \"no prompt\"}\n", {}, "p.jsonl:1");
  bad("{\"prompt\": \"" + std::string(3000, 'x') + "\"}\n", {"--max-tokens", "64"},
      "over the model's context");
  bad("{\"prompt\": \"ok\"}\n", {"--max-tokens", "0"}, "--max-tokens");
  bad("{\"prompt\": \"ok\"}\n", {"--top-p", "1.5"}, "--top-p");
  bad("{\"prompt\": \"ok\"}\n", {"--adapter", c->dir() + "/nope"}, "--adapter");
  bad("{\"prompt\": \"ok\"}\n", {"--quantize", "q3"}, "--quantize: quantize: 'q3'");
  CommandResult nomodel = c->Cli({"submit", "infer", "--model", c->dir() + "/nope",
                                  "--prompts", c->dir() + "/p.jsonl"});
  CHECK(nomodel.exit_code == 1);
  CHECK(nomodel.err.find("nope") != std::string::npos);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs") == 0);
  CHECK(fs::is_empty(c->coordinator_dir() + "/partial"));
  // Fetching a job that is not finished needs --partial.
  CommandResult nojob = c->Cli({"fetch", "999", "--out", c->dir() + "/x"});
  CHECK(nojob.exit_code == 1);
  CHECK(nojob.err.find("no job 999") != std::string::npos);
}

TEST_CASE("a submitter touches only its own jobs", "[farm][users]") {
  Cluster c;
  StartCluster(&c.c, 1);
  std::string profile = c->dir() + "/alice.profile";
  CommandResult add = c->Cli({"client", "add", "--name", "alice", "--out", profile});
  INFO(add.Describe());
  REQUIRE(add.exit_code == 0);
  struct stat st;
  REQUIRE(::stat(profile.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto alice = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {c->Binary("pcfarm"), "--profile", profile};
    argv.insert(argv.end(), args.begin(), args.end());
    return c->Run(argv, 60'000);
  };
  auto admin_job = c->SubmitBench(1, 32, 1);
  REQUIRE_OK(admin_job);
  CommandResult sub = alice({"submit", "bench", "--shards", "2", "--size", "32"});
  INFO(sub.Describe());
  REQUIRE(sub.exit_code == 0);
  int64_t own = std::stoll(sub.LastLine());
  REQUIRE_OK(c->WaitForJobEnd(own, 60'000));
  // Its own: list, status, wait, fetch.
  CommandResult jobs = alice({"jobs", "--json"});
  REQUIRE(jobs.exit_code == 0);
  json listed = json::parse(jobs.LastLine());
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["job_id"] == own);
  CHECK(listed[0]["owner"] == "alice");
  CHECK(alice({"status", std::to_string(own)}).exit_code == 0);
  CHECK(alice({"wait", std::to_string(own)}).exit_code == 0);
  CommandResult f = alice({"fetch", std::to_string(own), "--out", c->dir() + "/bench.json"});
  INFO(f.Describe());
  CHECK(f.exit_code == 0);
  CHECK(json::parse(ReadAll(c->dir() + "/bench.json"))["shards"] == 2);
  // Nothing else: each refusal is one line and exit 1.
  auto refused = [&](std::vector<std::string> args, const std::string& expect) {
    CommandResult r = alice(args);
    INFO(r.Describe());
    CHECK(r.exit_code == 1);
    CHECK(r.err.find(expect) != std::string::npos);
  };
  std::string theirs = std::to_string(*admin_job);
  refused({"status", theirs}, "no job " + theirs);
  refused({"cancel", theirs}, "no job " + theirs);
  refused({"fetch", theirs, "--out", c->dir() + "/x"}, "no job " + theirs);
  refused({"wait", theirs}, "no job " + theirs);
  refused({"token", "create"}, "only an admin");
  refused({"workers"}, "only an admin");
  refused({"stats"}, "only an admin");
  refused({"client", "list"}, "only an admin");
  refused({"client", "add", "--name", "bob", "--out", c->dir() + "/bob.profile"},
          "only an admin");
  refused({"client", "remove", "admin"}, "only an admin");
  // The admin sees both jobs and both users; removing alice locks her out.
  auto clients = c->CliJson({"client", "list"});
  REQUIRE_OK(clients);
  CHECK(clients->size() == 2);
  CommandResult dup = c->Cli({"client", "add", "--name", "alice", "--out", c->dir() + "/a2"});
  CHECK(dup.exit_code == 1);
  REQUIRE(c->Cli({"client", "remove", "alice"}).exit_code == 0);
  refused({"jobs"}, "unknown client key");
}

}  // namespace
}  // namespace pcfarm
