#include "coordinator/jobs/planner.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "coordinator/jobs/infer_planner.h"
#include "coordinator/jobs/memory_estimate.h"
#include "coordinator/store.h"
#include "crypto/hash.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/token_data.h"

namespace pcfarm {
namespace {

using nlohmann::json;

TEST_CASE("prompts split by count, by budget and by bytes", "[planner]") {
  std::vector<int64_t> tokens(10, 10);
  std::vector<size_t> bytes(10, 100);
  auto s = SplitPrompts(tokens, bytes, 54, 1000, 4);
  REQUIRE(s.size() == 3);
  CHECK(s[0].first == 0);
  CHECK(s[0].count == 4);
  CHECK(s[2].first == 8);
  CHECK(s[2].count == 2);
  // Budget: 2 * params * (10 + 54) FLOP per prompt; 3.5 prompts' work per
  // shard asks for 3 shards of 10 prompts, but each shard keeps at least
  // 16 prompts: one shard.
  int64_t params = int64_t(kInferShardFlops / (2.0 * 64 * 3.5));
  auto b = SplitPrompts(tokens, bytes, 54, params, 0);
  REQUIRE(b.size() == 1);
  // 64 prompts of equal work and a budget of 14 each: 4 shards of 16 (not
  // 4 full ones and a tail of 8).
  std::vector<int64_t> t64(64, 10);
  std::vector<size_t> b64(64, 100);
  params = int64_t(kInferShardFlops / (2.0 * 64 * 14));
  auto e = SplitPrompts(t64, b64, 54, params, 0);
  REQUIRE(e.size() == 4);
  for (const auto& x : e) CHECK(x.count == 16);
  // Unequal work: slices of about equal work, not of equal count.
  std::vector<int64_t> uneven(64, 10);
  for (size_t i = 0; i < 16; ++i) uneven[i] = 10 * 64 + 54 * 3;  // 4x the work
  auto u = SplitPrompts(uneven, b64, 54, params * 100, 0);
  REQUIRE(u.size() == 4);
  CHECK(u[0].count < 16);
  // Bytes cut even a fixed count.
  std::vector<size_t> big(10, kInferShardParamsBytes / 2);
  auto c = SplitPrompts(tokens, big, 54, 1000, 8);
  CHECK(c.size() == 5);
  // A tiny model: everything fits one shard, capped by the prompt limit.
  std::vector<int64_t> many(600, 5);
  std::vector<size_t> small(600, 10);
  auto d = SplitPrompts(many, small, 16, 1000, 0);
  REQUIRE(d.size() == 3);
  for (const auto& x : d) CHECK(x.count <= size_t(kInferMaxPromptsPerShard));
  size_t total = 0;
  for (const auto& x : d) total += x.count;
  CHECK(total == 600);
}

struct PlannerFixture {
  std::string dir;
  std::unique_ptr<BlobStore> blobs;
  PlannerFixture() {
    CryptoInit();
    char tmpl[] = "/tmp/pcfarm_planner_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    blobs = std::move(BlobStore::Open(dir)).value();
  }
  ~PlannerFixture() { std::filesystem::remove_all(dir); }
};

TEST_CASE_METHOD(PlannerFixture, "an infer job becomes shards with global seeds", "[planner]") {
  const JobPlanner* infer = FindPlanner("infer");
  REQUIRE(infer != nullptr);
  std::string lines;
  for (int i = 0; i < 7; ++i) {
    lines += json{{"prompt", "prompt number " + std::to_string(i)}, {"tokens", 4}}.dump() + "\n";
  }
  std::string prompts = *blobs->Put(lines);
  std::string model = *blobs->Put("model bytes");
  wire::SubmitRequest req;
  req.set_kind("infer");
  json p = {{"model", {{"model.safetensors", model}}}, {"prompts_blob", prompts},
            {"prompts", 7}, {"max_tokens", 8}, {"seed", 100}, {"prompts_per_shard", 3},
            {"temperature", 0.5}, {"model_bytes", 11}};
  req.set_params(p.dump());
  auto plan = infer->Plan(req, *blobs);
  REQUIRE(plan.ok());
  REQUIRE(plan->shards.size() == 3);
  json s1 = json::parse(plan->shards[1].params);
  CHECK(s1["first"] == 3);
  CHECK(s1["seed"] == 103);
  CHECK(s1["prompts"].size() == 3);
  CHECK(s1["prompts"][0] == "prompt number 3");
  CHECK(s1["temperature"] == 0.5);
  CHECK(plan->shards[1].needs_memory_bytes == 11);
  CHECK(plan->blobs.size() == 2);
  CHECK(infer->ShardBlobs(plan->params) == std::vector<std::string>{model});

  // Output: one line per prompt, in order, naming the worker.
  json out = {{"outputs", json::array()}};
  for (int i = 0; i < 3; ++i) {
    out["outputs"].push_back({{"tokens", {1, 2}}, {"logprobs", {-0.1, -0.2}},
                              {"text", "t" + std::to_string(i)}, {"finish", "length"}});
  }
  std::string rows = infer->Output({FetchedShard{1, plan->shards[1].params, out.dump(), "w1"}});
  std::vector<json> parsed;
  for (size_t pos = 0; pos < rows.size();) {
    size_t end = rows.find('\n', pos);
    parsed.push_back(json::parse(rows.substr(pos, end - pos)));
    pos = end + 1;
  }
  REQUIRE(parsed.size() == 3);
  CHECK(parsed[0]["index"] == 3);
  CHECK(parsed[2]["prompt"] == "prompt number 5");
  CHECK(parsed[1]["text"] == "t1");
  CHECK(parsed[1]["finish_reason"] == "length");
  CHECK(parsed[1]["worker"] == "w1");

  std::string summary = infer->Fold("{}", 1, out.dump());
  CHECK(json::parse(summary)["prompts"] == 3);
  CHECK(json::parse(summary)["tokens"] == 6);

  SECTION("quantize and the memory estimate reach every shard") {
    ModelDims dims{64, 2, 4, 2, 16, 128, 100, 5000};
    json q = p;
    q["quantize"] = "q8_0";
    q["model_dims"] = ModelDimsToJson(dims);
    wire::SubmitRequest r = req;
    r.set_params(q.dump());
    auto qp = infer->Plan(r, *blobs);
    REQUIRE(qp.ok());
    REQUIRE(qp->shards.size() == 3);
    for (const auto& shard : qp->shards) CHECK(json::parse(shard.params)["quantize"] == "q8_0");
    // Shard 1: 3 prompts of 4 tokens, each up to 4 + 8 positions.
    CHECK(qp->shards[1].needs_memory_bytes == InferShardMemoryBytes(dims, 3, 12, 12));
    CHECK(qp->shards[2].needs_memory_bytes == InferShardMemoryBytes(dims, 1, 4, 12));
    // Without model_dims (a job from before them): the files' size.
    CHECK_FALSE(json::parse(plan->shards[0].params).contains("quantize"));
    q["quantize"] = "q3";
    r.set_params(q.dump());
    CHECK(infer->Plan(r, *blobs).status().code() == StatusCode::kInvalidArgument);
    q["quantize"] = "q8_0";
    q["model_dims"].erase("vocab");
    r.set_params(q.dump());
    CHECK(infer->Plan(r, *blobs).status().message().find("model_dims.vocab") !=
          std::string::npos);
  }

  SECTION("bad params are refused") {
    auto bad = [&](json q) {
      wire::SubmitRequest r = req;
      r.set_params(q.dump());
      return infer->Plan(r, *blobs).status();
    };
    json q = p;
    q["prompts"] = 8;
    CHECK(bad(q).message().find("holds 7 prompts") != std::string::npos);
    q = p;
    q.erase("model");
    CHECK(bad(q).code() == StatusCode::kInvalidArgument);
    q = p;
    q["prompts_blob"] = std::string(64, 'a');
    CHECK(bad(q).code() == StatusCode::kNotFound);
    q = p;
    q["max_tokens"] = 0;
    CHECK(bad(q).code() == StatusCode::kInvalidArgument);
    wire::SubmitRequest with_shards = req;
    with_shards.add_shard_params("{}");
    CHECK(infer->Plan(with_shards, *blobs).status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE_METHOD(PlannerFixture, "finetune shards carry quantize and the memory estimate",
                 "[planner]") {
  const JobPlanner* finetune = FindPlanner("finetune");
  REQUIRE(finetune != nullptr);
  // A rank-2 adapter on layer 0's q_proj (8 wide), and 5 sequences.
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4;
  lora.target_modules = {"q_proj"};
  std::vector<ParameterInfo> layout = {{LoraTensorName(0, "q_proj", false), {2, 8}, 0, 16},
                                       {LoraTensorName(0, "q_proj", true), {8, 2}, 16, 16}};
  std::vector<float> flat(32, 0.01f);
  std::string config = *blobs->Put(EncodeAdapterConfig(lora, "m"));
  std::string weights = *blobs->Put(*EncodeAdapterSafetensors(layout, flat));
  std::vector<TokenSequence> seqs(5, TokenSequence{{1, 2, 3, 4}, {}});
  std::string data = *blobs->Put(EncodeTokenData(seqs));
  std::string model = *blobs->Put("model bytes");
  ModelDims dims{64, 2, 4, 2, 16, 128, 100, 5000};
  json p = {{"model", {{"model.safetensors", model}}},
            {"adapter", {{"adapter_config.json", config}, {"adapter_model.safetensors", weights}}},
            {"data", data}, {"examples", 5}, {"steps", 2}, {"batch", 4}, {"micro_batch", 3},
            {"seed", 1}, {"lora", {{"rank", 2}, {"alpha", 4}, {"targets", {"q_proj"}}}},
            {"model_bytes", 11}};
  wire::SubmitRequest req;
  req.set_kind("finetune");
  req.set_params(p.dump());
  auto old = finetune->Plan(req, *blobs);
  REQUIRE(old.ok());
  REQUIRE(old->shards.size() == 2);
  CHECK(old->shards[0].needs_memory_bytes == 11);  // no model_dims: the files' size
  CHECK_FALSE(json::parse(old->shards[0].params).contains("quantize"));
  for (const char* mode : {"sync", "diloco"}) {
    json q = p;
    q["mode"] = mode;
    q["quantize"] = "q4_0";
    q["model_dims"] = ModelDimsToJson(dims);
    q["trainable_parameters"] = 32;
    q["longest_sequence"] = 4;
    req.set_params(q.dump());
    auto plan = finetune->Plan(req, *blobs);
    INFO(mode);
    REQUIRE(plan.ok());
    REQUIRE(plan->shards.size() == 2);
    for (const auto& shard : plan->shards) {
      CHECK(json::parse(shard.params)["quantize"] == "q4_0");
      // Micro-batch 3 × the longest sequence's 4 tokens.
      CHECK(shard.needs_memory_bytes == TrainShardMemoryBytes(dims, 32, 2, 12));
    }
    // Its work, to hold a claimed speed to measured shard times: 4 FLOP per
    // weight per token (forward, backward to the activations) over the
    // tokens of the shard's examples (every local step's for DiLoCo).
    const double weights = 2.0 * (64.0 * 64 * 2 + 64.0 * 32 * 2 + 3.0 * 64 * 128) + 100.0 * 64;
    json shard = json::parse(plan->shards[0].params);
    double tokens = 0;
    if (shard.contains("examples")) tokens = 4.0 * double(shard["examples"].size());
    for (const auto& step : shard.value("steps_examples", json::array())) {
      tokens += 4.0 * double(step.size());
    }
    CHECK(tokens > 0);
    CHECK(finetune->ShardFlops(plan->params, plan->shards[0].params) ==
          Approx(4.0 * weights * tokens));
  }
  CHECK(finetune->ShardFlops(p.dump(), old->shards[0].params) == 0);  // no model_dims

  // A job rewound by a quarantine (Store::Db::RewindForBannedTx) to the
  // start of round 1: its planner plans round 1 again, the same shards,
  // and keeps the count of rewinds.
  FakeClock clock(1'000);
  auto store = Store::Open(dir + "/state.db", &clock);
  REQUIRE(store.ok());
  for (const char* mode : {"sync", "diloco"}) {
    INFO(mode);
    json q = p;
    q["mode"] = mode;
    req.set_params(q.dump());
    auto plan = finetune->Plan(req, *blobs);
    REQUIRE(plan.ok());
    JobInfo job;
    job.id = 1;
    job.kind = "finetune";
    job.params = plan->params;
    job.shards_total = 7;
    job.shards_accepted = 0;
    job.shards_dropped = 7;
    job.summary = R"({"round_first_shard":7,"replan":true,"rewinds":1})";
    REQUIRE(finetune->ReadyToAdvance(job, 1'000));
    auto adv = finetune->Advance(job, **store, *blobs, 1'000);
    REQUIRE(adv.ok());
    CHECK(adv->end == JobAdvance::End::kContinue);
    CHECK(adv->expected_shards_total == 7);
    CHECK(adv->round == -1);  // no round applied
    REQUIRE(adv->shards.size() == plan->shards.size());
    for (size_t i = 0; i < plan->shards.size(); ++i) {
      CHECK(adv->shards[i].params == plan->shards[i].params);
    }
    CHECK(json::parse(adv->summary) == json::parse(R"({"round_first_shard":7,"rewinds":1})"));
  }
}

TEST_CASE_METHOD(PlannerFixture,
                 "finetune: a seeded start is drawn by the workers, other starts are sent",
                 "[planner]") {
  const JobPlanner* finetune = FindPlanner("finetune");
  REQUIRE(finetune != nullptr);
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4;
  lora.target_modules = {"q_proj"};
  std::vector<ParameterInfo> layout = {{LoraTensorName(0, "q_proj", false), {2, 8}, 0, 16},
                                       {LoraTensorName(0, "q_proj", true), {8, 2}, 16, 16}};
  // What EnableLora draws from seed 9: A uniform, B zero.
  const std::vector<float> seeded = InitialLoraValues(layout, 9);
  std::string config = *blobs->Put(EncodeAdapterConfig(lora, "m"));
  std::string weights = *blobs->Put(*EncodeAdapterSafetensors(layout, seeded));
  std::vector<TokenSequence> seqs(5, TokenSequence{{1, 2, 3, 4}, {}});
  json p = {{"model", {{"model.safetensors", *blobs->Put("model bytes")}}},
            {"adapter", {{"adapter_config.json", config}, {"adapter_model.safetensors", weights}}},
            {"data", *blobs->Put(EncodeTokenData(seqs))}, {"examples", 5}, {"steps", 2},
            {"batch", 4}, {"micro_batch", 2}, {"seed", 9}};
  wire::SubmitRequest req;
  req.set_kind("finetune");
  for (const char* mode : {"sync", "diloco"}) {
    INFO(mode);
    json q = p;
    q["mode"] = mode;
    req.set_params(q.dump());
    auto plan = finetune->Plan(req, *blobs);
    REQUIRE(plan.ok());
    REQUIRE(plan->shards.size() == 2);
    for (const auto& shard : plan->shards) {
      json sp = json::parse(shard.params);
      CHECK_FALSE(sp.contains("adapter"));
      CHECK(sp["lora"] == json({{"rank", 2}, {"alpha", 4.0}, {"targets", {"q_proj"}},
                                {"seed", 9}}));
      CHECK(finetune->ShardOwnBlobs(shard.params).empty());  // nothing to download
    }
  }
  // Another seed, or other values: the start goes as it is.
  json other = p;
  other["seed"] = 10;
  req.set_params(other.dump());
  auto plan = finetune->Plan(req, *blobs);
  REQUIRE(plan.ok());
  json sp = json::parse(plan->shards[0].params);
  CHECK(sp["adapter"] == p["adapter"]);
  CHECK_FALSE(sp.contains("lora"));
  CHECK(finetune->ShardOwnBlobs(plan->shards[0].params).size() == 2);
  // Method full: the weights as they are, "method" in every shard; LoRA
  // fields are refused.
  json full = p;
  full.erase("adapter");
  full["method"] = "full";
  full["weights"] = {{"model.safetensors", weights}};
  req.set_params(full.dump());
  plan = finetune->Plan(req, *blobs);
  REQUIRE(plan.ok());
  sp = json::parse(plan->shards[0].params);
  CHECK(sp["method"] == "full");
  CHECK(sp["weights"] == full["weights"]);
  CHECK_FALSE(sp.contains("adapter"));
  json bad = full;
  bad["adapter"] = p["adapter"];
  req.set_params(bad.dump());
  CHECK(finetune->Plan(req, *blobs).status().message().find("takes no 'adapter'") !=
        std::string::npos);
  bad = full;
  bad["weights"] = {{"other.safetensors", weights}};
  req.set_params(bad.dump());
  CHECK(finetune->Plan(req, *blobs).status().message().find("'weights' must name exactly") !=
        std::string::npos);
}

TEST_CASE_METHOD(PlannerFixture, "a bench job keeps its shards; its output is the summary",
                 "[planner]") {
  const JobPlanner* bench = FindPlanner("bench");
  REQUIRE(bench != nullptr);
  wire::SubmitRequest req;
  req.set_kind("bench");
  req.add_shard_params(R"({"n":16,"seed":1,"reps":1})");
  auto plan = bench->Plan(req, *blobs);
  REQUIRE(plan.ok());
  CHECK(plan->shards.size() == 1);
  CHECK(bench->ShardBlobs(plan->params).empty());
  JobInfo job;
  job.summary = R"({"shards":1})";
  CHECK(json::parse(bench->OutputTail(job))["shards"] == 1);
  wire::SubmitRequest empty;
  empty.set_kind("bench");
  CHECK_FALSE(bench->Plan(empty, *blobs).ok());
  CHECK(FindPlanner("nope") == nullptr);
}

}  // namespace
}  // namespace pcfarm
