// Quantized GGUF models end to end: a random tiny llama written as Q8_0,
// Q4_0, Q4_K and Q6_K GGUF (GgufWriteOptions), loaded with its matrices held quantized
// (LlamaOptions::keep_half_weights, the CPU's WeightRowDots and tiles) and
// again dequantized to F32 (keep_half_weights = false, the reference path).
// Both compute the same function of the same dequantized weights; only the
// order of f32 sums differs, so greedy tokens must agree for 40 steps, for a
// batch of prompts decoded together and for a prompt long enough that its
// prefill takes the converted-tile path. Every other backend that opens
// here and holds the type (Vulkan: lavapipe in CI) runs the quantized
// model too, and its greedy tokens must equal the CPU's dequantized path's.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <random>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/llama.h"
#include "tasks/model/gguf.h"
#include "tasks/model/gguf_writer.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

constexpr std::string_view kCorpus =
    "The farmer walks to the barn and feeds the animals. A language model reads a text "
    "one token at a time and predicts the next token. The river runs past the village.\n";

// hidden 64, 2 layers, 4 heads of 16, 2 KV heads, FFN 128: every matrix row
// is whole 32-value blocks. The K-quants' blocks are 256 values: hidden
// 256, 4 heads of 64, FFN 256 for them.
Status WriteModel(const std::string& path, uint32_t matrix_type) {
  const bool k_quant = matrix_type == kGgmlQ4_K || matrix_type == kGgmlQ6_K;
  const std::string tokenizer_json = MakeByteLevelTokenizerJson(kCorpus, 100);
  PCFARM_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::FromJson(tokenizer_json, "tiny"));
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = k_quant ? 256 : 64;
  c.intermediate_size = k_quant ? 256 : 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = k_quant ? 64 : 16;
  c.vocab_size = tok.vocab_size();
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  c.bos_token_id = tok.bos_id();
  c.eos_token_ids = {tok.eos_id()};
  std::mt19937_64 rng(16);
  const float gain = k_quant ? 3.0f : 2.0f;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    size_t n = 1;
    for (int64_t d : e.shape) n *= size_t(d);
    std::vector<float> v(n);
    // Scale gain/sqrt(in): peaked next-token distributions, few near-ties
    // (the wider K-quant model's logits need the larger gain: at 2 a
    // continuation met two logits 6e-4 apart, which 15-bit activations
    // may order either way).
    for (float& x : v)
      x = e.shape.size() == 2 ? gain * normal(rng) / std::sqrt(float(e.shape[1]))
                              : 1.0f + 0.1f * normal(rng);
    tensors.push_back({e.name, HostTensor::FromF32(e.shape, std::move(v))});
  }
  return WriteGgufModel(path, c, tensors, tokenizer_json, {.matrix_type = matrix_type});
}

std::vector<std::vector<int32_t>> Greedy(const LoadedModel& m, Backend* be, bool quantized,
                                         const std::vector<GenerationRequest>& reqs,
                                         int64_t tokens = 40) {
  LlamaOptions o;
  o.keep_half_weights = quantized;
  auto model = LlamaModel::Create(m.config, m.weights, be, o);
  REQUIRE(model.ok());
  GenerationConfig gc;
  gc.max_new_tokens = tokens;
  gc.stop_ids = {-1};  // never stop early
  auto gen = (*model)->Generate(reqs, gc);
  REQUIRE(gen.ok());
  std::vector<std::vector<int32_t>> out;
  for (const Generation& g : *gen) out.push_back(g.tokens);
  return out;
}

TEST_CASE("Q8_0, Q4_0, Q4_K and Q6_K GGUF models: greedy tokens equal the dequantized F32 path's") {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("pcfarm_quant_gen_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto be = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(be.ok());
  for (uint32_t type :
       {uint32_t(kGgmlQ8_0), uint32_t(kGgmlQ4_0), uint32_t(kGgmlQ4_K), uint32_t(kGgmlQ6_K)}) {
    INFO("matrix type " << GgmlQuantName(type));
    const bool k_quant = type == kGgmlQ4_K || type == kGgmlQ6_K;
    const std::string path = (dir / ("tiny_" + std::to_string(type) + ".gguf")).string();
    REQUIRE(WriteModel(path, type).ok());
    auto m = LoadModel(path);
    REQUIRE(m.ok());
    const DType want = type == kGgmlQ8_0   ? DType::kQ8_0
                       : type == kGgmlQ4_0 ? DType::kQ4_0
                       : type == kGgmlQ4_K ? DType::kQ4_K
                                           : DType::kQ6_K;
    CHECK(m->weights.Get("model.layers.1.mlp.down_proj.weight").dtype == want);
    CHECK(m->weights.Get("model.embed_tokens.weight").dtype == want);
    CHECK(m->weights.Get("model.norm.weight").dtype == DType::kF32);

    std::vector<int32_t> longp;
    for (int i = 0; i < 24; ++i) longp.push_back(int32_t(3 + (i * 37) % (m->config.vocab_size - 3)));
    const std::vector<GenerationRequest> batch = {
        {m->tokenizer.Encode("The farmer walks"), 0}, {m->tokenizer.Encode("A language"), 1},
        {m->tokenizer.Encode("river"), 2}, {longp, 3}};
    for (size_t i = 0; i < batch.size(); ++i) REQUIRE(!batch[i].prompt.empty());
    const auto quant = Greedy(*m, be->get(), true, batch);
    const auto ref = Greedy(*m, be->get(), false, batch);
    for (size_t i = 0; i < batch.size(); ++i) {
      INFO("prompt " << i);
      REQUIRE(quant[i].size() == 40);
      CHECK(quant[i] == ref[i]);
    }
    // One sequence alone decodes one row at a time (the M = 1 kernel).
    const auto alone = Greedy(*m, be->get(), true, {batch[0]});
    CHECK(alone[0] == ref[0]);
    for (const std::string& name : RegisteredBackendNames()) {
      if (name == "cpu") continue;
      auto other = CreateBackend(name);
      if (!other.ok()) {
        WARN(name << " does not open here, not compared: " << other.status().ToString());
        continue;
      }
      const StorageType st = static_cast<StorageType>(want);
      if (!(*other)->SupportsStorage(st)) {
        WARN(name << " does not hold " << StorageTypeName(st) << ", not compared");
        continue;
      }
      INFO("backend " << name);
      // The K-quant models are 4 times wider, and lavapipe (CI's Vulkan)
      // unpacks each K-quant value on its own (0.3 s a step here): there
      // they decode 16 tokens, compared with the reference's first 16
      // (vulkan_backend_test checks every product of every type against
      // the CPU).
      const int64_t tokens = k_quant ? 16 : 40;
      const auto got = Greedy(*m, other->get(), true, batch, tokens);
      for (size_t i = 0; i < batch.size(); ++i) {
        INFO("prompt " << i);
        CHECK(got[i] == std::vector<int32_t>(ref[i].begin(), ref[i].begin() + tokens));
      }
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
