#include "tasks/kinds/llm_kinds.h"

#include "tasks/kinds/train_result.h"

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "base/file.h"
#include "coordinator/cli/local_model.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/llama.h"
#include "tasks/engine/token_data.h"
#include "tasks/kinds/llm_kinds_test_util.h"
#include "tasks/model/gguf.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

using nlohmann::json;
using testing::FixtureBlobs;
using testing::FakeHash;
using testing::RandomModel;

// How `pcfarm local generate --json` writes a string (PrintJson).
std::string AsLocalGenerateWrites(const std::string& raw) {
  return json(raw).dump(-1, ' ', false, json::error_handler_t::replace);
}

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
  json no_text = out;
  no_text["outputs"][0].erase("text");
  CHECK(shape(no_text).message().find("'text'") != std::string::npos);
  json num_text = out;
  num_text["outputs"][0]["text"] = 3;
  CHECK(shape(num_text).message().find("'text'") != std::string::npos);
  json long_text = out;  // 6 tokens: at most 6 * 256 + 64 bytes
  long_text["outputs"][0]["text"] = std::string(6 * 256 + 64, 'x');
  CHECK(shape(long_text).ok());
  long_text["outputs"][0]["text"] = std::string(6 * 256 + 65, 'x');
  CHECK(shape(long_text).message().find("at most 1600 bytes") != std::string::npos);
  // The same tokens with another text is a different answer.
  json other_text = out;
  other_text["outputs"][0]["text"] = out["outputs"][0]["text"].get<std::string>() + "!";
  CHECK_FALSE(kind->Agree(*a, other_text.dump()));
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
  CHECK(kind->ValidateOutput(t.dump(), *text).ok());
}

TEST_CASE("infer returns each output's text as local generate writes it") {
  RandomModel rm("text");
  const Tokenizer tok = rm.LoadTokenizer();
  auto kind = MakeInferKind();
  const std::vector<int32_t> hello = tok.Encode("Hello there, said the", true);
  for (const char* input : {"prompts", "prompt_tokens"}) {
    INFO(input);
    json p = {{"model", rm.blobs.files}, {"max_tokens", 12}};
    if (std::string(input) == "prompts") {
      p["prompts"] = {"Hello there, said the", "Once"};
    } else {
      p["prompt_tokens"] = {hello, tok.Encode("Once", true)};
    }
    auto r = kind->Run(p.dump(), rm.blobs.Context());
    REQUIRE(r.ok());
    REQUIRE(kind->ValidateOutput(p.dump(), *r).ok());
    json out = json::parse(*r);
    for (const json& o : out["outputs"]) {
      const std::string raw = tok.Decode(o["tokens"].get<std::vector<int32_t>>(), true);
      CHECK(o["text"].dump(-1, ' ', false, json::error_handler_t::replace) ==
            AsLocalGenerateWrites(raw));
    }
  }

  // A byte-level token can end mid-character: the decoded bytes are then
  // not UTF-8. Near-uniform sampling finds such an output; Run must not
  // fail on it, and its text must be written as local generate writes it.
  json hot = {{"model", rm.blobs.files}, {"prompt_tokens", {hello}}, {"max_tokens", 16},
              {"temperature", 100}};
  bool found = false;
  for (int seed = 0; seed < 50 && !found; ++seed) {
    hot["seed"] = seed;
    auto r = kind->Run(hot.dump(), rm.blobs.Context());
    REQUIRE(r.ok());
    json o = json::parse(*r)["outputs"][0];
    const std::string raw = tok.Decode(o["tokens"].get<std::vector<int32_t>>(), true);
    if (json(raw).dump(-1, ' ', false, json::error_handler_t::ignore) ==
        AsLocalGenerateWrites(raw)) {
      continue;  // valid UTF-8
    }
    found = true;
    INFO("seed " << seed);
    CHECK(o["text"].get<std::string>().find("\xEF\xBF\xBD") != std::string::npos);  // U+FFFD
    // What `pcfarm fetch` writes (it re-dumps the parsed result) is what
    // local generate writes, byte for byte.
    CHECK(o["text"].dump(-1, ' ', false, json::error_handler_t::replace) ==
          AsLocalGenerateWrites(raw));
    CHECK(kind->ValidateOutput(hot.dump(), *r).ok());
  }
  CHECK(found);
}

