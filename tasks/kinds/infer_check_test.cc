#include "tasks/kinds/infer_check.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tasks/kinds/llm_kinds.h"
#include "tasks/kinds/llm_kinds_test_util.h"

namespace pcfarm {
namespace {

using nlohmann::json;
using testing::FixtureBlobs;
using testing::RandomModel;

// Runs the infer shard `p` and returns its outputs.
json Infer(const json& p, const RunContext& ctx) {
  auto r = MakeInferKind()->Run(p.dump(), ctx);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return json::parse(*r)["outputs"];
}

// The infer_check shard of `p` claiming `outputs`, run; its result, which
// must pass ValidateOutput.
json Check(const json& p, const json& outputs, const RunContext& ctx) {
  auto kind = MakeInferCheckKind();
  json c = p;
  c["claimed"] = outputs;
  REQUIRE(kind->ValidateParams(c.dump()).ok());
  auto r = kind->Run(c.dump(), ctx);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  INFO(*r);
  CHECK(kind->ValidateOutput(c.dump(), *r).ok());
  CHECK(kind->Agree(*r, *r));
  return json::parse(*r);
}

// Each prompt's claim holds.
void RequireAllOk(const json& v, const json& outputs) {
  INFO(v.dump());
  REQUIRE(v["ok"] == true);
  size_t tokens = 0;
  for (size_t i = 0; i < outputs.size(); ++i) {
    CHECK(v["prompts"][i]["ok"] == true);
    CHECK(v["prompts"][i]["bad_at"] == -1);
    CHECK(v["prompts"][i]["why"] == "");
    tokens += outputs[i]["tokens"].size();
  }
  CHECK(v["checked_tokens"] == tokens);
  CHECK(v["backend"] == "cpu");
}

// Prompt i alone is refuted, at token `at`, with a reason that mentions
// `why`; the other prompts hold.
void RequireRefuted(const json& v, size_t i, int64_t at, const std::string& why) {
  INFO(v.dump());
  CHECK(v["ok"] == false);
  for (size_t k = 0; k < v["prompts"].size(); ++k) {
    const json& e = v["prompts"][k];
    if (k != i) {
      CHECK(e["ok"] == true);
      continue;
    }
    CHECK(e["ok"] == false);
    CHECK(e["bad_at"] == at);
    CHECK(e["why"].get<std::string>().find(why) != std::string::npos);
  }
}

const json kPromptTokens = {{1, 5, 9}, {1, 17, 33, 20, 8, 61, 4, 9, 12, 40, 77, 3}, {1},
                            {1, 90, 2, 44, 6, 6, 6}};

TEST_CASE("infer_check passes genuine infer results") {
  FixtureBlobs fixture;
  RandomModel rm("check_genuine");
  bool saw_stop = false, saw_length = false;
  int tolerated = 0, checked = 0;
  struct Setting {
    double temperature;
    int64_t top_k;
    double top_p;
  };
  const std::vector<Setting> settings = {
      {0, 0, 1}, {0.8, 0, 1}, {1.0, 5, 1}, {0.7, 0, 0.9}, {1.3, 20, 0.8}, {0.3, 0, 1}};
  for (int model = 0; model < 3; ++model) {
    for (const Setting& s : settings) {
      for (uint64_t seed : {1ull, 42ull, 1000ull}) {
        if (s.temperature == 0 && seed != 1) continue;
        json p = {{"max_tokens", 24}, {"temperature", s.temperature}, {"top_k", s.top_k},
                  {"top_p", s.top_p}, {"seed", seed}};
        const FixtureBlobs& blobs = model == 2 ? rm.blobs : fixture;
        p["model"] = blobs.files;
        if (model == 1) p["adapter"] = fixture.adapter;
        if (model == 2) {
          p["prompts"] = {"The cat sat", "Once upon a time, in a land far away,", "A"};
        } else {
          p["prompt_tokens"] = kPromptTokens;
        }
        INFO("model " << model << ", T " << s.temperature << ", top_k " << s.top_k
                      << ", top_p " << s.top_p << ", seed " << seed);
        const json outputs = Infer(p, blobs.Context());
        for (const json& o : outputs) {
          saw_stop |= o["finish"] == "stop";
          saw_length |= o["finish"] == "length";
        }
        const json v = Check(p, outputs, blobs.Context());
        RequireAllOk(v, outputs);
        tolerated += v["tolerated_tokens"].get<int>();
        checked += v["checked_tokens"].get<int>();
        // A prefill against the decode steps, on one CPU: far below 1e-2.
        CHECK(v["max_logprob_diff"].get<double>() < 1e-4);
      }
    }
  }
  CHECK(saw_stop);
  CHECK(saw_length);
  // The same device and the same rule: the checker's own draw is nearly
  // always the claim (a prefill rounds unlike a decode step, so a draw next
  // to a boundary may need the tolerance: 1 in 4009 in infer_check_bench).
  CHECK(tolerated * 100 <= checked);
}

TEST_CASE("infer_check reuses the infer kind's loaded model") {
  RandomModel rm("check_cache");
  json p = {{"model", rm.blobs.files}, {"prompts", {"Hello"}}, {"max_tokens", 4}};
  const json outputs = Infer(p, rm.blobs.Context());
  *rm.blobs.lookups = 0;
  RequireAllOk(Check(p, outputs, rm.blobs.Context()), outputs);
  CHECK(*rm.blobs.lookups == 0);
}

TEST_CASE("infer_check reads the claim from a blob (claimed_blob), as the coordinator sends it") {
  RandomModel rm("check_blob");
  json p = {{"model", rm.blobs.files}, {"prompts", {"Hello", "The cat"}}, {"max_tokens", 6}};
  auto infer = MakeInferKind()->Run(p.dump(), rm.blobs.Context());
  REQUIRE(infer.ok());
  const std::string claim = rm.dir + "/claim.json";
  auto write = [&](const std::string& text) {
    std::ofstream(claim, std::ios::binary | std::ios::trunc) << text;
  };
  FixtureBlobs blobs = rm.blobs;
  const std::string hash = std::string(64, 'c');
  blobs.path_of[hash] = claim;
  json c = p;
  c["claimed_blob"] = hash;
  auto kind = MakeInferCheckKind();
  REQUIRE(kind->ValidateParams(c.dump()).ok());
  write(*infer);
  auto r = kind->Run(c.dump(), blobs.Context());
  REQUIRE(r.ok());
  CHECK(kind->ValidateOutput(c.dump(), *r).ok());
  RequireAllOk(json::parse(*r), json::parse(*infer)["outputs"]);
  // A tampered claim in the blob is refuted like an inline one.
  json tampered = json::parse(*infer);
  tampered["outputs"][1]["logprobs"][0] = tampered["outputs"][1]["logprobs"][0].get<double>() - 1;
  write(tampered.dump());
  r = kind->Run(c.dump(), blobs.Context());
  REQUIRE(r.ok());
  CHECK(json::parse(*r)["ok"] == false);
  // A blob that is no infer result, or of the wrong shape, is an error.
  using Catch::Matchers::Contains;
  write("[1]");
  CHECK_THAT(kind->Run(c.dump(), blobs.Context()).status().message(), Contains("claimed infer"));
  write(R"({"outputs": []})");
  CHECK_THAT(kind->Run(c.dump(), blobs.Context()).status().message(),
             Contains("'outputs' must hold one entry per prompt (2)"));
  // Both or neither of claimed and claimed_blob; a malformed hash.
  json both = c;
  both["claimed"] = json::parse(*infer)["outputs"];
  CHECK_THAT(kind->ValidateParams(both.dump()).message(), Contains("exactly one of 'claimed'"));
  json bad = c;
  bad["claimed_blob"] = "abc";
  CHECK_THAT(kind->ValidateParams(bad.dump()).message(), Contains("64 lowercase hex digits"));
  // An unknown blob: the worker's blob cache says so.
  json unknown = c;
  unknown["claimed_blob"] = std::string(64, 'd');
  CHECK(kind->Run(unknown.dump(), blobs.Context()).status().code() == StatusCode::kNotFound);
}

TEST_CASE("infer_check refutes tampered results, naming the prompt and token") {
  FixtureBlobs blobs;
  const RunContext ctx = blobs.Context();
  for (double temperature : {0.0, 0.9}) {
    INFO("temperature " << temperature);
    json p = {{"model", blobs.files}, {"prompt_tokens", kPromptTokens}, {"max_tokens", 12},
              {"temperature", temperature}, {"seed", 7}};
    const json good = Infer(p, ctx);
    RequireAllOk(Check(p, good, ctx), good);
    // A prompt that runs to max_tokens without a stop token.
    size_t i = 0;
    while (i < good.size() && good[i]["finish"] != "length") ++i;
    REQUIRE(i < good.size());

    SECTION("one token changed") {
      json bad = good;
      const int32_t t = bad[i]["tokens"][4].get<int32_t>();
      bad[i]["tokens"][4] = t == 50 ? 51 : 50;
      RequireRefuted(Check(p, bad, ctx), i, 4, temperature == 0 ? "greedy picks" : "the draw");
    }
    SECTION("claimed stop without a stop token") {
      json bad = good;
      for (const char* f : {"tokens", "logprobs"}) {  // keep 5
        json& a = bad[i][f];
        a.erase(a.begin() + 5, a.end());
      }
      bad[i]["finish"] = "stop";
      RequireRefuted(Check(p, bad, ctx), i, 5, "is not a stop token");
    }
    SECTION("claimed length with fewer tokens") {
      json bad = good;
      for (int k = 0; k < 3; ++k) {
        bad[i]["tokens"].erase(bad[i]["tokens"].size() - 1);
        bad[i]["logprobs"].erase(bad[i]["logprobs"].size() - 1);
      }
      RequireRefuted(Check(p, bad, ctx), i, 9, "not max_tokens 12");
    }
    SECTION("wrong logprobs") {
      json bad = good;
      bad[i]["logprobs"][3] = bad[i]["logprobs"][3].get<double>() - 0.05;
      RequireRefuted(Check(p, bad, ctx), i, 3, "logprob");
      // Within infer's own tolerance of 1e-2, they pass.
      json near = good;
      for (json& o : near)
        for (json& l : o["logprobs"]) l = std::min(0.0, l.get<double>() + 0.004);
      RequireAllOk(Check(p, near, ctx), good);
    }
    SECTION("wrong text") {
      json bad = good;
      bad[2]["text"] = bad[2]["text"].get<std::string>() + "x";
      RequireRefuted(Check(p, bad, ctx), 2, -1, "text");
    }
    SECTION("a token outside the vocabulary") {
      json bad = good;
      bad[0]["tokens"][0] = 96;
      RequireRefuted(Check(p, bad, ctx), 0, 0, "outside the vocabulary of 96");
    }
    SECTION("no tokens") {
      json bad = good;
      bad[3]["tokens"] = json::array();
      bad[3]["logprobs"] = json::array();
      bad[3]["text"] = "";
      RequireRefuted(Check(p, bad, ctx), 3, 0, "no tokens");
    }
    SECTION("random tokens") {
      std::mt19937 rng(5);
      json bad = good;
      for (json& o : bad) {
        o["tokens"] = json::array();
        o["logprobs"] = json::array();
        for (int k = 0; k < 12; ++k) {
          o["tokens"].push_back(3 + int(rng() % 90));
          o["logprobs"].push_back(-4.5);
        }
        o["finish"] = "length";
      }
      const json v = Check(p, bad, ctx);
      CHECK(v["ok"] == false);
      for (const json& e : v["prompts"]) {
        CHECK(e["ok"] == false);
        CHECK(e["bad_at"].get<int>() >= 0);
        CHECK(e["bad_at"].get<int>() < 3);
      }
    }
  }
}

TEST_CASE("infer_check holds the finish to the model's stop tokens") {
  FixtureBlobs blobs;
  const RunContext ctx = blobs.Context();
  const int32_t eos = 2;  // llama_tiny's
  // A genuine output that stops before max_tokens.
  json p = {{"model", blobs.files}, {"prompt_tokens", kPromptTokens}, {"max_tokens", 24},
            {"temperature", 1.0}};
  json good;
  size_t i = 0;
  for (uint64_t seed = 0; seed < 50 && good.is_null(); ++seed) {
    p["seed"] = seed;
    const json outputs = Infer(p, ctx);
    for (i = 0; i < outputs.size(); ++i) {
      if (outputs[i]["finish"] == "stop" && outputs[i]["tokens"].size() >= 2) {
        good = outputs;
        break;
      }
    }
  }
  REQUIRE_FALSE(good.is_null());
  const int64_t n = int64_t(good[i]["tokens"].size());
  REQUIRE(good[i]["tokens"][n - 1] == eos);
  RequireAllOk(Check(p, good, ctx), good);

  SECTION("tokens after the stop token") {
    json bad = good;
    bad[i]["tokens"].push_back(5);
    bad[i]["logprobs"].push_back(-1.0);
    RequireRefuted(Check(p, bad, ctx), i, n, "is a stop token, which ends the output");
  }
  SECTION("finish length after a stop token") {
    json bad = good;
    bad[i]["finish"] = "length";
    RequireRefuted(Check(p, bad, ctx), i, n - 1, "so it would be \"stop\"");
  }
  SECTION("cut before the stop token") {
    json bad = good;
    bad[i]["tokens"].erase(size_t(n - 1));
    bad[i]["logprobs"].erase(size_t(n - 1));
    RequireRefuted(Check(p, bad, ctx), i, n - 1, "is not a stop token");
  }
}

TEST_CASE("infer_check refutes another seed's and another model's output") {
  FixtureBlobs blobs;
  FixtureBlobs other(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/llama3_scaled_tied",
                     {"config.json", "model.safetensors", "tokenizer.json"});
  const RunContext ctx = blobs.Context();
  // The refuted prompts are those whose claimed tokens differ from the
  // genuine ones; each is refuted at or before the first difference... or
  // soon after it, when the other token is drawn with the same u.
  auto count_refuted = [](const json& v, const json& genuine, const json& claimed) {
    int refuted = 0;
    for (size_t i = 0; i < genuine.size(); ++i) {
      const bool same = genuine[i]["tokens"] == claimed[i]["tokens"];
      INFO("prompt " << i << ": " << v["prompts"][i].dump());
      CHECK(v["prompts"][i]["ok"] == same);
      refuted += !same;
    }
    return refuted;
  };
  SECTION("another seed") {
    json p = {{"model", blobs.files}, {"prompt_tokens", kPromptTokens}, {"max_tokens", 16},
              {"temperature", 1.0}, {"seed", 100}};
    const json genuine = Infer(p, ctx);
    json q = p;
    q["seed"] = 200;
    const json shifted = Infer(q, ctx);
    CHECK(count_refuted(Check(p, shifted, ctx), genuine, shifted) >= 3);
  }
  for (double temperature : {0.0, 0.8}) {
    INFO("temperature " << temperature);
    json p = {{"model", blobs.files}, {"prompt_tokens", kPromptTokens}, {"max_tokens", 16},
              {"temperature", temperature}, {"seed", 3}};
    const json genuine = Infer(p, ctx);
    SECTION("another model") {
      json q = p;
      q["model"] = other.files;
      const json theirs = Infer(q, other.Context());
      CHECK(count_refuted(Check(p, theirs, ctx), genuine, theirs) >= 3);
    }
    SECTION("the model quantized to q4_0 (a cheaper run)") {
      json q = p;
      q["quantize"] = "q4_0";
      const json cheap = Infer(q, ctx);
      CHECK(count_refuted(Check(p, cheap, ctx), genuine, cheap) >= 1);
      // And the other way round: the quantized shard is checked on its own
      // quantized model.
      RequireAllOk(Check(q, cheap, ctx), cheap);
    }
    SECTION("the base model's output claimed for the adapter's") {
      json q = p;
      q["adapter"] = blobs.adapter;
      const json base = genuine;
      const json adapted = Infer(q, ctx);
      CHECK(count_refuted(Check(q, base, ctx), adapted, base) >= 1);
    }
  }
}

TEST_CASE("infer_check on Vulkan passes the CPU's results, and the CPU Vulkan's") {
  if (!testing::HaveVulkan()) return;
  FixtureBlobs blobs;
  for (double temperature : {0.0, 1.0}) {
    json p = {{"model", blobs.files}, {"prompt_tokens", kPromptTokens}, {"max_tokens", 10},
              {"temperature", temperature}, {"top_k", 30}, {"seed", 9}};
    const json cpu = Infer(p, blobs.Context("cpu"));
    const json vk = Infer(p, blobs.Context("vulkan"));
    for (const auto& [outputs, checker] : {std::pair{cpu, "vulkan"}, std::pair{vk, "cpu"}}) {
      const json v = Check(p, outputs, blobs.Context(checker));
      INFO(v.dump());
      CHECK(v["ok"] == true);
      CHECK(v["backend"] == checker);
    }
  }
}

TEST_CASE("infer_check refuses bad params with the field named") {
  FixtureBlobs blobs;
  auto kind = MakeInferCheckKind();
  CHECK(kind->name() == "infer_check");
  const json p = {{"model", blobs.files}, {"prompt_tokens", {{1, 2}, {3}}}, {"max_tokens", 4}};
  const json one = {{"tokens", {5, 6}}, {"text", "ab"}, {"logprobs", {-1.0, -2.0}},
                    {"finish", "stop"}};
  json good = p;
  good["claimed"] = {one, one};
  REQUIRE(kind->ValidateParams(good.dump()).ok());
  auto message = [&](const json& c) { return kind->ValidateParams(c.dump()).message(); };
  auto with = [&](auto edit) {
    json c = good;
    edit(c);
    return message(c);
  };
  using Catch::Matchers::Contains;
  CHECK_THAT(with([](json& c) { c.erase("claimed"); }), Contains("exactly one of 'claimed'"));
  CHECK_THAT(with([](json& c) { c["claimed"] = "x"; }), Contains("'claimed' must hold one entry"));
  CHECK_THAT(with([](json& c) { c["claimed"].erase(1); }),
             Contains("'claimed' must hold one entry per prompt (2)"));
  CHECK_THAT(with([](json& c) { c["claimed"][1] = 3; }), Contains("claimed[1] is not an object"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["tokens"][1] = 1.5; }),
             Contains("claimed[0]: 'tokens' holds a value that is not a token id"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["tokens"][1] = -4; }),
             Contains("claimed[0]: 'tokens' holds a value that is not a token id"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["tokens"][1] = "5"; }),
             Contains("claimed[0]: 'tokens' holds a value"));
  CHECK_THAT(with([](json& c) { c["claimed"][1]["tokens"] = {1, 2, 3, 4, 5}; }),
             Contains("claimed[1]: 'tokens' must be an array of at most 4 ids"));
  CHECK_THAT(with([](json& c) { c["claimed"][1].erase("tokens"); }),
             Contains("claimed[1]: 'tokens'"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["logprobs"] = {-1.0}; }),
             Contains("claimed[0]: 'logprobs' must have one number per token"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["logprobs"][0] = 2.0; }),
             Contains("claimed[0]: 'logprobs' must be finite numbers <= 0"));
  CHECK_THAT(with([](json& c) { c["claimed"][0]["finish"] = "eos"; }),
             Contains("claimed[0]: 'finish' must be \"stop\" or \"length\""));
  CHECK_THAT(with([](json& c) { c["claimed"][1].erase("text"); }),
             Contains("claimed[1]: 'text' must be a string"));
  CHECK_THAT(with([](json& c) { c["claimed"][1]["text"] = std::string(1000, 'x'); }),
             Contains("claimed[1]: 'text' must be a string of at most 576 bytes"));
  // The infer params themselves, as the infer kind checks them.
  CHECK_THAT(with([](json& c) { c.erase("model"); }), Contains("missing field 'model'"));
  CHECK_THAT(with([](json& c) { c["prompts"] = {"x"}; }),
             Contains("exactly one of 'prompts' and 'prompt_tokens'"));
  CHECK_THAT(with([](json& c) { c["max_tokens"] = 0; }), Contains("'max_tokens'"));
  CHECK_THAT(with([](json& c) { c["temperature"] = -1; }), Contains("'temperature'"));
  CHECK_THAT(with([](json& c) { c["seed"] = -1; }), Contains("'seed'"));
  CHECK_THAT(with([](json& c) { c["quantize"] = "q2"; }), Contains("'quantize'"));
  // Not an object, not JSON, nested too deep.
  CHECK_THAT(kind->ValidateParams("[]").message(), Contains("must be a JSON object"));
  CHECK_THAT(kind->ValidateParams("{").message(), Contains("not valid JSON"));
  CHECK_THAT(with([](json& c) { c["extra"] = {{{{{1}}}}}; }), Contains("nested deeper than 4"));
  // Run refuses what ValidateParams refuses, and needs blobs.
  json no_claim = good;
  no_claim.erase("claimed");
  CHECK(kind->Run(no_claim.dump(), blobs.Context()).status().code() ==
        StatusCode::kInvalidArgument);
  FixtureBlobs unloaded(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/qwen2_bias",
                        {"config.json", "model.safetensors", "tokenizer.json"});
  good["model"] = unloaded.files;
  CHECK(kind->Run(good.dump(), RunContext{}).status().code() ==
        StatusCode::kFailedPrecondition);
}

