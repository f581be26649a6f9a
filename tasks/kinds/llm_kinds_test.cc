#include "tasks/kinds/llm_kinds.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// The fixture model's files under made-up blob names: the kinds trust the
// resolver (the worker's cache verifies hashes), so any 64-hex name works.
struct FixtureBlobs {
  std::map<std::string, std::string> path_of;
  json files = json::object();
  json adapter = json::object();
  FixtureBlobs() {
    std::string dir = std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/llama_tiny";
    int n = 0;
    auto add = [&](const std::string& file, json* into) {
      char name[65];
      std::snprintf(name, sizeof name, "%064d", ++n);
      path_of[name] = dir + "/" + file;
      (*into)[std::filesystem::path(file).filename().string()] = name;
    };
    add("config.json", &files);
    add("model.safetensors", &files);
    add("tokenizer.json", &files);
    add("adapter/adapter_config.json", &adapter);
    add("adapter/adapter_model.safetensors", &adapter);
  }
  RunContext Context(const std::string& backend = "cpu") const {
    RunContext ctx;
    ctx.backend = backend;
    ctx.blob_path = [this](std::string_view hash) -> Result<std::string> {
      auto it = path_of.find(std::string(hash));
      if (it == path_of.end()) return NotFound("no blob " + std::string(hash));
      return it->second;
    };
    return ctx;
  }
};

TEST_CASE("infer generates deterministically and agrees with itself") {
  FixtureBlobs blobs;
  auto kind = MakeInferKind();
  json p = {{"model", blobs.files},
            {"prompt_tokens", {{1, 2, 3, 4, 5}, {7, 8}}},
            {"max_tokens", 6}};
  REQUIRE(kind->ValidateParams(p.dump()).ok());
  auto a = kind->Run(p.dump(), blobs.Context());
  REQUIRE(a.ok());
  auto b = kind->Run(p.dump(), blobs.Context());
  REQUIRE(b.ok());
  CHECK(kind->Agree(*a, *b));
  json out = json::parse(*a);
  REQUIRE(out["outputs"].size() == 2);
  CHECK(out["outputs"][0]["tokens"].size() == 6);
  CHECK(out["outputs"][0]["logprobs"].size() == 6);
  // A changed token is a different answer.
  json bad = out;
  bad["outputs"][1]["tokens"][0] = (bad["outputs"][1]["tokens"][0].get<int>() + 1) % 96;
  CHECK_FALSE(kind->Agree(*a, bad.dump()));
  CHECK_FALSE(kind->Agree(*a, "not json"));

  // The real results pass the shape check; bad shapes are refused naming
  // what is wrong.
  CHECK(kind->ValidateOutput(p.dump(), *a).ok());
  auto shape = [&](const json& r) { return kind->ValidateOutput(p.dump(), r.dump()); };
  json one = out;
  one["outputs"].erase(1);
  CHECK(shape(one).message().find("one entry per prompt (2)") != std::string::npos);
  json longer = out;
  for (int i = 0; i < 3; ++i) {
    longer["outputs"][0]["tokens"].push_back(1);
    longer["outputs"][0]["logprobs"].push_back(-0.5);
  }
  CHECK(shape(longer).message().find("at most 6 ids") != std::string::npos);
  json lp = out;
  lp["outputs"][0]["logprobs"][0] = 3.0;
  CHECK(shape(lp).message().find("'logprobs'") != std::string::npos);
  json fin = out;
  fin["outputs"][0]["finish"] = "maybe";
  CHECK(shape(fin).message().find("'finish'") != std::string::npos);
  CHECK(kind->ValidateOutput(p.dump(), std::string(1 << 20, '[')).message().find(
            "nested deeper") != std::string::npos);
  CHECK_FALSE(kind->ValidateOutput(p.dump(), std::string(kind->max_output_bytes() + 1, ' ')).ok());

  // Sampling with a seed repeats; the adapter changes the answer.
  p["temperature"] = 0.8;
  p["seed"] = 42;
  auto s1 = kind->Run(p.dump(), blobs.Context());
  auto s2 = kind->Run(p.dump(), blobs.Context());
  REQUIRE(s1.ok());
  REQUIRE(s2.ok());
  CHECK(json::parse(*s1)["outputs"] == json::parse(*s2)["outputs"]);

  // Text prompts go through the model's tokenizer.
  json t = {{"model", blobs.files}, {"prompts", {"hello"}}, {"max_tokens", 3}};
  auto text = kind->Run(t.dump(), blobs.Context());
  REQUIRE(text.ok());
  CHECK(json::parse(*text)["outputs"][0]["tokens"].size() == 3);
}

TEST_CASE("infer on Vulkan agrees with the CPU") {
  BackendOptions bo;
  if (!CreateBackend("vulkan", bo).ok()) {
    WARN("skipped: no Vulkan device here");
    return;
  }
  FixtureBlobs blobs;
  auto kind = MakeInferKind();
  json p = {{"model", blobs.files}, {"prompt_tokens", {{3, 1, 4, 1, 5, 9}}}, {"max_tokens", 5}};
  auto cpu = kind->Run(p.dump(), blobs.Context("cpu"));
  auto vk = kind->Run(p.dump(), blobs.Context("vulkan"));
  REQUIRE(cpu.ok());
  REQUIRE(vk.ok());
  CHECK(kind->Agree(*cpu, *vk));
}