TEST_CASE("infer keeps a loaded model for the next shard with the same files") {
  RandomModel rm("cache");
  auto kind = MakeInferKind();
  json p = {{"model", rm.blobs.files}, {"prompts", {"The cat", "A dog"}}, {"max_tokens", 8},
            {"temperature", 0.8}, {"seed", 3}};
  auto first = kind->Run(p.dump(), rm.blobs.Context());  // loads (or finds) it
  REQUIRE(first.ok());
  *rm.blobs.lookups = 0;
  auto again = kind->Run(p.dump(), rm.blobs.Context());
  REQUIRE(again.ok());
  CHECK(*rm.blobs.lookups == 0);  // no blob was needed: the model was kept
  // A kept model answers exactly as a fresh one, also after other prompts.
  json other = p;
  other["prompts"] = {"Something else entirely, and longer than before"};
  REQUIRE(kind->Run(other.dump(), rm.blobs.Context()).ok());
  auto third = kind->Run(p.dump(), rm.blobs.Context());
  REQUIRE(third.ok());
  CHECK(json::parse(*again) == json::parse(*first));
  CHECK(json::parse(*third) == json::parse(*first));

  // The model does not read its files after loading: with them gone (the
  // worker's blob cache may evict them) the kept model still runs.
  {
    RandomModel gone("cache_gone");
    json q = p;
    q["model"] = gone.blobs.files;
    auto before = kind->Run(q.dump(), gone.blobs.Context());
    REQUIRE(before.ok());
    std::filesystem::remove_all(gone.dir);
    *gone.blobs.lookups = 0;
    auto after = kind->Run(q.dump(), gone.blobs.Context());
    REQUIRE(after.ok());
    CHECK(*gone.blobs.lookups == 0);
    CHECK(json::parse(*after) == json::parse(*before));
  }

  // Other files (an adapter, another model) are another model; a train
  // shard frees the idle ones, so the next infer shard loads again.
  FixtureBlobs fixture;
  json with_adapter = {{"model", fixture.files}, {"adapter", fixture.adapter},
                       {"prompt_tokens", {{1, 2, 3}}}, {"max_tokens", 4}};
  json without = with_adapter;
  without.erase("adapter");
  REQUIRE(kind->Run(without.dump(), fixture.Context()).ok());
  *fixture.lookups = 0;
  auto adapted = kind->Run(with_adapter.dump(), fixture.Context());
  REQUIRE(adapted.ok());
  CHECK(*fixture.lookups == 5);  // 3 model files + 2 adapter files
  *fixture.lookups = 0;
  REQUIRE(kind->Run(with_adapter.dump(), fixture.Context()).ok());
  CHECK(*fixture.lookups == 0);
  json batch = json::array({{{"tokens", {1, 2, 3}}, {"weights", {0, 1, 1}}}});
  REQUIRE(MakeTrainKind()->Run(json{{"model", fixture.files}, {"batch", batch}}.dump(),
                               fixture.Context())
              .ok());
  *fixture.lookups = 0;
  REQUIRE(kind->Run(with_adapter.dump(), fixture.Context()).ok());
  CHECK(*fixture.lookups == 5);

  // Slots running the same model at once each get their own instance and
  // the same answers.
  std::vector<std::string> results(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = t; i < 8; i += 2) {
        auto r = kind->Run(p.dump(), rm.blobs.Context());
        results[size_t(i)] = r.ok() ? *r : r.status().ToString();
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) CHECK(r == *first);
}

TEST_CASE("infer runs a GGUF model with the GGUF's tokenizer") {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("pcfarm_llm_kinds_gguf_" + std::to_string(::getpid())))
                              .string();
  REQUIRE(MakeDirs(dir).ok());
  // The tiny random model written as one GGUF file (tasks/model/gguf_writer.h).
  REQUIRE(WriteRandomModel(dir + "/hf", "tiny", 5, dir + "/tiny.gguf").ok());
  FixtureBlobs blobs(dir, {"tiny.gguf"});
  auto kind = MakeInferKind();
  json p = {{"model", blobs.files}, {"prompts", {"hello!", "hell"}}, {"max_tokens", 6},
            {"temperature", 0.9}, {"seed", 11}};
  REQUIRE(kind->ValidateParams(p.dump()).ok());
  auto r = kind->Run(p.dump(), blobs.Context());
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  CHECK(kind->ValidateOutput(p.dump(), *r).ok());

  // The same as the engine on the file: prompts encoded and outputs
  // decoded by the GGUF's vocab.
  auto loaded = LoadModel(dir + "/tiny.gguf");
  REQUIRE(loaded.ok());
  auto backend = CreateBackend("cpu", BackendOptions{});
  REQUIRE(backend.ok());
  auto model = LlamaModel::Create(loaded->config, loaded->weights, backend->get());
  REQUIRE(model.ok());
  GenerationConfig g;
  g.max_new_tokens = 6;
  g.sampling.temperature = 0.9;
  auto gens = (*model)->Generate({{loaded->tokenizer.Encode("hello!"), 11},
                                  {loaded->tokenizer.Encode("hell"), 12}},
                                 g);
  REQUIRE(gens.ok());
  json out = json::parse(*r);
  REQUIRE(out["outputs"].size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(out["outputs"][i]["tokens"] == json((*gens)[i].tokens));
    // Bytes that are not UTF-8 (a byte-level token can end mid-character)
    // travel as U+FFFD, as pcfarm local generate prints them.
    json text = json::parse(json(loaded->tokenizer.Decode((*gens)[i].tokens, true))
                                .dump(-1, ' ', false, json::error_handler_t::replace));
    CHECK(out["outputs"][i]["text"] == text);
  }

  // A .gguf file is the whole model: nothing may sit beside it.
  json extra = p;
  extra["model"]["tokenizer.json"] = std::string(64, 'a');
  CHECK(kind->ValidateParams(extra.dump()).message().find("only file") != std::string::npos);
  std::filesystem::remove_all(dir);
}

