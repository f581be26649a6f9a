#include "tasks/model/model_loader.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "base/file.h"

namespace pcfarm {
namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("pcfarm_loader_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

ModelConfig TinyConfig(int64_t vocab) {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = vocab;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  return c;
}

std::vector<NamedTensor> RandomTensors(const ModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0, 0.02f);
  std::vector<NamedTensor> out;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    std::vector<float> v(size_t(e.shape[0] * (e.shape.size() > 1 ? e.shape[1] : 1)));
    for (float& x : v) x = e.shape.size() == 1 ? 1.0f : normal(rng);
    out.push_back({e.name, HostTensor::FromF32(e.shape, v)});
  }
  return out;
}

}  // namespace

TEST_CASE("a written HF model loads back whole", "[loader]") {
  TempDir dir;
  std::string tok_json = MakeByteLevelTokenizerJson("a tiny corpus for a tiny model, a tiny test.", 8);
  ModelConfig c = TinyConfig(256 + 8 + 2);
  auto tensors = RandomTensors(c, 7);
  std::string model_dir = (dir.path / "m").string();
  REQUIRE(WriteHfModel(model_dir, c, tensors, tok_json).ok());

  auto m = LoadModel(model_dir);
  INFO(m.status().ToString());
  REQUIRE(m.ok());
  CHECK(m->config.hidden_size == 16);
  CHECK(m->config.head_dim == 4);
  CHECK(m->config.tie_word_embeddings);
  CHECK(m->config.bos_token_id == 264);             // from the tokenizer
  CHECK(m->config.eos_token_ids == std::vector<int64_t>{265});
  for (const NamedTensor& t : tensors) CHECK(m->weights.Get(t.name).ToF32() == t.tensor.ToF32());
  CHECK(m->tokenizer.Decode(m->tokenizer.Encode("a tiny model"), true) == "a tiny model");

  // Too small a vocab for the tokenizer.
  c = TinyConfig(100);
  REQUIRE(WriteHfModel(model_dir, c, RandomTensors(c, 1), tok_json).ok());
  auto bad = LoadModel(model_dir);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("vocab_size is 100") != std::string::npos);

  // Tensors that do not match the config are refused before writing.
  CHECK_FALSE(WriteHfModel(model_dir, TinyConfig(300), RandomTensors(c, 1), tok_json).ok());

  std::filesystem::remove((dir.path / "m" / "tokenizer.json"));
  CHECK(LoadModel(model_dir).status().code() == StatusCode::kNotFound);
  CHECK(LoadModel((dir.path / "nothing").string()).status().code() == StatusCode::kNotFound);
}

TEST_CASE("a directory that is not a llama is a clear error", "[loader]") {
  TempDir dir;
  REQUIRE(WriteFileAtomic((dir.path / "config.json").string(),
                          R"({"architectures":["BertModel"],"hidden_size":8})").ok());
  auto m = LoadModel(dir.path.string());
  REQUIRE_FALSE(m.ok());
  CHECK(m.status().message() == (dir.path / "config.json").string() +
                                    ": architecture BertModel is not supported "
                                    "(LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
}

TEST_CASE("the PyTorch reference fixtures load, with matching RoPE frequencies", "[loader]") {
  // tests/fixtures/llama: independent plain-torch HF implementations wrote
  // these dirs and their rope_inv_freq (llama3 scaling included).
  for (const char* name : {"llama_tiny", "llama3_scaled_tied", "qwen2_bias"}) {
    INFO(name);
    std::string dir = std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/" + name;
    auto m = LoadModel(dir);
    INFO(m.status().ToString());
    REQUIRE(m.ok());
    auto expected_text = ReadFile(dir + "/expected.json", 64 << 20);
    REQUIRE(expected_text.ok());
    auto expected = nlohmann::json::parse(*expected_text);
    std::vector<double> want = expected["rope_inv_freq"].get<std::vector<double>>();
    std::vector<float> got = RopeInverseFrequencies(m->config);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-6));
    CHECK(m->config.bos_token_id == 1);
    CHECK(m->config.eos_token_ids == std::vector<int64_t>{2});
    CHECK(m->tokenizer.Encode("abc", true) == std::vector<int32_t>{1, 3, 4, 5, 6});
  }
  auto qwen = LoadModel(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/qwen2_bias");
  REQUIRE(qwen.ok());
  CHECK(qwen->config.attention_bias);
  CHECK(qwen->config.head_dim == 16);
  CHECK(qwen->weights.Get("model.layers.1.self_attn.k_proj.bias").dtype == DType::kBF16);
  CHECK(qwen->weights.Get("model.layers.1.self_attn.k_proj.bias").shape == std::vector<int64_t>{32});
  auto tied = LoadModel(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/llama3_scaled_tied");
  REQUIRE(tied.ok());
  CHECK(tied->weights.Find("lm_head.weight") == nullptr);
  CHECK(tied->weights.Get("model.layers.0.self_attn.q_proj.weight").shape == std::vector<int64_t>{128, 48});
}

}  // namespace pcfarm