TEST_CASE("train returns summed gradients and local-step differences") {
  FixtureBlobs blobs;
  auto kind = MakeTrainKind();
  json batch = json::array({{{"tokens", {1, 2, 3, 4, 5, 6}}, {"weights", {0, 0, 1, 1, 1, 0}}},
                            {{"tokens", {9, 8, 7}}, {"weights", {1, 1, 0}}}});
  json p = {{"model", blobs.files}, {"batch", batch}, {"lora", {{"rank", 4}, {"alpha", 8}}}};
  REQUIRE(kind->ValidateParams(p.dump()).ok());
  auto a = kind->Run(p.dump(), blobs.Context());
  REQUIRE(a.ok());
  auto b = kind->Run(p.dump(), blobs.Context());
  REQUIRE(b.ok());
  CHECK(kind->Agree(*a, *b));
  json out = json::parse(*a);
  // weights[i] weights the prediction of token i; weights[0] is unused.
  CHECK(out["weight"].get<double>() == Approx(4));
  CHECK(out["tokens"].get<int>() == 4);
  CHECK(out["count"].get<size_t>() == out["values"].size());
  // B starts at zero, so dLoss/dA is zero and only the B half moves; the
  // gradient is not all zero.
  double norm = 0;
  for (const auto& v : out["values"]) norm += v.get<double>() * v.get<double>();
  CHECK(norm > 0);
  // A perturbed gradient disagrees.
  json bad = out;
  for (auto& v : bad["values"]) v = v.get<double>() * 1.01 + 1e-3;
  CHECK_FALSE(kind->Agree(*a, bad.dump()));

  CHECK(kind->ValidateOutput(p.dump(), *a).ok());
  json miscount = out;
  miscount["count"] = out["values"].size() + 1;
  CHECK(kind->ValidateOutput(p.dump(), miscount.dump()).message().find("'count'") !=
        std::string::npos);
  json noloss = out;
  noloss.erase("loss");
  CHECK_FALSE(kind->ValidateOutput(p.dump(), noloss.dump()).ok());
  json nested = out;
  nested["values"][0] = json::array({1.0});
  CHECK(kind->ValidateOutput(p.dump(), nested.dump()).message().find("nested deeper") !=
        std::string::npos);

  // From the fixture adapter (B non-zero), with two local AdamW steps.
  json q = {{"model", blobs.files}, {"adapter", blobs.adapter}, {"batch", batch},
            {"local_steps", 2}, {"optimizer", {{"lr", 1e-2}}}};
  auto diff = kind->Run(q.dump(), blobs.Context());
  REQUIRE(diff.ok());
  json moved_json = json::parse(*diff);
  double moved = 0;
  for (const auto& v : moved_json["values"]) moved += std::fabs(v.get<double>());
  CHECK(moved > 0);
}

TEST_CASE("LLM kinds reject bad params with the field named") {
  FixtureBlobs blobs;
  auto infer = MakeInferKind();
  auto train = MakeTrainKind();
  auto msg = [](const Status& s) { return s.message(); };
  CHECK_FALSE(infer->ValidateParams("[]").ok());
  CHECK_FALSE(infer->ValidateParams("{").ok());
  CHECK(msg(infer->ValidateParams(json{{"prompts", {"x"}}}.dump())).find("model") != std::string::npos);
  json bad_name = {{"model", {{"../etc", std::string(64, 'a')}}}, {"prompts", {"x"}}};
  CHECK(msg(infer->ValidateParams(bad_name.dump())).find("file name") != std::string::npos);
  json bad_hash = {{"model", {{"config.json", "abc"}}}, {"prompts", {"x"}}};
  CHECK(msg(infer->ValidateParams(bad_hash.dump())).find("hash") != std::string::npos);
  json both = {{"model", blobs.files}, {"prompts", {"x"}}, {"prompt_tokens", {{1}}}};
  CHECK_FALSE(infer->ValidateParams(both.dump()).ok());
  json neg = {{"model", blobs.files}, {"prompt_tokens", {{1, -2}}}};
  CHECK_FALSE(infer->ValidateParams(neg.dump()).ok());
  json big = {{"model", blobs.files}, {"prompt_tokens", {{1}}}, {"max_tokens", 100000}};
  CHECK(msg(infer->ValidateParams(big.dump())).find("max_tokens") != std::string::npos);
  json weights = {{"model", blobs.files}, {"batch", {{{"tokens", {1, 2}}, {"weights", {1}}}}}};
  CHECK(msg(train->ValidateParams(weights.dump())).find("weights") != std::string::npos);
  json target = {{"model", blobs.files}, {"batch", {{{"tokens", {1, 2}}, {"weights", {1, 1}}}}},
                 {"lora", {{"targets", {"lm_head"}}}}};
  CHECK(msg(train->ValidateParams(target.dump())).find("lm_head") != std::string::npos);
  // A runner without blobs cannot run them.
  json ok = {{"model", blobs.files}, {"prompt_tokens", {{1}}}};
  CHECK(infer->Run(ok.dump(), RunContext{}).status().code() == StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace pcfarm