// The farm splits a job's prompts into shards and gives each shard seed
// S + (its first prompt's index); prompt i must then come out as it does in
// one run of all prompts with seed S. The tokens are the same because each
// sequence samples from its own stream; the logprobs are not bit for bit
// (about 1e-6 here: on the CPU one live sequence decodes through the GEMV
// kernel, several through sgemm), so a near-tie could still pick another
// token in another batch, rarely.
TEST_CASE("infer gives prompt i of a run the answer of a run of prompt i alone with seed + i") {
  RandomModel rm("seeds");
  auto kind = MakeInferKind();
  std::vector<std::string> prompts;
  for (int i = 0; i < 10; ++i) {
    std::string s = "Prompt " + std::to_string(i) + ":";
    for (int k = 0; k < i % 4; ++k) s += " the cat sat on the mat";
    prompts.push_back(s);
  }
  const uint64_t seed = 1000;
  std::vector<std::string> backends;
  for (const BackendRegistration& reg : RegisteredBackends()) {
    BackendOptions bo;
    if (CreateBackend(reg.name, bo).ok()) backends.push_back(reg.name);
  }
  for (const std::string& backend : backends)
  for (double temperature : {0.0, 0.8}) {
    INFO(backend << ", temperature " << temperature);
    json p = {{"model", rm.blobs.files}, {"prompts", prompts}, {"max_tokens", 16},
              {"temperature", temperature}, {"top_k", 40}, {"seed", seed}};
    auto all = kind->Run(p.dump(), rm.blobs.Context(backend));
    REQUIRE(all.ok());
    json outs = json::parse(*all)["outputs"];
    for (size_t i = 0; i < prompts.size(); ++i) {
      INFO("prompt " << i);
      json one = p;
      one["prompts"] = {prompts[i]};
      one["seed"] = seed + i;
      auto r = kind->Run(one.dump(), rm.blobs.Context(backend));
      REQUIRE(r.ok());
      json o = json::parse(*r)["outputs"][0];
      CHECK(o["tokens"] == outs[i]["tokens"]);
      CHECK(o["text"] == outs[i]["text"]);
      for (size_t k = 0; k < o["logprobs"].size() && k < outs[i]["logprobs"].size(); ++k) {
        CHECK(o["logprobs"][k].get<double>() ==
              Approx(outs[i]["logprobs"][k].get<double>()).margin(1e-4));
      }
    }
  }
}

