#include "bench/engine/bench_model.h"

#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

#include "tasks/model/model_loader.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {

// hidden 768, 12 layers, 12 heads of 64, ffn 2048, vocab 32000, tied
// embeddings: 110M parameters (the "about 100M"); `small` is the
// lavapipe model: hidden 256, 4 layers, 4 heads, ffn 768, vocab 8000 (7M).
ModelConfig EngineBenchConfig(bool small) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = small ? 256 : 768;
  c.intermediate_size = small ? 768 : 2048;
  c.num_hidden_layers = small ? 4 : 12;
  c.num_attention_heads = small ? 4 : 12;
  c.num_key_value_heads = c.num_attention_heads;
  c.head_dim = 64;
  c.vocab_size = small ? 8000 : 32000;
  c.max_position_embeddings = 2048;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  return c;
}

int64_t ParamCount(const ModelConfig& c) {
  int64_t n = 0;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    int64_t k = 1;
    for (int64_t d : e.shape) k *= d;
    n += k;
  }
  return n;
}

std::vector<NamedTensor> EngineBenchTensors(const ModelConfig& c) {
  std::mt19937_64 rng(20261121);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    size_t n = 1;
    for (int64_t d : e.shape) n *= size_t(d);
    std::vector<float> v(n);
    const bool norm = e.name.find("norm") != std::string::npos;
    const bool embed = e.name.find("embed_tokens") != std::string::npos;
    for (float& x : v) x = norm ? 1.0f : (embed ? nd(rng) : 0.02f * nd(rng));
    tensors.push_back({e.name, HostTensor::FromF32(e.shape, std::move(v))});
  }
  return tensors;
}

std::string EngineBenchTokenizerJson() {
  return MakeByteLevelTokenizerJson("the quick brown fox jumps over the lazy dog", 8);
}

// Writes the random model into dir unless a loadable one with the same
// config is already there.
Status EnsureEngineBenchModel(const std::string& dir, const ModelConfig& c) {
  if (std::filesystem::exists(dir + "/model.safetensors")) {
    Result<LoadedModel> m = LoadModel(dir);
    if (m.ok() && m->config.hidden_size == c.hidden_size &&
        m->config.num_hidden_layers == c.num_hidden_layers &&
        m->config.vocab_size == c.vocab_size)
      return Status::Ok();
  }
  std::fprintf(stderr, "writing a random %.0fM-parameter model to %s\n",
               double(ParamCount(c)) / 1e6, dir.c_str());
  return WriteHfModel(dir, c, EngineBenchTensors(c), EngineBenchTokenizerJson());
}

}  // namespace pcfarm
