// Fine-tuning on the farm (issue: `pcfarm submit finetune`, sync and
// diloco modes): real coordinator, worker and CLI processes on loopback. The
// farm's sync adapter is compared with `pcfarm local finetune` given the
// same arguments: the same examples per step in the same order and the
// engine's own AdamW, so the two agree up to the order of floating-point
// sums. A diloco job learns with H times less traffic per example. Crashes
// of a worker and of the coordinator mid-job leave the final adapter bit
// for bit as an undisturbed run's; bad inputs queue nothing.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster_helpers.h"  // first: it configures Catch
#include "tests/integration/farm_helpers.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

int64_t Mono() { return SystemClock::Get()->MonotonicMs(); }

void MakeModel(MiniCluster* c, const std::string& dir) { REQUIRE_OK(MakeFarmModel(c, dir)); }

int64_t SubmitFinetune(MiniCluster* c, const std::vector<std::string>& args) {
  auto job = SubmitFarmJob(c, "finetune", args);
  REQUIRE_OK(job);
  return *job;
}

// `pcfarm local finetune --json`: the loss of each step; the adapter in `out`.
std::vector<double> LocalFinetune(MiniCluster* c, std::vector<std::string> args,
                                  const std::string& out) {
  std::vector<std::string> argv = {c->Binary("pcfarm"), "local", "finetune", "--json",
                                   "--threads", "1", "--out", out};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = c->Run(argv, 300'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  std::vector<double> losses;
  for (const auto& l : Lines(r.out)) {
    json j = json::parse(l);
    if (j.contains("step")) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

double EvalLoss(MiniCluster* c, const std::string& model, const std::string& data,
                const std::string& adapter) {
  std::vector<std::string> argv = {c->Binary("pcfarm"), "local", "eval", "--json", "--model",
                                   model, "--data", data};
  if (!adapter.empty()) {
    argv.push_back("--adapter");
    argv.push_back(adapter);
  }
  CommandResult r = c->Run(argv, 120'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  return json::parse(r.LastLine())["loss"].get<double>();
}

void FetchAdapter(MiniCluster* c, int64_t job, const std::string& dir) {
  REQUIRE_OK(FetchFarmJob(c, job, dir));
  REQUIRE(fs::exists(dir + "/adapter_config.json"));
  REQUIRE(fs::exists(dir + "/adapter_model.safetensors"));
  REQUIRE(fs::exists(dir + "/trainer_log.jsonl"));
}

void RequireClose(double a, double b, double rel) {
  INFO("a = " << a << ", b = " << b);
  REQUIRE(std::abs(a - b) <= rel * std::max(std::abs(a), std::abs(b)));
}

TEST_CASE("a sync finetune job on three workers equals local finetune", "[farm][finetune]") {
  Cluster c;
  StartCluster(&c.c, 3);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  const int kSteps = 20;
  auto args = TrainArgs(model, data, kSteps);

  std::vector<std::string> farm_args = args;
  farm_args.insert(farm_args.end(), {"--micro-batch", "2"});
  int64_t job = SubmitFinetune(&c.c, farm_args);
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  // Every step in 3 shards of 2 examples.
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + std::to_string(job)) ==
        3 * kSteps);
  const std::string farm_dir = c->dir() + "/farm-adapter";
  FetchAdapter(&c.c, job, farm_dir);

  const std::string local_dir = c->dir() + "/local-adapter";
  std::vector<double> local_losses = LocalFinetune(&c.c, args, local_dir);
  REQUIRE(local_losses.size() == size_t(kSteps));
  auto log = Lines(ReadAll(farm_dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == size_t(kSteps));
  for (int s = 0; s < kSteps; ++s) {
    json row = json::parse(log[size_t(s)]);
    INFO("step " << s + 1 << ": " << row.dump());
    CHECK(row["step"] == s + 1);
    CHECK(row["shards"] == 3);
    CHECK(row["bytes_up"].get<int64_t>() > 0);
    RequireClose(row["loss"].get<double>(), local_losses[size_t(s)], 1e-4);
  }
  // The adapters give the same loss, well below the base model's.
  const double farm = EvalLoss(&c.c, model, data, farm_dir);
  const double local = EvalLoss(&c.c, model, data, local_dir);
  const double base = EvalLoss(&c.c, model, data, "");
  RequireClose(farm, local, 1e-4);
  CHECK(farm < 0.8 * base);
  // The adapter's config is the one local finetune writes.
  CHECK(ReadAll(farm_dir + "/adapter_config.json") == ReadAll(local_dir + "/adapter_config.json"));

  // status and wait show the step and the loss.
  auto st = c->JobStatus(job);
  REQUIRE_OK(st);
  CHECK((*st)["summary"]["step"] == kSteps);
  CHECK((*st)["summary"]["steps"] == kSteps);
  RequireClose((*st)["summary"]["loss"].get<double>(), local_losses.back(), 1e-4);
  // Bytes up and down per step.
  REQUIRE((*st)["rounds"].size() == size_t(kSteps));
  for (size_t i = 0; i < (*st)["rounds"].size(); ++i) {
    const json& row = (*st)["rounds"][i];
    INFO(row.dump());
    CHECK(row["step"] == int64_t(i + 1));
    CHECK(row["bytes_up"].get<int64_t>() > 0);
    // Step 1 starts from the adapter the job's seed draws: each worker
    // draws it itself; later steps download their version.
    if (i == 0) {
      CHECK(row["bytes_down"] == 0);
    } else {
      CHECK(row["bytes_down"].get<int64_t>() > 0);
    }
    RequireClose(row["loss"].get<double>(), local_losses[i], 1e-4);
  }
  CommandResult human = c->Cli({"status", std::to_string(job)});
  INFO(human.Describe());
  CHECK(human.out.find("step:") != std::string::npos);
  CHECK(human.out.find("loss:") != std::string::npos);
}

TEST_CASE("gradients over the 8 MiB a RESULT holds travel as blobs the workers upload",
          "[farm][finetune]") {
  Cluster c;
  StartCluster(&c.c, 2);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  REQUIRE_OK(MakeFarmModel(&c.c, model, "small"));
  REQUIRE_OK(WriteAll(data, TrainData()));
  // Rank 128 on every projection of the small llama: 4 layers x 4624 x 128
  // = 2,367,488 LoRA values, a 9.5 MB f32 gradient a shard.
  const int kSteps = 2;
  std::vector<std::string> args = {"--model", model, "--data", data, "--steps",
                                   std::to_string(kSteps), "--batch", "4", "--lr", "0.01",
                                   "--lora-rank", "128", "--lora-targets",
                                   "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                   "--max-length", "32", "--seed", "7"};
  std::vector<std::string> farm_args = args;
  farm_args.insert(farm_args.end(), {"--micro-batch", "2"});
  int64_t job = SubmitFinetune(&c.c, farm_args);
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  const std::string id = std::to_string(job);
  // Each result's output is over the RESULT frame's 8 MiB, so it came as a
  // blob, and the blob store holds it; once its step was applied the
  // results table no longer keeps it.
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM results r JOIN shards s ON s.id=r.shard_id "
                    "WHERE s.job_id=" + id) >= 2 * kSteps);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM results r JOIN shards s ON s.id=r.shard_id "
                    "WHERE s.job_id=" + id + " AND LENGTH(r.body) > 0") == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + id) == 2 * kSteps);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs WHERE size > 8388608") >= 2 * kSteps);
  CommandResult stats = c->Cli({"stats", "--json"});
  INFO(stats.Describe());
  REQUIRE(stats.exit_code == 0);
  json counters = json::parse(stats.LastLine(), nullptr, false);
  REQUIRE(counters.is_object());
  CHECK(counters["output_uploads_completed"].get<int64_t>() >= 2 * kSteps);

  const std::string farm_dir = c->dir() + "/farm-adapter";
  FetchAdapter(&c.c, job, farm_dir);
  const std::string local_dir = c->dir() + "/local-adapter";
  std::vector<double> local_losses = LocalFinetune(&c.c, args, local_dir);
  REQUIRE(local_losses.size() == size_t(kSteps));
  auto log = Lines(ReadAll(farm_dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == size_t(kSteps));
  for (int s = 0; s < kSteps; ++s) {
    json row = json::parse(log[size_t(s)]);
    INFO("step " << s + 1 << ": " << row.dump());
    CHECK(row["bytes_up"].get<int64_t>() > 2 * 8388608);  // two shards' results
    RequireClose(row["loss"].get<double>(), local_losses[size_t(s)], 1e-4);
  }
  RequireClose(EvalLoss(&c.c, model, data, farm_dir), EvalLoss(&c.c, model, data, local_dir),
               1e-4);

  // Blob garbage collection. The ended job keeps its inputs and its final
  // adapter; step 1's version and optimizer state, and the workers'
  // uploaded gradients (copied into the results table), go once no job
  // needs them and they are older than --blob-grace.
  const std::string blob_dir = c->coordinator_dir() + "/blobs/";
  auto blob_file = [&](const std::string& h) { return blob_dir + h.substr(0, 2) + "/" + h; };
  auto db_str = [&](const std::string& sql) {
    auto rows = DbRows(&c.c, sql);
    REQUIRE(rows.size() == 1);
    return rows[0][0];
  };
  auto exists = [](const std::string& path) { return std::filesystem::exists(path); };
  json step2 = json::parse(
      db_str("SELECT CAST(params AS TEXT) FROM shards WHERE job_id=" + id + " AND idx=2"));
  const std::string version1 = step2["adapter"]["adapter_model.safetensors"].get<std::string>();
  REQUIRE(exists(blob_file(version1)));
  const std::string model_hash = db_str(
      "SELECT hash FROM blobs WHERE size=" +
      std::to_string(std::filesystem::file_size(model + "/model.safetensors")));
  REQUIRE(exists(blob_file(model_hash)));
  const std::string unlinked =
      "SELECT COUNT(*) FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM job_blobs j WHERE "
      "j.hash=b.hash)";
  const int64_t blobs_before = DbInt(&c.c, "SELECT COUNT(*) FROM blobs");
  // Measured before the restart: the collector runs as the coordinator starts.
  CHECK(DbInt(&c.c, unlinked) >= 2 * kSteps);  // the uploaded gradients
  REQUIRE_OK(c->KillCoordinator());
  c->SetCoordinatorArgs({"--blob-grace", "1s"});
  REQUIRE_OK(c->StartCoordinator());
  const int64_t deadline = Mono() + 60'000;
  while (Mono() < deadline &&
         (exists(blob_file(version1)) || DbInt(&c.c, unlinked) > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO(c->CoordinatorLog());
  CHECK_FALSE(exists(blob_file(version1)));
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs WHERE hash='" + version1 + "'") == 0);
  CHECK(DbInt(&c.c, unlinked) == 0);
  // The model's files, the data, the start adapter and the final one stay.
  const int64_t blobs_after = DbInt(&c.c, "SELECT COUNT(*) FROM blobs");
  CHECK(blobs_after == DbInt(&c.c, "SELECT COUNT(*) FROM job_blobs WHERE job_id=" + id));
  CHECK(blobs_before - blobs_after >= 2 * kSteps + 2);
  CHECK(DbInt(&c.c, "SELECT blobs_collected FROM jobs WHERE id=" + id) == 1);
  CHECK(exists(blob_file(model_hash)));
  // What fetch reads is kept: the adapter comes back the same.
  FetchAdapter(&c.c, job, c->dir() + "/after-gc");
  CHECK(ReadAll(c->dir() + "/after-gc/adapter_model.safetensors") ==
        ReadAll(farm_dir + "/adapter_model.safetensors"));
  stats = c->Cli({"stats", "--json"});
  REQUIRE(stats.exit_code == 0);
  counters = json::parse(stats.LastLine(), nullptr, false);
  CHECK(counters["blobs_removed"].get<int64_t>() >= 2 * kSteps + 1);
}

TEST_CASE("a QLoRA finetune job (--quantize q8_0) equals local finetune --quantize q8_0",
          "[farm][finetune]") {
  Cluster c;
  StartCluster(&c.c, 2);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  const int kSteps = 4;
  auto args = TrainArgs(model, data, kSteps);
  args.insert(args.end(), {"--quantize", "q8_0"});
  std::vector<std::string> farm_args = args;
  farm_args.insert(farm_args.end(), {"--micro-batch", "3"});
  int64_t job = SubmitFinetune(&c.c, farm_args);
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs WHERE id=" + std::to_string(job) +
                        " AND params LIKE '%\"quantize\":\"q8_0\"%'") == 1);
  const std::string farm_dir = c->dir() + "/farm-adapter";
  FetchAdapter(&c.c, job, farm_dir);
  std::vector<double> local = LocalFinetune(&c.c, args, c->dir() + "/local-adapter");
  REQUIRE(local.size() == size_t(kSteps));
  auto log = Lines(ReadAll(farm_dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == size_t(kSteps));
  for (int s = 0; s < kSteps; ++s) {
    INFO("step " << s + 1);
    RequireClose(json::parse(log[size_t(s)])["loss"].get<double>(), local[size_t(s)], 1e-4);
  }
  // The quantized base is another model than the file's: unquantized
  // training takes other losses.
  std::vector<double> plain = LocalFinetune(&c.c, TrainArgs(model, data, kSteps),
                                            c->dir() + "/plain-adapter");
  CHECK(plain.back() != local.back());
}

// Full fine-tuning (--method full): every weight, versions of the whole
// model as blobs, the coordinator's AdamW over all of them.
std::vector<std::string> FullArgs(const std::string& model, const std::string& data, int steps) {
  return {"--model", model, "--data", data, "--steps", std::to_string(steps), "--batch", "6",
          "--lr", "0.003", "--seed", "7", "--method", "full"};
}

TEST_CASE("a full finetune job (--method full) equals local finetune --method full",
          "[farm][finetune][full]") {
  Cluster c;
  // No earlier version kept for rewinds, and released blobs deleted after
  // a second: a step's versions go while the job runs (checked below), and
  // the job must come out the same.
  REQUIRE_OK(c->Init());
  c->SetCoordinatorArgs({"--rewind-keep", "0", "--blob-grace", "1s"});
  REQUIRE_OK(c->StartCoordinator());
  for (int i = 0; i < 2; ++i) REQUIRE_OK(c->AddWorker("w" + std::to_string(i)));
  REQUIRE_OK(c->WaitForConnectedWorkers(2, 30'000));
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  const int kSteps = 4;
  auto args = FullArgs(model, data, kSteps);
  std::vector<std::string> farm_args = args;
  farm_args.insert(farm_args.end(), {"--micro-batch", "3"});
  int64_t job = SubmitFinetune(&c.c, farm_args);
  {
    // Both workers stopped once step 2 is applied: the collector (every
    // second) releases the job's earlier round starts and the versions they
    // named, and deletes the files, while the job runs.
    const std::string id = std::to_string(job);
    const std::string accepted = "SELECT shards_accepted FROM jobs WHERE id=" + id;
    int64_t deadline = Mono() + 120'000;
    while (DbInt(&c.c, accepted) < 4 && Mono() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE_OK(c->PauseWorker(0));
    REQUIRE_OK(c->PauseWorker(1));
    const int64_t now_accepted = DbInt(&c.c, accepted);
    REQUIRE(now_accepted >= 4);
    if (now_accepted >= 2 * kSteps) {
      WARN("the job ended before the workers were stopped: no check of a running job's versions");
    } else {
      auto rows = DbRows(&c.c, "SELECT CAST(params AS TEXT) FROM shards WHERE job_id=" + id +
                                   " AND idx=2");
      REQUIRE(rows.size() == 1);
      const std::string version1 =
          json::parse(rows[0][0])["weights"]["model.safetensors"].get<std::string>();
      const std::string file =
          c->coordinator_dir() + "/blobs/" + version1.substr(0, 2) + "/" + version1;
      const std::string starts = "SELECT COUNT(*) FROM job_round_starts WHERE job_id=" + id;
      deadline = Mono() + 30'000;
      while ((DbInt(&c.c, starts) > 1 || fs::exists(file)) && Mono() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      INFO(c->CoordinatorLog());
      CHECK(DbInt(&c.c, starts) == 1);
      CHECK_FALSE(fs::exists(file));
      CHECK(c->CoordinatorLog().find("a rewind now goes back to round") != std::string::npos);
    }
    REQUIRE_OK(c->ResumeWorker(0));
    REQUIRE_OK(c->ResumeWorker(1));
  }
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + std::to_string(job)) ==
        2 * kSteps);
  const std::string farm_dir = c->dir() + "/farm-model";
  REQUIRE_OK(FetchFarmJob(&c.c, job, farm_dir));
  // A Hugging Face directory: the base's config and tokenizer, the weights.
  CHECK(ReadAll(farm_dir + "/config.json") == ReadAll(model + "/config.json"));
  CHECK(ReadAll(farm_dir + "/tokenizer.json") == ReadAll(model + "/tokenizer.json"));
  REQUIRE(fs::exists(farm_dir + "/model.safetensors"));
  CHECK(!fs::exists(farm_dir + "/adapter_model.safetensors"));

  const std::string local_dir = c->dir() + "/local-model";
  std::vector<double> local = LocalFinetune(&c.c, args, local_dir);
  REQUIRE(local.size() == size_t(kSteps));
  auto log = Lines(ReadAll(farm_dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == size_t(kSteps));
  for (int s = 0; s < kSteps; ++s) {
    json row = json::parse(log[size_t(s)]);
    INFO("step " << s + 1 << ": " << row.dump());
    CHECK(row["shards"] == 2);
    RequireClose(row["loss"].get<double>(), local[size_t(s)], 1e-4);
  }
  // The fetched model is the local one up to rounding, and it learned.
  const double farm = EvalLoss(&c.c, farm_dir, data, "");
  RequireClose(farm, EvalLoss(&c.c, local_dir, data, ""), 1e-4);
  CHECK(farm < 0.8 * EvalLoss(&c.c, model, data, ""));
  auto st = c->JobStatus(job);
  REQUIRE_OK(st);
  CHECK((*st)["summary"]["method"] == "full");
  CHECK((*st)["summary"]["step"] == kSteps);

  // DiLoCo over every weight: 2 rounds of 2 local steps learn too.
  std::vector<std::string> diloco = FullArgs(model, data, kSteps);
  diloco.insert(diloco.end(), {"--micro-batch", "3", "--mode", "diloco", "--local-steps", "2"});
  int64_t djob = SubmitFinetune(&c.c, diloco);
  end = c->WaitForJobEnd(djob, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  const std::string diloco_dir = c->dir() + "/diloco-model";
  REQUIRE_OK(FetchFarmJob(&c.c, djob, diloco_dir));
  CHECK(Lines(ReadAll(diloco_dir + "/trainer_log.jsonl")).size() == 2);
  CHECK(EvalLoss(&c.c, diloco_dir, data, "") < 0.9 * EvalLoss(&c.c, model, data, ""));
}

TEST_CASE("a finetune job rides out kill -9 of a worker and of the coordinator",
          "[farm][finetune]") {
  MiniClusterOptions o;
  o.lease_ms = 4000;
  Cluster c(o);
  StartCluster(&c.c, 2);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  auto args = TrainArgs(model, data, 12);
  args.insert(args.end(), {"--micro-batch", "1"});
  int64_t undisturbed = SubmitFinetune(&c.c, args);
  auto end = c->WaitForJobEnd(undisturbed, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  FetchAdapter(&c.c, undisturbed, c->dir() + "/undisturbed");

  // The same job again (a new request key), killed mid-step.
  int64_t job = SubmitFinetune(&c.c, args);
  const std::string accepted = "SELECT shards_accepted FROM jobs WHERE id=" + std::to_string(job);
  int64_t deadline = Mono() + 120'000;
  while (DbInt(&c.c, accepted) < 14 && Mono() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(DbInt(&c.c, accepted) >= 14);  // in step 3
  REQUIRE_OK(c->KillWorker(0));
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(c->StartWorker(0));
  // And the coordinator once more, a few steps on.
  deadline = Mono() + 120'000;
  while (DbInt(&c.c, accepted) < 40 && Mono() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE_OK(c->KillCoordinator());
  REQUIRE_OK(c->StartCoordinator());
  end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  FetchAdapter(&c.c, job, c->dir() + "/disturbed");
  CHECK(ReadAll(c->dir() + "/disturbed/adapter_model.safetensors") ==
        ReadAll(c->dir() + "/undisturbed/adapter_model.safetensors"));
  CHECK(Lines(ReadAll(c->dir() + "/disturbed/trainer_log.jsonl")).size() == 12);
}

// Bytes up per example of a finished finetune job, as status reports them.
double BytesUpPerExample(MiniCluster* c, int64_t job) {
  auto st = c->JobStatus(job);
  REQUIRE_OK(st);
  const json& s = (*st)["summary"];
  INFO(s.dump());
  REQUIRE(s["examples"].get<int64_t>() > 0);
  return double(s["bytes_up"].get<int64_t>()) / double(s["examples"].get<int64_t>());
}

TEST_CASE("a diloco finetune job on three workers learns with H times less traffic",
          "[farm][finetune][diloco]") {
  Cluster c;
  StartCluster(&c.c, 3);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  const int kH = 5, kRounds = 4, kSteps = kH * kRounds;
  auto args = TrainArgs(model, data, kSteps);
  args.insert(args.end(), {"--micro-batch", "2", "--mode", "diloco", "--local-steps",
                           std::to_string(kH)});
  int64_t job = SubmitFinetune(&c.c, args);
  auto end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  // Every round: 3 replicas (batch 6 in micro-batches of 2).
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + std::to_string(job)) ==
        3 * kRounds);
  const std::string dir = c->dir() + "/diloco-adapter";
  FetchAdapter(&c.c, job, dir);
  auto log = Lines(ReadAll(dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == size_t(kRounds));
  std::vector<double> losses;
  for (int r = 0; r < kRounds; ++r) {
    json row = json::parse(log[size_t(r)]);
    INFO("round " << r + 1 << ": " << row.dump());
    CHECK(row["round"] == r + 1);
    CHECK(row["step"] == kH * (r + 1));
    CHECK(row["local_steps"] == kH);
    CHECK(row["shards"] == 3);
    CHECK(row["examples"] == 6 * kH);
    CHECK(row["bytes_up"].get<int64_t>() > 0);
    CHECK((row["bytes_down"].get<int64_t>() > 0) == (r > 0));  // round 1: a seeded start
    losses.push_back(row["loss"].get<double>());
  }
  CHECK(losses.back() < losses.front());
  const double farm = EvalLoss(&c.c, model, data, dir);
  const double base = EvalLoss(&c.c, model, data, "");
  INFO("diloco adapter loss " << farm << ", base " << base);
  CHECK(farm < 0.8 * base);

  // status: steps are inner steps; the rounds beside them.
  auto st = c->JobStatus(job);
  REQUIRE_OK(st);
  const json& s = (*st)["summary"];
  CHECK(s["mode"] == "diloco");
  CHECK(s["step"] == kSteps);
  CHECK(s["steps"] == kSteps);
  CHECK(s["round"] == kRounds);
  CHECK(s["rounds"] == kRounds);
  CHECK(s["examples"] == 6 * kSteps);
  // Bytes up and down per round, adding up to the job's totals.
  const json& rounds = (*st)["rounds"];
  REQUIRE(rounds.is_array());
  REQUIRE(rounds.size() == size_t(kRounds));
  int64_t up = 0, down = 0;
  for (size_t i = 0; i < rounds.size(); ++i) {
    INFO(rounds[i].dump());
    CHECK(rounds[i]["round"] == int64_t(i + 1));
    CHECK(rounds[i]["bytes_up"].get<int64_t>() > 0);
    CHECK((rounds[i]["bytes_down"].get<int64_t>() > 0) == (i > 0));
    up += rounds[i]["bytes_up"].get<int64_t>();
    down += rounds[i]["bytes_down"].get<int64_t>();
  }
  CHECK(up == s["bytes_up"].get<int64_t>());
  CHECK(down == s["bytes_down"].get<int64_t>());
  CommandResult human = c->Cli({"status", std::to_string(job)});
  INFO(human.Describe());
  CHECK(human.out.find("step:       20 of 20") != std::string::npos);

  // A sync job on the same data and shards sends one result per shard per
  // step, diloco one per shard per H steps: H times the bytes per example,
  // but for the few bytes by which results' JSON headers differ.
  std::vector<std::string> sync_args = TrainArgs(model, data, 3);
  sync_args.insert(sync_args.end(), {"--micro-batch", "2"});
  int64_t sync_job = SubmitFinetune(&c.c, sync_args);
  end = c->WaitForJobEnd(sync_job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  const double sync_per_example = BytesUpPerExample(&c.c, sync_job);
  const double diloco_per_example = BytesUpPerExample(&c.c, job);
  INFO("bytes up per example: sync " << sync_per_example << ", diloco " << diloco_per_example);
  CHECK(diloco_per_example * kH <= sync_per_example * 1.001);
}

TEST_CASE("a diloco job rides out kill -9 of a worker and of the coordinator",
          "[farm][finetune][diloco]") {
  MiniClusterOptions o;
  o.lease_ms = 4000;
  Cluster c(o);
  StartCluster(&c.c, 2);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  // 4 rounds of 3 local steps, 3 replicas each: shards 0-2, 3-5, 6-8, 9-11.
  auto args = TrainArgs(model, data, 12);
  args.insert(args.end(), {"--micro-batch", "2", "--mode", "diloco", "--local-steps", "3"});
  int64_t undisturbed = SubmitFinetune(&c.c, args);
  auto end = c->WaitForJobEnd(undisturbed, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  FetchAdapter(&c.c, undisturbed, c->dir() + "/undisturbed");

  int64_t job = SubmitFinetune(&c.c, args);
  const std::string accepted = "SELECT shards_accepted FROM jobs WHERE id=" + std::to_string(job);
  auto wait_accepted = [&](int64_t n) {
    const int64_t deadline = Mono() + 120'000;
    while (DbInt(&c.c, accepted) < n && Mono() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    REQUIRE(DbInt(&c.c, accepted) >= n);
  };
  // Worker 1 is paused (SIGSTOP) while worker 0 and the coordinator die, so
  // the job cannot run on to its end between the poll and the kills.
  wait_accepted(4);  // in round 2
  REQUIRE_OK(c->PauseWorker(1));
  REQUIRE_OK(c->KillWorker(0));
  REQUIRE_OK(c->KillCoordinator());
  CHECK(DbInt(&c.c, accepted) < 12);  // killed while the job runs
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(c->StartWorker(0));
  REQUIRE_OK(c->ResumeWorker(1));
  // And the coordinator once more with round 3 almost in: both workers
  // paused first, so round 4 cannot start and end before the kill.
  wait_accepted(8);
  REQUIRE_OK(c->PauseWorker(0));
  REQUIRE_OK(c->PauseWorker(1));
  REQUIRE_OK(c->KillCoordinator());
  // Round 4 needs two shards in a row on each worker (~40 ms each), so the
  // job is almost always still running here; but this process can be
  // descheduled for longer between seeing 8 and the two SIGSTOPs on a
  // loaded 2-core CI machine (seen once in an ASan run: 12 accepted), and
  // then this kill lands after the end. The first kill above is the one
  // that must land mid-job; this one says so when it did not.
  if (DbInt(&c.c, accepted) == 12)
    WARN("the job ended before the second kill: that restart was of an ended job");
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(c->ResumeWorker(0));
  REQUIRE_OK(c->ResumeWorker(1));
  end = c->WaitForJobEnd(job, 300'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");
  FetchAdapter(&c.c, job, c->dir() + "/disturbed");
  CHECK(ReadAll(c->dir() + "/disturbed/adapter_model.safetensors") ==
        ReadAll(c->dir() + "/undisturbed/adapter_model.safetensors"));
  CHECK(Lines(ReadAll(c->dir() + "/disturbed/trainer_log.jsonl")).size() == 4);
}

TEST_CASE("a diloco round proceeds with its quorum when a worker stalls", "[farm][finetune][diloco]") {
  MiniClusterOptions o;
  // Neither the lease nor the heartbeat's liveness (a silent worker is
  // lost and its shard re-issued) can be what ends a stalled round: both
  // are longer than the job may take (an ASan build on a loaded 2-core
  // machine took 30 s with a 60 s lease and a 10 s liveness).
  o.lease_ms = 180'000;
  o.heartbeat_liveness = 900;  // 180 s
  Cluster c(o);
  StartCluster(&c.c, 3);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  // 4 rounds of 8 local steps, 3 replicas each (batch 6, micro-batch 2).
  auto args = TrainArgs(model, data, 32);
  args.insert(args.end(), {"--micro-batch", "2", "--mode", "diloco", "--local-steps", "8",
                           "--quorum", "0.6", "--round-timeout", "1"});
  int64_t job = SubmitFinetune(&c.c, args);
  // Worker 2 stalls (SIGSTOP) while it holds a shard of the job: its owner
  // came back, or its PC went to sleep.
  const int64_t w2 = WorkerId(&c.c, c->worker_name(2));
  const std::string holds = "SELECT COUNT(*) FROM attempts WHERE state='leased' AND job_id=" +
                            std::to_string(job) + " AND worker_id=" + std::to_string(w2);
  int64_t deadline = Mono() + 60'000;
  while (DbInt(&c.c, holds) == 0 && Mono() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(DbInt(&c.c, holds) > 0);
  REQUIRE_OK(c->PauseWorker(2));
  const int64_t paused_at = Mono();
  auto end = c->WaitForJobEnd(job, 150'000);
  const int64_t took = Mono() - paused_at;
  REQUIRE_OK(c->ResumeWorker(2));
  REQUIRE_OK(end);
  INFO(c->DumpLogs());
  REQUIRE(*end == "succeeded");
  // Sooner than the lease and the liveness: each stalled round waited its
  // 1 s timeout, not for worker 2's shard to be leased again.
  INFO("the job ended " << took << " ms after worker 2 stalled");
  CHECK(took < 150'000);
  const std::string dir = c->dir() + "/quorum-adapter";
  FetchAdapter(&c.c, job, dir);
  auto log = Lines(ReadAll(dir + "/trainer_log.jsonl"));
  REQUIRE(log.size() == 4);
  int64_t dropped = 0;
  for (const auto& line : log) {
    json row = json::parse(line);
    INFO(row.dump());
    CHECK(row["shards"].get<int64_t>() + row["dropped"].get<int64_t>() == 3);
    CHECK(row["shards"].get<int64_t>() >= 2);  // ceil(0.6 * 3)
    CHECK(row["examples"] == 2 * row["shards"].get<int64_t>() * 8);
    CHECK(std::isfinite(row["loss"].get<double>()));
    dropped += row["dropped"].get<int64_t>();
  }
  CHECK(dropped >= 1);
  const std::string id = std::to_string(job);
  CHECK(DbInt(&c.c, "SELECT shards_dropped FROM jobs WHERE id=" + id) == dropped);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE state='cancelled' AND job_id=" + id) ==
        dropped);
  // Learned from the rounds' quorums all the same.
  CHECK(EvalLoss(&c.c, model, data, dir) < EvalLoss(&c.c, model, data, ""));
}

TEST_CASE("int8 gradients with error feedback end within 1% of f32's loss",
          "[farm][finetune]") {
  Cluster c;
  StartCluster(&c.c, 2);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  auto args = TrainArgs(model, data, 20);
  args.insert(args.end(), {"--micro-batch", "2"});
  std::map<std::string, double> final_loss;
  std::map<std::string, int64_t> bytes_up, bytes_down;
  for (const char* codec : {"none", "int8"}) {
    std::vector<std::string> a = args;
    a.insert(a.end(), {"--compress", codec});
    int64_t job = SubmitFinetune(&c.c, a);
    auto end = c->WaitForJobEnd(job, 300'000);
    REQUIRE_OK(end);
    REQUIRE(*end == "succeeded");
    const std::string dir = c->dir() + "/adapter-" + codec;
    FetchAdapter(&c.c, job, dir);
    final_loss[codec] = EvalLoss(&c.c, model, data, dir);
    for (const auto& l : Lines(ReadAll(dir + "/trainer_log.jsonl"))) {
      bytes_up[codec] += json::parse(l)["bytes_up"].get<int64_t>();
      bytes_down[codec] += json::parse(l)["bytes_down"].get<int64_t>();
    }
    if (std::string(codec) == "int8") {
      // Versions after the first go down as int8 too.
      CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM shards WHERE job_id=" + std::to_string(job) +
                            " AND CAST(params AS TEXT) LIKE '%adapter_model.pcg%'") == 3 * 19);
    }
  }
  INFO("f32 loss " << final_loss["none"] << ", int8 loss " << final_loss["int8"]);
  CHECK(std::abs(final_loss["int8"] - final_loss["none"]) <= 0.01 * final_loss["none"]);
  // About 1.06 bytes a value instead of 4, plus each result's header, up
  // and down.
  CHECK(bytes_up["int8"] * 3 < bytes_up["none"]);
  CHECK(bytes_down["int8"] * 3 < bytes_down["none"]);
}

TEST_CASE("bad finetune inputs: one line, exit 1, nothing queued", "[farm][finetune]") {
  Cluster c;
  StartCluster(&c.c, 0);
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  MakeModel(&c.c, model);
  REQUIRE_OK(WriteAll(data, TrainData()));
  const std::string bad = c->dir() + "/bad.jsonl";
  REQUIRE_OK(WriteAll(bad, TrainData() + "{\"text\": 5}\n"));
  const std::string not_llama = c->dir() + "/not-llama";
  fs::create_directories(not_llama);
  REQUIRE_OK(WriteAll(not_llama + "/config.json", R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})"));
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  std::vector<Case> cases = {
      {{"--model", model, "--data", bad}, "bad.jsonl:17"},
      {{"--model", not_llama, "--data", data}, "not-llama"},
      {{"--model", model, "--data", data, "--batch", "17"}, "larger than the data"},
      {{"--model", model, "--data", data, "--local-steps", "5"}, "--local-steps"},
      {{"--model", model, "--data", data, "--outer-lr", "0.5"}, "--outer-lr"},
      {{"--model", model, "--data", data, "--mode", "diloco", "--local-steps", "0"},
       "--local-steps"},
      {{"--model", model, "--data", data, "--mode", "diloco", "--outer-momentum", "1"},
       "--outer-momentum"},
      {{"--model", model, "--data", data, "--mode", "diloco", "--outer-lr", "-1"}, "--outer-lr"},
      {{"--model", model, "--data", data, "--mode", "async"}, "--mode"},
      {{"--model", model, "--data", data, "--aggregate", "vote"}, "--aggregate"},
      {{"--model", model, "--data", data, "--lora-targets", "x_proj"}, "x_proj"},
      {{"--model", model, "--data", c->dir() + "/missing.jsonl"}, "missing.jsonl"},
      {{"--model", model, "--data", data, "--quorum", "0"}, "--quorum"},
      {{"--model", model, "--data", data, "--quorum", "1.5"}, "--quorum"},
      {{"--model", model, "--data", data, "--round-timeout", "5"}, "--round-timeout"},
      {{"--model", model, "--data", data, "--quantize", "q3"}, "--quantize: quantize: 'q3'"},
      {{"--model", model, "--data", data, "--method", "partial"}, "--method must be lora or full"},
      {{"--model", model, "--data", data, "--method", "full", "--quantize", "q8_0"},
       "--method full trains every weight in f32: it does not take --quantize"},
      {{"--model", model, "--data", data, "--method", "full", "--lora-rank", "4"},
       "--lora-rank is for --method lora"},
      {{"--model", model + "/config.json", "--data", data, "--method", "full"},
       "--method full writes a Hugging Face model directory"},
  };
  for (const auto& k : cases) {
    std::vector<std::string> a = {"submit", "finetune"};
    a.insert(a.end(), k.args.begin(), k.args.end());
    CommandResult r = c->Cli(a, 30, 120'000);
    INFO(r.Describe());
    CHECK(r.exit_code == 1);
    CHECK(Lines(r.err).size() == 1);
    CHECK(r.err.find(k.says) != std::string::npos);
  }
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM jobs") == 0);
  CHECK(DbInt(&c.c, "SELECT COUNT(*) FROM blobs") == 0);
}

}  // namespace
}  // namespace pcfarm