TEST_CASE("infer on Vulkan agrees with the CPU") {
  if (!testing::HaveVulkan()) return;
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
  auto out = DecodeTrainResult(*a);
  REQUIRE(out.ok());
  // weights[i] weights the prediction of token i; weights[0] is unused.
  CHECK(out->weight == Approx(4));
  CHECK(out->tokens == 4);
  CHECK(out->codec == GradientCodec::kNone);
  CHECK(out->layout == "lora");
  CHECK(out->backend == "cpu");
  // B starts at zero, so dLoss/dA is zero and only the B half moves; the
  // gradient is not all zero.
  double norm = 0;
  for (float v : out->values) norm += double(v) * v;
  CHECK(norm > 0);
  // A perturbed gradient disagrees.
  TrainResult bad = *out;
  for (float& v : bad.values) v = v * 1.01f + 1e-3f;
  CHECK_FALSE(kind->Agree(*a, *EncodeTrainResult(bad)));
  // Honest values and loss with another weight or token count disagree
  // (the coordinator divides the sum by Σ weight).
  TrainResult heavy = *out;
  heavy.weight *= 100;
  CHECK_FALSE(kind->Agree(*a, *EncodeTrainResult(heavy)));
  TrainResult more = *out;
  more.tokens += 1;
  CHECK_FALSE(kind->Agree(*a, *EncodeTrainResult(more)));
  CHECK(kind->Agree(*a, *EncodeTrainResult(*out)));

  CHECK(kind->ValidateOutput(p.dump(), *a).ok());
  // What train_result_test checks in detail: a result that does not decode.
  const size_t nl = a->find('\n');
  CHECK(kind->ValidateOutput(p.dump(), a->substr(0, a->size() - 4)).message().find("take") !=
        std::string::npos);
  CHECK(kind->ValidateOutput(p.dump(), "{\"loss\": 1}").message().find("header line") !=
        std::string::npos);
  CHECK_FALSE(kind->ValidateOutput(p.dump(), R"({"weight":4,"tokens":4,"count":1,"codec":"none"})" +
                                                 a->substr(nl))
                  .ok());
  CHECK_FALSE(kind->Agree(*a, "junk"));

  // From the fixture adapter (B non-zero), with two local AdamW steps.
  json q = {{"model", blobs.files}, {"adapter", blobs.adapter}, {"batch", batch},
            {"local_steps", 2}, {"optimizer", {{"lr", 1e-2}}}};
  auto diff = kind->Run(q.dump(), blobs.Context());
  REQUIRE(diff.ok());
  auto moved_result = DecodeTrainResult(*diff);
  REQUIRE(moved_result.ok());
  double moved = 0;
  for (float v : moved_result->values) moved += std::fabs(v);
  CHECK(moved > 0);
  // The cached base model took the adapter: the same shard again, and the
  // zero-B shard after it, answer as the first time (nothing of one shard's
  // LoRA state leaks into the next).
  auto again = kind->Run(q.dump(), blobs.Context());
  REQUIRE(again.ok());
  CHECK(*again == *diff);
  auto zero_b = kind->Run(p.dump(), blobs.Context());
  REQUIRE(zero_b.ok());
  CHECK(*zero_b == *a);
}

