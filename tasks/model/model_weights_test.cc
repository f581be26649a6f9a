#include "tasks/model/model_weights.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {
namespace {

ModelConfig TinyConfig() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  c.vocab_size = 10;
  c.max_position_embeddings = 32;
  return c;
}

// Tensors for `c` whose values encode their index, in F32 or BF16.
std::vector<NamedTensor> TinyTensors(const ModelConfig& c, bool bf16) {
  std::vector<NamedTensor> out;
  float k = 0;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    size_t n = 1;
    for (int64_t d : e.shape) n *= size_t(d);
    std::vector<float> v(n);
    for (float& x : v) x = (k += 1) / 64;
    HostTensor t = HostTensor::FromF32(e.shape, v);
    if (bf16) {
      auto buf = std::make_shared<std::vector<uint16_t>>();
      for (float x : v) buf->push_back(F32ToBF16(x));
      t = HostTensor{DType::kBF16, e.shape, buf->data(), buf};
    }
    out.push_back({e.name, t});
  }
  return out;
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("pcfarm_mw_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

}  // namespace

TEST_CASE("expected tensors of a config", "[weights]") {
  ModelConfig c = TinyConfig();
  auto e = ExpectedTensors(c);
  CHECK(e.size() == 1 + 2 * 9 + 2);
  CHECK(e[2].name == "model.layers.0.self_attn.q_proj.weight");
  CHECK(e[2].shape == std::vector<int64_t>{8, 8});
  CHECK(e[3].shape == std::vector<int64_t>{4, 8});  // k: kv_heads * head_dim
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  e = ExpectedTensors(c);
  CHECK(e.back().name == "model.norm.weight");
  CHECK(e.size() == 1 + 2 * 12 + 1);
}

TEST_CASE("weights from a single safetensors file are mmap'ed views", "[weights]") {
  TempDir dir;
  ModelConfig c = TinyConfig();
  auto tensors = TinyTensors(c, /*bf16=*/true);
  // A tensor the model does not use is ignored.
  static const int64_t ids[2] = {1, 2};
  tensors.push_back({"model.rotary.inv_freq", HostTensor{DType::kF32, {4}, ids, nullptr}});
  REQUIRE(WriteSafetensors(dir.file("model.safetensors"), tensors).ok());
  auto w = ModelWeights::LoadHfDir(dir.path.string(), c);
  REQUIRE(w.ok());
  CHECK(w->tensors().size() == ExpectedTensors(c).size());
  const HostTensor& up = w->Get("model.layers.1.mlp.up_proj.weight");
  CHECK(up.dtype == DType::kBF16);
  CHECK(up.shape == std::vector<int64_t>{16, 8});
  CHECK(w->Get("lm_head.weight").ToF32()[0] == Approx(tensors[20].tensor.ToF32()[0]).epsilon(0.01));
  CHECK(w->Find("model.layers.2.mlp.up_proj.weight") == nullptr);
}

TEST_CASE("weights from a sharded model", "[weights]") {
  TempDir dir;
  ModelConfig c = TinyConfig();
  c.tie_word_embeddings = true;
  auto tensors = TinyTensors(c, false);
  std::vector<NamedTensor> a(tensors.begin(), tensors.begin() + 5), b(tensors.begin() + 5, tensors.end());
  REQUIRE(WriteSafetensors(dir.file("model-00001-of-00002.safetensors"), a).ok());
  REQUIRE(WriteSafetensors(dir.file("model-00002-of-00002.safetensors"), b).ok());
  nlohmann::json index;
  for (auto& t : a) index["weight_map"][t.name] = "model-00001-of-00002.safetensors";
  for (auto& t : b) index["weight_map"][t.name] = "model-00002-of-00002.safetensors";
  REQUIRE(WriteFileAtomic(dir.file("model.safetensors.index.json"), index.dump()).ok());
  auto w = ModelWeights::LoadHfDir(dir.path.string(), c);
  REQUIRE(w.ok());
  CHECK(w->Find("lm_head.weight") == nullptr);
  CHECK(w->Get("model.norm.weight").ToF32() == tensors.back().tensor.ToF32());

  // A weight_map that escapes the directory is refused.
  index["weight_map"]["model.norm.weight"] = "../x.safetensors";
  REQUIRE(WriteFileAtomic(dir.file("model.safetensors.index.json"), index.dump()).ok());
  CHECK_FALSE(ModelWeights::LoadHfDir(dir.path.string(), c).ok());
}

TEST_CASE("weights with a wrong shape or a missing tensor are clear errors", "[weights]") {
  TempDir dir;
  ModelConfig c = TinyConfig();
  auto tensors = TinyTensors(c, false);
  for (auto& t : tensors)
    if (t.name == "model.layers.1.mlp.up_proj.weight")
      t.tensor = HostTensor::FromF32({8, 8}, std::vector<float>(64));
  std::string path = dir.file("model.safetensors");
  REQUIRE(WriteSafetensors(path, tensors).ok());
  auto w = ModelWeights::LoadHfDir(dir.path.string(), c);
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().message() ==
        path + ": model.layers.1.mlp.up_proj.weight has shape [8,8], expected [16,8]");

  tensors = TinyTensors(c, false);
  tensors.pop_back();  // lm_head
  REQUIRE(WriteSafetensors(path, tensors).ok());
  w = ModelWeights::LoadHfDir(dir.path.string(), c);
  REQUIRE_FALSE(w.ok());
  CHECK(w.status().message() == path + ": missing tensor lm_head.weight");

  CHECK(ModelWeights::LoadHfDir(dir.file("nowhere"), c).status().code() == StatusCode::kNotFound);
}

TEST_CASE("UnpermuteRopeRows turns GGUF's interleaved rows into rotate-half", "[weights]") {
  // Two heads of head_dim 4, rows labelled by their HF index. llama.cpp's
  // converter permutes HF rows [h0: 0 1 2 3 | h1: 4 5 6 7] (pairs (0,2),
  // (1,3) per head) into GGUF order [0 2 1 3 | 4 6 5 7]; undo it.
  std::vector<float> gguf_rows = {0, 2, 1, 3, 4, 6, 5, 7};
  std::vector<float> v;
  for (float r : gguf_rows) { v.push_back(r); v.push_back(r + 0.5f); }  // 2 columns
  HostTensor t = HostTensor::FromF32({8, 2}, v);
  HostTensor hf = UnpermuteRopeRows(t, 2);
  CHECK(hf.shape == std::vector<int64_t>{8, 2});
  CHECK(hf.ToF32() == std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f,
                                          4, 4.5f, 5, 5.5f, 6, 6.5f, 7, 7.5f});
}

}  // namespace pcfarm
