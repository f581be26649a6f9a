#include "tasks/model/gguf_writer.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "base/file.h"
#include "tasks/model/gguf.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {
namespace {

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() /
           ("pcfarm_gguf_writer_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

constexpr std::string_view kCorpus =
    "The farmer walks to the barn and feeds the animals. A language model "
    "reads a text "
    "one token at a time and predicts the next token. 1 2 3 10 100 1000. What "
    "is the "
    "capital of France? The capital of France is Paris. The river runs past "
    "the village.\n";

// The shape of `pcfarm local make-model --config tiny`: hidden 64, 2 layers,
// 4 heads of 16, 2 KV heads, FFN 128, byte-level BPE (up to 200 merges).
struct TinyModel {
  std::string tokenizer_json = MakeByteLevelTokenizerJson(kCorpus, 200);
  ModelConfig config;
  std::vector<NamedTensor> tensors;

  explicit TinyModel(uint64_t seed, DType dtype = DType::kF32,
                     bool tied = true) {
    auto tok = Tokenizer::FromJson(tokenizer_json, "tiny");
    REQUIRE(tok.ok());
    ModelConfig& c = config;
    c.architecture = "LlamaForCausalLM";
    c.hidden_size = 64;
    c.intermediate_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 16;
    c.vocab_size = tok->vocab_size();
    c.max_position_embeddings = 1024;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
    c.tie_word_embeddings = tied;
    c.bos_token_id = tok->bos_id();
    c.eos_token_ids = {tok->eos_id()};
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (const ExpectedTensor& e : ExpectedTensors(c)) {
      size_t n = 1;
      for (int64_t d : e.shape) n *= size_t(d);
      std::vector<float> v(n);
      for (float& x : v)
        x = e.shape.size() == 2 ? normal(rng) / std::sqrt(float(e.shape[1]))
                                : 1.0f + 0.1f * normal(rng);
      HostTensor t = HostTensor::FromF32(e.shape, std::move(v));
      if (dtype == DType::kF16) {
        auto half = std::make_shared<std::vector<uint16_t>>(n);
        const float* f = static_cast<const float*>(t.data);
        for (size_t i = 0; i < n; ++i) (*half)[i] = F32ToF16(f[i]);
        t.dtype = DType::kF16;
        t.data = half->data();
        t.owner = half;
      }
      tensors.push_back({e.name, t});
    }
  }
};

void CheckSameModel(const LoadedModel& hf, const LoadedModel& gg) {
  const ModelConfig &a = hf.config, &b = gg.config;
  CHECK(a.architecture == b.architecture);
  CHECK(a.hidden_size == b.hidden_size);
  CHECK(a.intermediate_size == b.intermediate_size);
  CHECK(a.num_hidden_layers == b.num_hidden_layers);
  CHECK(a.num_attention_heads == b.num_attention_heads);
  CHECK(a.num_key_value_heads == b.num_key_value_heads);
  CHECK(a.head_dim == b.head_dim);
  CHECK(a.vocab_size == b.vocab_size);
  CHECK(a.max_position_embeddings == b.max_position_embeddings);
  CHECK(float(a.rms_norm_eps) ==
        float(b.rms_norm_eps));  // stored as f32; used as f32
  CHECK(a.rope_theta == b.rope_theta);
  CHECK(a.rope_scaling.type == b.rope_scaling.type);
  CHECK(a.rope_scaling.factor == b.rope_scaling.factor);
  CHECK(RopeInverseFrequencies(a) == RopeInverseFrequencies(b));
  CHECK(a.tie_word_embeddings == b.tie_word_embeddings);
  CHECK(a.attention_bias == b.attention_bias);
  CHECK(a.bos_token_id == b.bos_token_id);
  CHECK(a.eos_token_ids == b.eos_token_ids);

  REQUIRE(hf.weights.tensors().size() == gg.weights.tensors().size());
  for (const auto& [name, t] : hf.weights.tensors()) {
    INFO(name);
    const HostTensor* g = gg.weights.Find(name);
    REQUIRE(g != nullptr);
    CHECK(g->dtype == DType::kF32);
    CHECK(g->shape == t.shape);
    std::vector<float> x = t.ToF32(), y = g->ToF32();
    REQUIRE(x.size() == y.size());
    CHECK(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
  }

  const Tokenizer &s = hf.tokenizer, &t = gg.tokenizer;
  REQUIRE(s.vocab_size() == t.vocab_size());
  for (int32_t id = 0; id < s.vocab_size(); ++id) {
    CHECK(s.TokenString(id) == t.TokenString(id));
    CHECK(s.IsSpecial(id) == t.IsSpecial(id));
  }
  CHECK(s.bos_id() == t.bos_id());
  CHECK(s.eos_id() == t.eos_id());
  CHECK(s.prefix_ids() == t.prefix_ids());
  CHECK(s.suffix_ids() == t.suffix_ids());
  for (const char* text :
       {"hello", "The farmer feeds the animals.", "  two  spaces\nand a line\n",
        "1234567 what's this?", "<|begin_of_text|>x<|end_of_text|>y",
        "caf\xc3\xa9 \xe2\x96\x81 \xf0\x9f\x99\x82"}) {
    INFO(text);
    for (bool special : {false, true}) {
      std::vector<int32_t> ids = s.Encode(text, special);
      CHECK(t.Encode(text, special) == ids);
      CHECK(t.Decode(ids) == s.Decode(ids));
      CHECK(t.Decode(ids, true) == s.Decode(ids, true));
    }
  }
}

}  // namespace

TEST_CASE(
    "a GGUF written from the tiny model loads as the same model as its HF dir",
    "[gguf_writer]") {
  TempDir dir;
  TinyModel m(42);
  const std::string hf_dir = (dir.path / "hf").string(),
                    gguf = (dir.path / "tiny.gguf").string();
  REQUIRE(WriteHfModel(hf_dir, m.config, m.tensors, m.tokenizer_json).ok());
  Status s = WriteGgufModel(gguf, m.config, m.tensors, m.tokenizer_json);
  INFO(s.ToString());
  REQUIRE(s.ok());
  auto hf = LoadModel(hf_dir);
  auto gg = LoadModel(gguf);
  INFO(hf.status().ToString() + " / " + gg.status().ToString());
  REQUIRE(hf.ok());
  REQUIRE(gg.ok());
  CHECK(gg->config.vocab_size == m.config.vocab_size);
  CheckSameModel(*hf, *gg);

  // The same inputs give the same bytes.
  auto again = SerializeGgufModel(m.config, m.tensors, m.tokenizer_json);
  REQUIRE(again.ok());
  CHECK(ReadFile(gguf).value() == *again);
}

TEST_CASE("untied F16 tensors with linear RoPE scaling round-trip exactly",
          "[gguf_writer]") {
  TempDir dir;
  TinyModel m(7, DType::kF16, /*tied=*/false);
  m.config.rope_scaling.type = "linear";
  m.config.rope_scaling.factor = 2.0;
  const std::string hf_dir = (dir.path / "hf").string(),
                    gguf = (dir.path / "m.gguf").string();
  REQUIRE(WriteHfModel(hf_dir, m.config, m.tensors, m.tokenizer_json).ok());
  REQUIRE(WriteGgufModel(gguf, m.config, m.tensors, m.tokenizer_json).ok());
  auto hf = LoadModel(hf_dir);
  auto gg = LoadModel(gguf);
  REQUIRE(hf.ok());
  REQUIRE(gg.ok());
  CHECK(hf->weights.Get("lm_head.weight").dtype == DType::kF16);
  CHECK_FALSE(gg->config.tie_word_embeddings);
  CHECK(gg->config.rope_scaling.type == "linear");
  CheckSameModel(*hf, *gg);

  // rope_freq_factors (no HF config key) travel as rope_freqs.weight.
  m.config.rope_freq_factors = {1, 1, 1, 1, 2, 4, 8, 8};
  REQUIRE(WriteGgufModel(gguf, m.config, m.tensors, m.tokenizer_json).ok());
  auto freqs = LoadModel(gguf);
  REQUIRE(freqs.ok());
  CHECK(freqs->config.rope_freq_factors == m.config.rope_freq_factors);
}

TEST_CASE("the GGUF file follows llama.cpp's layout", "[gguf_writer]") {
  TempDir dir;
  TinyModel m(3);
  const std::string path = (dir.path / "m.gguf").string();
  REQUIRE(WriteGgufModel(path, m.config, m.tensors, m.tokenizer_json).ok());
  auto g = GgufFile::Open(path);
  REQUIRE(g.ok());
  CHECK(g->version() == 3);
  CHECK(g->alignment() == 32);
  CHECK(g->GetString("general.architecture").value() == "llama");
  CHECK(g->GetString("tokenizer.ggml.model").value() == "gpt2");
  CHECK(g->GetString("tokenizer.ggml.pre").value() == "gpt-2");
  CHECK(g->Find("llama.attention.layer_norm_rms_epsilon")->type ==
        GgufType::kF32);
  CHECK(g->Find("llama.rope.freq_base")->type == GgufType::kF32);
  CHECK(g->Find("llama.block_count")->type == GgufType::kU32);
  CHECK(g->GetInt("llama.rope.dimension_count").value() == 16);
  CHECK(g->GetInt("tokenizer.ggml.add_bos_token").value() == 1);
  CHECK(g->GetInt("tokenizer.ggml.add_eos_token").value() == 0);
  const auto tok = nlohmann::json::parse(m.tokenizer_json);
  CHECK(g->Find("tokenizer.ggml.merges")->strings.size() ==
        tok["model"]["merges"].size());
  CHECK(g->Find("tokenizer.ggml.merges")->strings[0] ==
        tok["model"]["merges"][0][0].get<std::string>() + " " +
            tok["model"]["merges"][0][1].get<std::string>());
  CHECK(g->Find("tokenizer.ggml.token_type")->ints.back() ==
        3);  // <|end_of_text|>: control
  CHECK(g->Find("tokenizer.ggml.token_type")->ints[0] == 1);
  CHECK(g->tensors().size() == 1 + 2 * 9 + 1);  // tied: no output.weight
  CHECK(g->FindTensor("output.weight") == nullptr);
  for (const GgufTensorInfo& t : g->tensors()) {
    INFO(t.name);
    CHECK(t.type == kGgmlF32);
    CHECK(t.offset % 32 == 0);
  }
  const GgufTensorInfo* emb = g->FindTensor("token_embd.weight");
  REQUIRE(emb != nullptr);
  CHECK(emb->dims == std::vector<uint64_t>{
                         64, uint64_t(m.config.vocab_size)});  // fastest first

  // q/k rows are interleaved per head: GGUF row h*16 + 2i + s holds HF row
  // h*16 + 8s + i. Checked against the raw file, not the reader's unpermute.
  for (const auto& [hf_name, gguf_name, heads] :
       {std::tuple{"model.layers.1.self_attn.q_proj.weight",
                   "blk.1.attn_q.weight", 4},
        std::tuple{"model.layers.0.self_attn.k_proj.weight",
                   "blk.0.attn_k.weight", 2}}) {
    INFO(gguf_name);
    const HostTensor* hf = nullptr;
    for (const NamedTensor& t : m.tensors)
      if (t.name == hf_name) hf = &t.tensor;
    REQUIRE(hf != nullptr);
    auto raw = g->Tensor(gguf_name);
    REQUIRE(raw.ok());
    REQUIRE(raw->shape == hf->shape);
    std::vector<float> want = hf->ToF32(), got = raw->ToF32();
    const size_t width = 64;
    for (int h = 0; h < heads; ++h)
      for (int s = 0; s < 2; ++s)
        for (int i = 0; i < 8; ++i)
          CHECK(std::memcmp(&got[(h * 16 + 2 * i + s) * width],
                            &want[(h * 16 + 8 * s + i) * width],
                            width * sizeof(float)) == 0);
  }
  // v is stored as it is.
  auto v = g->Tensor("blk.0.attn_v.weight");
  REQUIRE(v.ok());
  CHECK(v->ToF32() == m.tensors[4].tensor.ToF32());
  REQUIRE(m.tensors[4].name == "model.layers.0.self_attn.v_proj.weight");
}

TEST_CASE("what a GGUF cannot carry, and unwritable paths, are errors",
          "[gguf_writer]") {
  TempDir dir;
  TinyModel m(1);
  const std::string path = (dir.path / "m.gguf").string();
  auto refused =
      [&](const ModelConfig& c, const std::vector<NamedTensor>& tensors,
          const std::string& tokenizer_json, const std::string& needle) {
        Status s = WriteGgufModel(path, c, tensors, tokenizer_json);
        INFO(s.ToString());
        CHECK(s.code() == StatusCode::kInvalidArgument);
        CHECK(s.message().rfind(path + ": GGUF writer: ", 0) == 0);
        CHECK(s.message().find(needle) != std::string::npos);
        CHECK_FALSE(std::filesystem::exists(path));
      };

  // Unwritable: a parent directory that does not exist, and one that is a file.
  for (std::string bad :
       {(dir.path / "no" / "such" / "dir" / "m.gguf").string(),
        (dir.path / "file" / "m.gguf").string()}) {
    REQUIRE(WriteFileAtomic((dir.path / "file").string(), "x").ok());
    Status s = WriteGgufModel(bad, m.config, m.tensors, m.tokenizer_json);
    INFO(s.ToString());
    CHECK(s.code() == StatusCode::kIoError);
    CHECK(s.message().rfind(bad + ": ", 0) == 0);
  }
  CHECK_FALSE(std::filesystem::exists(dir.path / "no"));

  {
    Status s = WriteGgufModel(path, m.config, m.tensors, m.tokenizer_json, {.matrix_type = 3});
    INFO(s.ToString());
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("matrix type 3 (F32, Q8_0, Q4_0, Q4_K or Q6_K are written)") !=
          std::string::npos);
    CHECK_FALSE(std::filesystem::exists(path));
  }

  ModelConfig c = m.config;
  c.architecture = "MistralForCausalLM";
  refused(c, m.tensors, m.tokenizer_json, "architecture MistralForCausalLM");
  c = m.config;
  c.attention_bias = true;
  refused(c, m.tensors, m.tokenizer_json, "attention_bias");
  c = m.config;
  c.rope_scaling.type = "llama3";
  refused(c, m.tensors, m.tokenizer_json, "rope_scaling llama3");
  c = m.config;
  c.rope_theta = 10000.1;
  refused(c, m.tensors, m.tokenizer_json, "rope_theta 10000.1");
  c = m.config;
  c.eos_token_ids = {c.eos_token_ids[0], 3};
  refused(c, m.tensors, m.tokenizer_json, "2 EOS ids");
  c = m.config;
  c.bos_token_id = 5;
  refused(c, m.tensors, m.tokenizer_json,
          "bos_token_id 5 differs from the tokenizer's BOS");
  c = m.config;
  c.vocab_size = 100;
  refused(c, m.tensors, m.tokenizer_json, "tokens but vocab_size is 100");

  std::vector<NamedTensor> t = m.tensors;
  t.pop_back();
  refused(m.config, t, m.tokenizer_json, "missing tensor model.norm.weight");
  t = m.tensors;
  t.push_back(t[0]);
  refused(m.config, t, m.tokenizer_json,
          "tensor model.embed_tokens.weight is given twice");
  t = m.tensors;
  t.push_back({"lm_head.weight", t[0].tensor});  // tied: no lm_head
  refused(m.config, t, m.tokenizer_json,
          "lm_head.weight is not part of the model's config");
  t = m.tensors;
  t[1].tensor.shape = {32};
  refused(m.config, t, m.tokenizer_json, "has shape [32], expected [64]");

  auto tok = nlohmann::json::parse(m.tokenizer_json);
  refused(m.config, m.tensors, "{", "not valid JSON");
  auto edited = tok;
  edited["model"]["ignore_merges"] = true;
  refused(m.config, m.tensors, edited.dump(), "ignore_merges");
  edited = tok;
  edited["pre_tokenizer"]["add_prefix_space"] = true;
  refused(m.config, m.tensors, edited.dump(), "add_prefix_space");
  edited = tok;
  edited["pre_tokenizer"] = {{"type", "Metaspace"},
                             {"replacement", "\xe2\x96\x81"}};
  refused(m.config, m.tensors, edited.dump(), "not byte-level");
  edited = tok;
  edited["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}},
        tok["pre_tokenizer"]}}};
  refused(m.config, m.tensors, edited.dump(), "pre_tokenizer Digits");
}

}  // namespace pcfarm