TEST_CASE("train with method full trains every weight from the shard's version") {
  FixtureBlobs blobs;
  auto kind = MakeTrainKind();
  // Version 0 of a full fine-tuning job: the base's weights in f32, in the
  // order a model in full mode trains them (as `pcfarm submit finetune
  // --method full` writes it).
  auto loaded = LoadModel(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/llama_tiny");
  REQUIRE(loaded.ok());
  BackendOptions bo;
  bo.cpu_threads = 1;
  auto backend = CreateBackend("cpu", bo);
  REQUIRE(backend.ok());
  auto model = LlamaModel::Create(loaded->config, loaded->weights, backend->get());
  REQUIRE(model.ok());
  REQUIRE((*model)->EnableFullTraining().ok());
  const std::string version =
      (std::filesystem::temp_directory_path() / ("pcfarm_full_" + std::to_string(getpid())))
          .string();
  REQUIRE(WriteFileAtomic(version, *EncodeAdapterSafetensors((*model)->TrainableParameters(),
                                                             *(*model)->GetParameters()))
              .ok());
  const std::string hash = FakeHash(version);
  blobs.path_of[hash] = version;
  json batch = json::array({{{"tokens", {1, 2, 3, 4, 5, 6}}, {"weights", {0, 0, 1, 1, 1, 0}}}});
  json p = {{"model", blobs.files}, {"batch", batch}, {"method", "full"},
            {"weights", {{"model.safetensors", hash}}}};
  REQUIRE(kind->ValidateParams(p.dump()).ok());
  auto a = kind->Run(p.dump(), blobs.Context());
  REQUIRE(a.ok());
  auto out = DecodeTrainResult(*a);
  REQUIRE(out.ok());
  REQUIRE(int64_t(out->values.size()) == (*model)->TrainableCount());
  // The summed gradient of every weight: the model's own, times Σ w.
  auto sums = (*model)->AccumulateGradients({{{1, 2, 3, 4, 5, 6}, {0, 0, 1, 1, 1, 0}}});
  REQUIRE(sums.ok());
  auto grad = (*model)->ExportGradients();
  REQUIRE(grad.ok());
  double dd = 0, nn = 0;
  for (size_t i = 0; i < grad->size(); ++i) {
    const double want = double((*grad)[i]) * sums->weight;
    dd += (out->values[i] - want) * (out->values[i] - want);
    nn += want * want;
  }
  CHECK(nn > 0);
  CHECK(std::sqrt(dd) <= 1e-5 * std::sqrt(nn));
  // A LoRA shard and a full shard one after the other on one worker each
  // answer as alone (their bases are cached apart).
  json lora = {{"model", blobs.files}, {"batch", batch}, {"lora", {{"rank", 4}, {"alpha", 8}}}};
  auto l1 = kind->Run(lora.dump(), blobs.Context());
  REQUIRE(l1.ok());
  json steps = p;
  steps["local_steps"] = 2;
  steps["optimizer"] = {{"lr", 1e-2}};
  auto d1 = kind->Run(steps.dump(), blobs.Context());
  REQUIRE(d1.ok());
  auto again = kind->Run(p.dump(), blobs.Context());
  REQUIRE(again.ok());
  CHECK(*again == *a);  // the local steps' weights did not stay behind
  auto l2 = kind->Run(lora.dump(), blobs.Context());
  REQUIRE(l2.ok());
  CHECK(*l2 == *l1);
  auto d2 = kind->Run(steps.dump(), blobs.Context());
  REQUIRE(d2.ok());
  CHECK(*d2 == *d1);

  // Bad params, each named.
  auto says = [&](json q, const std::string& part) {
    Status st = kind->ValidateParams(q.dump());
    INFO(st.message());
    return !st.ok() && st.message().find(part) != std::string::npos;
  };
  json bad = p;
  bad["method"] = "half";
  CHECK(says(bad, "'method'"));
  bad = p;
  bad.erase("weights");
  CHECK(says(bad, "missing field 'weights'"));
  bad = p;
  bad["weights"] = {{"other.safetensors", hash}};
  CHECK(says(bad, "'weights' must name exactly model.safetensors"));
  bad = p;
  bad["adapter"] = blobs.adapter;
  CHECK(says(bad, "takes no 'adapter'"));
  bad = p;
  bad["quantize"] = "q8_0";
  CHECK(says(bad, "takes no 'quantize'"));
  bad = lora;
  bad["weights"] = p["weights"];
  CHECK(says(bad, "'weights' is for method"));
  std::filesystem::remove(version);
}

TEST_CASE("train with \"quantize\" trains LoRA over a quantized base (QLoRA)") {
  RandomModel model("qlora");  // tiny: hidden 64, ffn 128, whole 32-blocks
  auto kind = MakeTrainKind();
  json batch = json::array({{{"tokens", {1, 20, 30, 40, 50, 60}}, {"weights", {0, 0, 1, 1, 1, 1}}}});
  json p = {{"model", model.blobs.files}, {"batch", batch}, {"lora", {{"rank", 4}, {"alpha", 8}}},
            {"local_steps", 3}, {"optimizer", {{"lr", 1e-2}}}};
  auto f32 = kind->Run(p.dump(), model.blobs.Context());
  REQUIRE(f32.ok());
  json q = p;
  q["quantize"] = "q8_0";
  REQUIRE(kind->ValidateParams(q.dump()).ok());
  auto q8 = kind->Run(q.dump(), model.blobs.Context());
  REQUIRE(q8.ok());
  auto a = DecodeTrainResult(*f32), b = DecodeTrainResult(*q8);
  REQUIRE((a.ok() && b.ok()));
  REQUIRE(a->values.size() == b->values.size());
  // Another base (not the cached F32 one), close to it: the loss and the
  // update differ a little, not a lot.
  CHECK(a->loss != b->loss);
  CHECK(std::abs(a->loss - b->loss) < 0.02 * a->loss);
  double num = 0, den = 0;
  for (size_t i = 0; i < a->values.size(); ++i) {
    num += double(a->values[i] - b->values[i]) * (a->values[i] - b->values[i]);
    den += double(a->values[i]) * a->values[i];
  }
  CHECK(std::sqrt(num / den) < 0.2);
  // And back: the F32 shard again gives the F32 answer.
  auto again = kind->Run(p.dump(), model.blobs.Context());
  REQUIRE(again.ok());
  CHECK(*again == *f32);

  q["quantize"] = "q5_1";
  Status s = kind->ValidateParams(q.dump());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("'quantize'") != std::string::npos);
  q["quantize"] = 8;
  CHECK(kind->ValidateParams(q.dump()).message().find("'quantize' must be a string") !=
        std::string::npos);
}

// A token data blob in a temporary file, removed at the end.
struct TokenDataBlob {
  std::string path, hash;
  explicit TokenDataBlob(const std::vector<TokenSequence>& seqs, const std::string& name) {
    path = (std::filesystem::temp_directory_path() /
            ("pcfarm_llm_kinds_" + name + "_" + std::to_string(::getpid()) + ".ptd"))
               .string();
    REQUIRE(WriteFileAtomic(path, EncodeTokenData(seqs)).ok());
    hash = FakeHash(path);
  }
  ~TokenDataBlob() { std::filesystem::remove(path); }
};