TEST_CASE("infer_check results are shape-checked and agree on the verdicts") {
  FixtureBlobs blobs;
  auto kind = MakeInferCheckKind();
  json p = {{"model", blobs.files}, {"prompt_tokens", {{1, 2}, {3}}}, {"max_tokens", 4}};
  const json outputs = Infer(p, blobs.Context());
  json c = p;
  c["claimed"] = outputs;
  auto r = kind->Run(c.dump(), blobs.Context());
  REQUIRE(r.ok());
  const json v = json::parse(*r);
  auto shape = [&](auto edit) {
    json w = v;
    edit(w);
    return kind->ValidateOutput(c.dump(), w.dump()).message();
  };
  using Catch::Matchers::Contains;
  CHECK(kind->ValidateOutput(c.dump(), *r).ok());
  CHECK_THAT(shape([](json& w) { w["prompts"].erase(1); }), Contains("one verdict per prompt (2)"));
  CHECK_THAT(shape([](json& w) { w["ok"] = false; }), Contains("'ok' must be true iff"));
  CHECK_THAT(shape([](json& w) { w["prompts"][0]["bad_at"] = 2; }), Contains("'bad_at'"));
  CHECK_THAT(shape([](json& w) { w["prompts"][0]["why"] = "no"; }), Contains("'why'"));
  CHECK_THAT(shape([](json& w) {
               w["prompts"][1] = {{"ok", false}, {"bad_at", 9}, {"why", "x"}};
               w["ok"] = false;
             }),
             Contains("else -1..4"));
  CHECK_THAT(shape([](json& w) { w["checked_tokens"] = 100; }), Contains("'checked_tokens'"));
  CHECK_THAT(shape([](json& w) { w["tolerated_tokens"] = -1; }), Contains("'tolerated_tokens'"));
  CHECK_THAT(shape([](json& w) { w.erase("backend"); }), Contains("'backend'"));
  CHECK_THAT(shape([](json& w) { w["max_logprob_diff"] = -1; }), Contains("'max_logprob_diff'"));
  CHECK_FALSE(kind->ValidateOutput(c.dump(), std::string(1 << 20, '[')).ok());

  // Agree: the same verdicts, whatever the reasons and counts.
  json refuted = v;
  refuted["ok"] = false;
  refuted["prompts"][1] = {{"ok", false}, {"bad_at", 0}, {"why", "x"}};
  json counted = v;
  counted["checked_tokens"] = 1;
  counted["backend"] = "vulkan";
  CHECK(kind->Agree(*r, counted.dump()));
  CHECK_FALSE(kind->Agree(*r, refuted.dump()));
  CHECK_FALSE(kind->Agree(*r, "nonsense"));

  // A cancelled run stops.
  std::atomic<bool> cancel{true};
  RunContext ctx = blobs.Context();
  ctx.cancel = &cancel;
  CHECK(kind->Run(c.dump(), ctx).status().code() == StatusCode::kCancelled);
}

}  // namespace
}  // namespace pcfarm