TEST_CASE("train takes its sequences from a token data blob by index") {
  FixtureBlobs blobs;
  const std::vector<TokenSequence> seqs = {{{1, 2, 3, 4, 5, 6}, {0, 0, 1, 1, 1, 0}},
                                           {{9, 8, 7}, {1, 1, 0}},
                                           {{4, 4, 4, 4}, {}}};  // stored as [0, 1, 1, 1]
  TokenDataBlob data(seqs, "data");
  blobs.path_of[data.hash] = data.path;
  auto kind = MakeTrainKind();
  json by_index = {{"model", blobs.files}, {"data", data.hash}, {"examples", {1, 0, 2, 1}},
                   {"lora", {{"rank", 4}, {"alpha", 8}}}};
  json inline_batch = by_index;
  inline_batch.erase("data");
  inline_batch.erase("examples");
  inline_batch["batch"] = json::array({{{"tokens", {9, 8, 7}}, {"weights", {1, 1, 0}}},
                                       {{"tokens", {1, 2, 3, 4, 5, 6}}, {"weights", {0, 0, 1, 1, 1, 0}}},
                                       {{"tokens", {4, 4, 4, 4}}, {"weights", {0, 1, 1, 1}}},
                                       {{"tokens", {9, 8, 7}}, {"weights", {1, 1, 0}}}});
  for (int steps : {0, 2}) {
    INFO("local_steps " << steps);
    by_index["local_steps"] = inline_batch["local_steps"] = steps;
    REQUIRE(kind->ValidateParams(by_index.dump()).ok());
    auto a = kind->Run(by_index.dump(), blobs.Context());
    REQUIRE(a.ok());
    auto b = kind->Run(inline_batch.dump(), blobs.Context());
    REQUIRE(b.ok());
    // The same sequences make the same float operations: the same result.
    CHECK(*a == *b);
    CHECK(DecodeTrainResult(*a)->weight == Approx(3 + 1 + 3 + 1));
    CHECK(kind->ValidateOutput(by_index.dump(), *a).ok());
  }

  // The decoded blob is kept, and the base model too: a second shard of
  // them resolves no blob.
  int before = *blobs.lookups;
  REQUIRE(kind->Run(by_index.dump(), blobs.Context()).ok());
  CHECK(*blobs.lookups - before == 0);
  // A fresh kind reads the data once (the model cache is the process's).
  auto fresh = MakeTrainKind();
  before = *blobs.lookups;
  REQUIRE(fresh->Run(by_index.dump(), blobs.Context()).ok());
  CHECK(*blobs.lookups - before == 1);

  // An index past the blob's sequences is named at Run.
  json past = by_index;
  past["examples"] = {0, 2, 3, 1};
  auto r = kind->Run(past.dump(), blobs.Context());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("examples[2] is 3, but the token data holds 3 sequences") !=
        std::string::npos);
  // A blob that is not token data.
  TokenDataBlob junk({}, "junk");
  REQUIRE(WriteFileAtomic(junk.path, "not token data").ok());
  blobs.path_of[junk.hash] = junk.path;
  json bad_blob = by_index;
  bad_blob["data"] = junk.hash;
  r = kind->Run(bad_blob.dump(), blobs.Context());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find("token data: bad magic") != std::string::npos);
  // A runner without blobs (a new kind: its data is not decoded yet).
  CHECK(MakeTrainKind()->Run(by_index.dump(), RunContext{}).status().code() ==
        StatusCode::kFailedPrecondition);

  // Bad params, named.
  auto error = [&](json p) {
    Status s = kind->ValidateParams(p.dump());
    CHECK(s.code() == StatusCode::kInvalidArgument);
    return s.message();
  };
  auto has = [](const std::string& s, const char* part) {
    INFO(s);
    return s.find(part) != std::string::npos;
  };
  json both = by_index;
  both["batch"] = inline_batch["batch"];
  CHECK(has(error(both), "exactly one of 'batch' and 'data' with 'examples'"));
  json neither = by_index;
  neither.erase("data");
  neither.erase("examples");
  CHECK(has(error(neither), "exactly one of"));
  json no_examples = by_index;
  no_examples.erase("examples");
  CHECK(has(error(no_examples), "'examples' must be an array of 1 to 100000"));
  json no_data = by_index;
  no_data.erase("data");
  CHECK(has(error(no_data), "'data' must be the 64-digit hex hash"));
  json short_hash = by_index;
  short_hash["data"] = "abc";
  CHECK(has(error(short_hash), "'data' must be"));
  json empty = by_index;
  empty["examples"] = json::array();
  CHECK(has(error(empty), "'examples' must be"));
  json too_many = by_index;
  too_many["examples"] = std::vector<int>(100001, 0);
  CHECK(has(error(too_many), "1 to 100000"));
  too_many["examples"] = std::vector<int>(100000, 0);
  CHECK(kind->ValidateParams(too_many.dump()).ok());
  for (json x : {json(-1), json(1.5), json("2"), json(nullptr), json(int64_t(1) << 40)}) {
    json bad = by_index;
    bad["examples"] = {0, 1, x};
    CHECK(has(error(bad), ("examples[2] is " + x.dump()).c_str()));
  }
}

TEST_CASE("train takes one micro-batch per local step from steps_examples") {
  FixtureBlobs blobs;
  const std::vector<TokenSequence> seqs = {{{1, 2, 3, 4, 5, 6}, {0, 0, 1, 1, 1, 0}},
                                           {{9, 8, 7}, {1, 1, 0}},
                                           {{4, 4, 4, 4}, {0, 1, 1, 1}}};
  TokenDataBlob data(seqs, "steps");
  blobs.path_of[data.hash] = data.path;
  auto kind = MakeTrainKind();
  const json opt = {{"lr", 1e-2}};
  json examples = {{"model", blobs.files}, {"adapter", blobs.adapter}, {"data", data.hash},
                   {"examples", {1, 0}}, {"optimizer", opt}};
  json per_step = examples;
  per_step.erase("examples");

  // One list: one AdamW step on it, the same as "examples" with local_steps 1.
  examples["local_steps"] = 1;
  per_step["steps_examples"] = {{1, 0}};
  REQUIRE(kind->ValidateParams(per_step.dump()).ok());
  auto one = kind->Run(per_step.dump(), blobs.Context());
  REQUIRE(one.ok());
  auto one_ref = kind->Run(examples.dump(), blobs.Context());
  REQUIRE(one_ref.ok());
  CHECK(*one == *one_ref);
  auto first = DecodeTrainResult(*one_ref);
  REQUIRE(first.ok());

  // The same list three times: the values of local_steps 3 on it; loss,
  // weight and tokens over the three steps.
  examples["local_steps"] = 3;
  per_step["steps_examples"] = {{1, 0}, {1, 0}, {1, 0}};
  auto same = kind->Run(per_step.dump(), blobs.Context());
  REQUIRE(same.ok());
  auto same_ref = kind->Run(examples.dump(), blobs.Context());
  REQUIRE(same_ref.ok());
  auto x = DecodeTrainResult(*same), y = DecodeTrainResult(*same_ref);
  REQUIRE(x.ok());
  REQUIRE(y.ok());
  CHECK(x->values == y->values);
  CHECK(y->loss == first->loss);  // "examples": the loss before the first step
  CHECK(x->weight == Approx(3 * first->weight));
  CHECK(x->tokens == 3 * first->tokens);
  // Steps 2 and 3 see the batch after an update on it: a lower mean loss.
  CHECK(x->loss < first->loss);
  CHECK(x->loss > 0);
  CHECK(kind->ValidateOutput(per_step.dump(), *same).ok());
  // local_steps, when given, is the number of lists.
  per_step["local_steps"] = 3;
  REQUIRE(kind->ValidateParams(per_step.dump()).ok());
  CHECK(*kind->Run(per_step.dump(), blobs.Context()) == *same);

  // Another sequence per step: another answer, and a pure function of its
  // params (the same shard again, after others, answers alike).
  per_step.erase("local_steps");
  per_step["steps_examples"] = {{1, 0}, {2}, {0, 2, 2}};
  auto mixed = kind->Run(per_step.dump(), blobs.Context());
  REQUIRE(mixed.ok());
  auto m = DecodeTrainResult(*mixed);
  REQUIRE(m.ok());
  CHECK(m->values != x->values);
  CHECK(m->weight == Approx(first->weight + 3 + (3 + 3 + 3)));
  CHECK(m->tokens == first->tokens + 3 + 9);
  auto again = kind->Run(per_step.dump(), blobs.Context());
  REQUIRE(again.ok());
  CHECK(*again == *mixed);
  CHECK(kind->Agree(*mixed, *again));
  CHECK_FALSE(kind->Agree(*mixed, *same));

  // An index past the blob is named at Run, with its step.
  json past = per_step;
  past["steps_examples"] = {{0}, {1, 3}};
  auto r = kind->Run(past.dump(), blobs.Context());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().find(
            "steps_examples[1][1] is 3, but the token data holds 3 sequences") !=
        std::string::npos);

  // Bad params, named.
  auto error = [&](json p) {
    Status s = kind->ValidateParams(p.dump());
    CHECK(s.code() == StatusCode::kInvalidArgument);
    INFO(s.message());
    return s.message();
  };
  auto has = [](const std::string& s, const char* part) {
    INFO(s);
    return s.find(part) != std::string::npos;
  };
  json bad = per_step;
  bad["examples"] = {0};
  CHECK(has(error(bad), "'examples' or 'steps_examples', not both"));
  bad = per_step;
  bad["batch"] = json::array({{{"tokens", {9, 8, 7}}, {"weights", {1, 1, 0}}}});
  CHECK(has(error(bad), "exactly one of"));
  bad = per_step;
  bad.erase("data");
  CHECK(has(error(bad), "'data' must be"));
  const json too_many_steps = std::vector<std::vector<int>>(10001, {0});
  for (json v : {json::array(), json(3), json("x"), too_many_steps}) {
    bad = per_step;
    bad["steps_examples"] = v;
    CHECK(has(error(bad), "'steps_examples' must be an array of 1 to 10000 lists"));
  }
  bad["steps_examples"] = {{0}, json::array()};
  CHECK(has(error(bad), "steps_examples[1] must be a non-empty array"));
  bad["steps_examples"] = {{0}, 1};
  CHECK(has(error(bad), "steps_examples[1] must be"));
  bad["steps_examples"] = {{0}, {1, -1}};
  CHECK(has(error(bad), "steps_examples[1][1] is -1, not a sequence index"));
  bad["steps_examples"] = {{0}, {1.5}};
  CHECK(has(error(bad), "steps_examples[1][0] is 1.5"));
  bad["steps_examples"] = {std::vector<int>(60000, 0), std::vector<int>(40001, 0)};
  CHECK(has(error(bad), "more than 100000 sequence indices"));
  bad["steps_examples"] = {std::vector<int>(60000, 0), std::vector<int>(40000, 0)};
  CHECK(kind->ValidateParams(bad.dump()).ok());
  bad = per_step;
  bad["local_steps"] = 2;
  CHECK(has(error(bad), "'local_steps' is 2 but 'steps_examples' has 3 lists"));
  bad["local_steps"] = 0;
  CHECK(has(error(bad), "'local_steps' is 0"));
}

TEST_CASE("train compresses its values, with error feedback per stream") {
  FixtureBlobs blobs;
  auto kind = MakeTrainKind();
  json batch = json::array({{{"tokens", {1, 2, 3, 4, 5, 6}}, {"weights", {0, 0, 1, 1, 1, 0}}},
                            {{"tokens", {9, 8, 7}}, {"weights", {1, 1, 0}}}});
  json p = {{"model", blobs.files}, {"adapter", blobs.adapter}, {"batch", batch}};
  auto exact = kind->Run(p.dump(), blobs.Context());
  REQUIRE(exact.ok());
  auto x = DecodeTrainResult(*exact);
  REQUIRE(x.ok());
  for (const char* codec : {"fp16", "int8"}) {
    INFO(codec);
    json c = p;
    c["compress"] = codec;
    REQUIRE(kind->ValidateParams(c.dump()).ok());
    auto once = kind->Run(c.dump(), blobs.Context());
    REQUIRE(once.ok());
    auto y = DecodeTrainResult(*once);
    REQUIRE(y.ok());
    CHECK(GradientCodecName(y->codec) == std::string(codec));
    CHECK(y->values.size() == x->values.size());
    CHECK(kind->ValidateOutput(c.dump(), *once).ok());
    // Close to the f32 values, but another codec's result is another answer.
    CHECK(once->size() < exact->size());
    CHECK_FALSE(kind->Agree(*exact, *once));
    CHECK(kind->Agree(*once, *once));
    // With a feedback stream, what one message loses the next carries: the
    // sum of T decoded messages is T times the exact values less the
    // residual, which stays within one message's rounding.
    c["feedback"] = std::string("job-") + codec;
    const int kMessages = 6;
    std::vector<double> sum(x->values.size(), 0.0);
    std::string first;
    for (int t = 0; t < kMessages; ++t) {
      auto r = kind->Run(c.dump(), blobs.Context());
      REQUIRE(r.ok());
      if (t == 0) first = *r;
      // Two workers' streams differ by their residuals: still agreeing.
      CHECK(kind->Agree(first, *r));
      auto d = DecodeTrainResult(*r);
      REQUIRE(d.ok());
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += d->values[i];
    }
    double err_fb = 0, err_plain = 0, norm = 0;
    for (size_t i = 0; i < sum.size(); ++i) {
      const double want = double(kMessages) * x->values[i];
      err_fb += (sum[i] - want) * (sum[i] - want);
      err_plain += double(kMessages) * (y->values[i] - x->values[i]) *
                   double(kMessages) * (y->values[i] - x->values[i]);
      norm += want * want;
    }
    // Without feedback the rounding adds up T times; with it, it does not.
    CHECK(std::sqrt(err_fb) <= std::sqrt(err_plain) / 2 + 1e-12);
    CHECK(std::sqrt(err_fb / norm) < 0.02);
  }
  json bad = p;
  bad["compress"] = "zip";
  CHECK(kind->ValidateParams(bad.dump()).message().find("'compress'") != std::string::npos);
  bad = p;
  bad["feedback"] = "";
  CHECK(kind->ValidateParams(bad.dump()).message().find("'feedback'") != std::string::npos);
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
