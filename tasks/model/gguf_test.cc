#include "tasks/model/gguf.h"

#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "base/file.h"
#include "tasks/model/model_config.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

// A minimal GGUF v3 writer for tests.
class GgufBuilder {
 public:
  template <typename T>
  static void Put(std::string* out, T v) {
    out->append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  static void PutStr(std::string* out, const std::string& s) {
    Put<uint64_t>(out, s.size());
    *out += s;
  }
  // A KV pair whose value bytes are `value` (already encoded).
  void Raw(const std::string& key, GgufType type, const std::string& value) {
    PutStr(&kv_, key);
    Put<uint32_t>(&kv_, uint32_t(type));
    kv_ += value;
    ++n_kv_;
  }
  template <typename T>
  void Scalar(const std::string& key, GgufType type, T v) {
    std::string b;
    Put(&b, v);
    Raw(key, type, b);
  }
  void Str(const std::string& key, const std::string& v) {
    std::string b;
    PutStr(&b, v);
    Raw(key, GgufType::kString, b);
  }
  void StrArray(const std::string& key, const std::vector<std::string>& v) {
    std::string b;
    Put<uint32_t>(&b, uint32_t(GgufType::kString));
    Put<uint64_t>(&b, v.size());
    for (auto& s : v) PutStr(&b, s);
    Raw(key, GgufType::kArray, b);
  }
  template <typename T>
  void Array(const std::string& key, GgufType elem, const std::vector<T>& v) {
    std::string b;
    Put<uint32_t>(&b, uint32_t(elem));
    Put<uint64_t>(&b, v.size());
    for (T x : v) Put(&b, x);
    Raw(key, GgufType::kArray, b);
  }
  void Tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, std::string data) {
    tensors_.push_back({name, std::move(dims), type, std::move(data)});
  }
  void TensorF32(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    Tensor(name, std::move(dims), kGgmlF32, std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
  }
  std::string Build(uint64_t alignment = 32) const {
    std::string out = "GGUF";
    Put<uint32_t>(&out, 3);
    Put<uint64_t>(&out, tensors_.size());
    Put<uint64_t>(&out, n_kv_);
    out += kv_;
    std::string data;
    for (const auto& t : tensors_) {
      data.resize((data.size() + alignment - 1) / alignment * alignment, '\0');
      PutStr(&out, t.name);
      Put<uint32_t>(&out, uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) Put<uint64_t>(&out, d);
      Put<uint32_t>(&out, t.type);
      Put<uint64_t>(&out, data.size());
      data += t.data;
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, '\0');
    return out + data;
  }

 private:
  struct T {
    std::string name;
    std::vector<uint64_t> dims;
    uint32_t type;
    std::string data;
  };
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<T> tensors_;
};

std::string Q8Block(uint16_t d, const std::vector<int8_t>& q) {
  std::string b(reinterpret_cast<const char*>(&d), 2);
  for (int i = 0; i < 32; ++i) b.push_back(char(i < int(q.size()) ? q[i] : 0));
  return b;
}

}  // namespace

TEST_CASE("GGUF key-value pairs of every type", "[gguf]") {
  GgufBuilder b;
  b.Scalar<uint8_t>("u8", GgufType::kU8, 200);
  b.Scalar<int8_t>("i8", GgufType::kI8, -5);
  b.Scalar<uint16_t>("u16", GgufType::kU16, 60000);
  b.Scalar<int16_t>("i16", GgufType::kI16, -300);
  b.Scalar<uint32_t>("u32", GgufType::kU32, 4000000000u);
  b.Scalar<int32_t>("i32", GgufType::kI32, -70000);
  b.Scalar<float>("f32", GgufType::kF32, 1.5f);
  b.Scalar<uint8_t>("bool", GgufType::kBool, 1);
  b.Str("str", "héllo");
  b.Scalar<uint64_t>("u64", GgufType::kU64, uint64_t(1) << 40);
  b.Scalar<int64_t>("i64", GgufType::kI64, -(int64_t(1) << 40));
  b.Scalar<double>("f64", GgufType::kF64, 0.25);
  b.Array<int32_t>("ints", GgufType::kI32, {1, -2, 3});
  b.Array<float>("floats", GgufType::kF32, {0.5f, -1});
  b.StrArray("strs", {"a", "", "ccc"});
  {  // an array of two arrays of u8: skipped, but checked
    std::string v;
    GgufBuilder::Put<uint32_t>(&v, uint32_t(GgufType::kArray));
    GgufBuilder::Put<uint64_t>(&v, 2);
    for (int k = 0; k < 2; ++k) {
      GgufBuilder::Put<uint32_t>(&v, uint32_t(GgufType::kU8));
      GgufBuilder::Put<uint64_t>(&v, 1);
      v.push_back(char(k));
    }
    b.Raw("nested", GgufType::kArray, v);
  }
  b.Scalar<uint32_t>("general.alignment", GgufType::kU32, 64);
  b.TensorF32("t", {3, 2}, {1, 2, 3, 4, 5, 6});
  std::string bytes = b.Build(64);
  auto g = GgufFile::Parse(bytes, "kv.gguf", nullptr);
  REQUIRE(g.ok());
  CHECK(g->version() == 3);
  CHECK(g->alignment() == 64);
  CHECK(*g->GetInt("u8") == 200);
  CHECK(*g->GetInt("i8") == -5);
  CHECK(*g->GetInt("u16") == 60000);
  CHECK(*g->GetInt("i16") == -300);
  CHECK(*g->GetInt("u32") == 4000000000LL);
  CHECK(*g->GetInt("i32") == -70000);
  CHECK(*g->GetFloat("f32") == 1.5);
  CHECK(*g->GetInt("bool") == 1);
  CHECK(*g->GetString("str") == "héllo");
  CHECK(*g->GetInt("u64") == (int64_t(1) << 40));
  CHECK(*g->GetInt("i64") == -(int64_t(1) << 40));
  CHECK(*g->GetFloat("f64") == 0.25);
  CHECK(g->Find("ints")->ints == std::vector<int64_t>{1, -2, 3});
  CHECK(g->Find("floats")->floats == std::vector<double>{0.5, -1});
  CHECK(g->Find("strs")->strings == std::vector<std::string>{"a", "", "ccc"});
  CHECK(g->Find("nested")->array_size == 2);
  CHECK(g->GetString("u8").status().code() == StatusCode::kInvalidArgument);
  CHECK(g->GetInt("missing").status().code() == StatusCode::kNotFound);
  auto t = g->Tensor("t");
  REQUIRE(t.ok());
  CHECK(t->shape == std::vector<int64_t>{2, 3});  // dims reversed
  CHECK(t->ToF32() == std::vector<float>{1, 2, 3, 4, 5, 6});
  CHECK(reinterpret_cast<const char*>(t->data) >= bytes.data());  // a view
  CHECK(reinterpret_cast<const char*>(t->data) < bytes.data() + bytes.size());

  // Cut anywhere before the end: an error, never a crash.
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    REQUIRE_FALSE(GgufFile::Parse(bytes.substr(0, cut), "kv.gguf", nullptr).ok());
}

TEST_CASE("Q8_0 and Q4_0 dequantize to hand-computed values", "[gguf]") {
  // Q8_0: d = 0.5 (f16 0x3800); q = -128, -1, 0, 1, 127.
  std::string q8 = Q8Block(0x3800, {-128, -1, 0, 1, 127});
  auto v = DequantizeGgml(kGgmlQ8_0, reinterpret_cast<const uint8_t*>(q8.data()), 32);
  REQUIRE(v.ok());
  CHECK((*v)[0] == -64.0f);
  CHECK((*v)[1] == -0.5f);
  CHECK((*v)[2] == 0.0f);
  CHECK((*v)[3] == 0.5f);
  CHECK((*v)[4] == 63.5f);
  // Q4_0: d = 2 (0x4000); byte j holds element j (low nibble) and j+16 (high).
  std::string q4("\x00\x40", 2);
  q4.push_back(char(0x1f));  // element 0: 15-8 = 7 -> 14; element 16: 1-8 = -7 -> -14
  q4.push_back(char(0x80));  // element 1: 0-8 -> -16; element 17: 8-8 -> 0
  for (int j = 2; j < 16; ++j) q4.push_back(char(0x88));
  v = DequantizeGgml(kGgmlQ4_0, reinterpret_cast<const uint8_t*>(q4.data()), 32);
  REQUIRE(v.ok());
  CHECK((*v)[0] == 14.0f);
  CHECK((*v)[16] == -14.0f);
  CHECK((*v)[1] == -16.0f);
  CHECK((*v)[17] == 0.0f);
  CHECK((*v)[5] == 0.0f);
  CHECK_FALSE(DequantizeGgml(kGgmlQ8_0, nullptr, 31).ok());
  CHECK_FALSE(DequantizeGgml(kGgmlF32, nullptr, 32).ok());

  // Through a file: a [2, 32] Q8_0 tensor.
  GgufBuilder b;
  b.Tensor("q", {32, 2}, kGgmlQ8_0, Q8Block(0x3c00, {3}) + Q8Block(0x4000, {-3}));
  std::string b_bytes = b.Build();  // must outlive the views
  auto g = GgufFile::Parse(b_bytes, "q.gguf", nullptr);
  REQUIRE(g.ok());
  auto t = g->Tensor("q");
  REQUIRE(t.ok());
  CHECK(t->shape == std::vector<int64_t>{2, 32});
  CHECK(t->ToF32()[0] == 3.0f);
  CHECK(t->ToF32()[32] == -6.0f);
}

TEST_CASE("GGUF lying headers are errors", "[gguf]") {
  auto err = [](const std::string& bytes) {
    auto g = GgufFile::Parse(bytes, "bad.gguf", nullptr);
    REQUIRE_FALSE(g.ok());
    CHECK(g.status().message().rfind("bad.gguf: ", 0) == 0);
    return g.status().message();
  };
  std::string hdr = "GGUF";
  GgufBuilder::Put<uint32_t>(&hdr, 3);
  auto with_counts = [&](uint64_t nt, uint64_t nkv) {
    std::string h = hdr;
    GgufBuilder::Put<uint64_t>(&h, nt);
    GgufBuilder::Put<uint64_t>(&h, nkv);
    return h;
  };
  err("GGUX" + std::string(20, '\0'));
  {
    std::string v1 = "GGUF";
    GgufBuilder::Put<uint32_t>(&v1, 1);
    err(v1 + std::string(16, '\0'));
  }
  CHECK(err(with_counts(0, uint64_t(1) << 60)).find("kv_count") != std::string::npos);
  CHECK(err(with_counts(uint64_t(1) << 60, 0)).find("tensor_count") != std::string::npos);
  {  // a key whose string length is huge
    std::string s = with_counts(0, 1);
    GgufBuilder::Put<uint64_t>(&s, uint64_t(1) << 62);
    s += std::string(16, 'k');
    err(s);
  }
  {  // an array claiming 2^40 elements
    GgufBuilder b;
    std::string v;
    GgufBuilder::Put<uint32_t>(&v, uint32_t(GgufType::kU32));
    GgufBuilder::Put<uint64_t>(&v, uint64_t(1) << 40);
    b.Raw("arr", GgufType::kArray, v + std::string(16, '\0'));
    CHECK(err(b.Build()).find("claims") != std::string::npos);
  }
  {  // unknown value type
    GgufBuilder b;
    b.Raw("x", GgufType(99), "abcd");
    err(b.Build());
  }
  {  // five dims
    GgufBuilder b;
    b.Tensor("t", {1, 1, 1, 1, 1}, kGgmlF32, std::string(4, '\0'));
    CHECK(err(b.Build()).find("dims") != std::string::npos);
  }
  {  // data past the end of the file
    GgufBuilder b;
    b.Tensor("t", {1000}, kGgmlF32, std::string(16, '\0'));
    CHECK(err(b.Build()).find("tensor t") != std::string::npos);
  }
  {  // a type of unknown size, and Q8_0 dims that do not fill blocks
    GgufBuilder b;
    b.Tensor("t", {4}, 77, std::string(16, '\0'));
    err(b.Build());
    GgufBuilder c;
    c.Tensor("t", {31}, kGgmlQ8_0, std::string(34, '\0'));
    err(c.Build());
  }
  {  // a misaligned offset: alignment 32 declared, file built with 8
    GgufBuilder b;
    b.TensorF32("a", {1}, {1});
    b.TensorF32("b", {1}, {2});
    std::string bytes = b.Build(8);
    err(bytes);
  }
  {  // dims whose product overflows
    GgufBuilder b;
    b.Tensor("t", {uint64_t(1) << 40, uint64_t(1) << 40}, kGgmlF32, "");
    err(b.Build());
  }
  {  // a known but unloadable type is parsed, then refused by name
    GgufBuilder b;
    b.Tensor("k", {256}, 13, std::string(176, '\0'));  // Q5_K
    std::string b_bytes = b.Build();  // must outlive the views
    auto g = GgufFile::Parse(b_bytes, "k.gguf", nullptr);
    REQUIRE(g.ok());
    CHECK(g->Tensor("k").status().message().find("tensor k has ggml type 13") != std::string::npos);
  }
  {  // a Q4_K row that is not a whole super-block
    GgufBuilder b;
    b.Tensor("k", {300, 2}, kGgmlQ4_K, std::string(288, '\0'));
    err(b.Build());
  }
  {  // a Q6_K tensor whose blocks run past the end of the file
    GgufBuilder b;
    b.Tensor("k", {256, 2}, kGgmlQ6_K, std::string(210, '\0'));
    std::string bytes = b.Build();
    bytes.resize(bytes.size() - 2 * 210 + 200);
    auto g = GgufFile::Parse(bytes, "short.gguf", nullptr);
    REQUIRE_FALSE(g.ok());
    CHECK(g.status().message().find("tensor k") != std::string::npos);
  }
}

TEST_CASE("GGUF quantized tensors come back as views of the stored blocks", "[gguf]") {
  // Two Q4_K rows and one Q6_K row of 256: their bytes are the file's, their
  // values those of the reference decoder.
  std::string q4k(2 * 144, '\0'), q6k(210, '\0');
  for (size_t i = 0; i < q4k.size(); ++i) q4k[i] = char(i * 7 + 1);
  for (size_t i = 0; i < q6k.size(); ++i) q6k[i] = char(i * 13 + 5);
  for (size_t off : {size_t(0), size_t(144)}) {
    q4k[off] = 0; q4k[off + 1] = 0x3c;      // d = 1
    q4k[off + 2] = 0; q4k[off + 3] = 0x38;  // dmin = 0.5
  }
  q6k[208] = 0; q6k[209] = 0x30;  // d = 0.125
  GgufBuilder b;
  b.Tensor("a", {256, 2}, kGgmlQ4_K, q4k);
  b.Tensor("b", {256}, kGgmlQ6_K, q6k);
  std::string bytes = b.Build();
  auto g = GgufFile::Parse(bytes, "kq.gguf", nullptr);
  REQUIRE(g.ok());
  auto a = g->Tensor("a");
  auto c = g->Tensor("b");
  REQUIRE((a.ok() && c.ok()));
  CHECK(a->dtype == DType::kQ4_K);
  CHECK(c->dtype == DType::kQ6_K);
  CHECK(a->shape == std::vector<int64_t>{2, 256});
  CHECK(a->nbytes() == q4k.size());
  CHECK(std::memcmp(a->data, q4k.data(), q4k.size()) == 0);
  CHECK(a->data >= static_cast<const void*>(bytes.data()));  // a view, not a copy
  CHECK(a->data < static_cast<const void*>(bytes.data() + bytes.size()));
  std::vector<float> ref(512);
  DequantizeBlocks(kGgmlTypeQ4_K, reinterpret_cast<const uint8_t*>(q4k.data()), 2, ref.data());
  CHECK(a->ToF32() == ref);
  auto dq = DequantizeGgml(kGgmlQ6_K, static_cast<const uint8_t*>(c->data), 256);
  REQUIRE(dq.ok());
  CHECK(c->ToF32() == *dq);
  CHECK_FALSE(DequantizeGgml(kGgmlQ6_K, nullptr, 255).ok());
}

namespace {

ModelConfig GgufTinyConfig() {
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 4;
  c.vocab_size = 15;
  c.tie_word_embeddings = true;
  return c;
}

// GGUF name for the HF names the tiny model uses.
std::string ToGgufName(const std::string& hf) {
  static const std::map<std::string, std::string> kMap = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
      {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight"},
      {"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight"},
      {"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight"},
      {"model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight"},
      {"model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight"},
      {"model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight"},
      {"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight"},
      {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"}};
  return kMap.at(hf);
}

// llama.cpp's converter: HF row s*half+i of each head goes to row 2i+s.
std::vector<float> PermuteForGguf(const std::vector<float>& hf, int64_t rows, int64_t cols, int64_t heads) {
  std::vector<float> out(hf.size());
  int64_t hd = rows / heads, half = hd / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t c = 0; c < cols; ++c)
          out[(h * hd + 2 * i + s) * cols + c] = hf[(h * hd + s * half + i) * cols + c];
  return out;
}

void AddSpmVocab(GgufBuilder* b) {
  b->Str("tokenizer.ggml.model", "llama");
  b->StrArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "<0x21>", "\xe2\x96\x81", "h", "e", "l",
                                        "o", "\xe2\x96\x81h", "ll", "he", "\xe2\x96\x81he", "llo",
                                        "\xe2\x96\x81hello"});
  b->Array<float>("tokenizer.ggml.scores", GgufType::kF32,
                  {0, 0, 0, 0, -1, -1, -1, -1, -1, -5, -3, -2, -4, -6, -7});
  b->Array<int32_t>("tokenizer.ggml.token_type", GgufType::kI32,
                    {2, 3, 3, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1});
  b->Scalar<uint32_t>("tokenizer.ggml.bos_token_id", GgufType::kU32, 1);
  b->Scalar<uint32_t>("tokenizer.ggml.eos_token_id", GgufType::kU32, 2);
}

}  // namespace

TEST_CASE("a llama GGUF gives config, HF-named weights and a tokenizer", "[gguf]") {
  ModelConfig c = GgufTinyConfig();
  GgufBuilder b;
  b.Str("general.architecture", "llama");
  b.Scalar<uint32_t>("llama.block_count", GgufType::kU32, 1);
  b.Scalar<uint32_t>("llama.embedding_length", GgufType::kU32, 8);
  b.Scalar<uint32_t>("llama.feed_forward_length", GgufType::kU32, 16);
  b.Scalar<uint32_t>("llama.attention.head_count", GgufType::kU32, 2);
  b.Scalar<uint32_t>("llama.attention.head_count_kv", GgufType::kU32, 1);
  b.Scalar<uint32_t>("llama.context_length", GgufType::kU32, 64);
  b.Scalar<float>("llama.rope.freq_base", GgufType::kF32, 500000.0f);
  b.Scalar<float>("llama.attention.layer_norm_rms_epsilon", GgufType::kF32, 1e-5f);
  AddSpmVocab(&b);
  std::map<std::string, std::vector<float>> hf;
  float k = 0;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    int64_t rows = e.shape[0], cols = e.shape.size() > 1 ? e.shape[1] : 1;
    std::vector<float> v(size_t(rows * cols));
    for (float& x : v) x = k++;
    hf[e.name] = v;
    std::vector<float> stored = v;
    if (e.name.find("q_proj") != std::string::npos) stored = PermuteForGguf(v, rows, cols, 2);
    if (e.name.find("k_proj") != std::string::npos) stored = PermuteForGguf(v, rows, cols, 1);
    std::vector<uint64_t> dims(e.shape.rbegin(), e.shape.rend());
    b.TensorF32(ToGgufName(e.name), dims, stored);
  }
  std::string bytes = b.Build();
  auto g = GgufFile::Parse(bytes, "tiny.gguf", nullptr);
  REQUIRE(g.ok());
  auto cfg = ConfigFromGguf(*g);
  REQUIRE(cfg.ok());
  CHECK(cfg->hidden_size == 8);
  CHECK(cfg->num_key_value_heads == 1);
  CHECK(cfg->head_dim == 4);
  CHECK(cfg->vocab_size == 15);
  CHECK(cfg->tie_word_embeddings);
  CHECK(cfg->rope_theta == 500000.0);
  CHECK(cfg->max_position_embeddings == 64);
  CHECK(cfg->eos_token_ids == std::vector<int64_t>{2});
  auto w = ModelWeights::FromGguf(*g, *cfg);
  REQUIRE(w.ok());
  for (const auto& [name, v] : hf) {
    INFO(name);
    CHECK(w->Get(name).ToF32() == v);
  }
  // q/k are owned copies, the rest views into the file.
  auto in_file = [&](const HostTensor& t) {
    auto p = static_cast<const char*>(t.data);
    return p >= bytes.data() && p < bytes.data() + bytes.size();
  };
  CHECK(in_file(w->Get("model.layers.0.mlp.up_proj.weight")));
  CHECK_FALSE(in_file(w->Get("model.layers.0.self_attn.q_proj.weight")));

  auto tok = Tokenizer::FromGguf(*g);
  REQUIRE(tok.ok());
  // Worked by hand in the commit: ▁ h e l l o ! -> he, ll, ▁he, llo, ▁hello; ! by byte fallback.
  CHECK(tok->Encode("hello!") == std::vector<int32_t>{1, 14, 3});
  CHECK(tok->Encode("hello</s>hello") == std::vector<int32_t>{1, 14, 2, 11, 13});
  CHECK(tok->Decode({1, 14, 3}, /*skip_special=*/true) == "hello!");
  CHECK(tok->Decode({1, 14, 3}) == "<s> hello!");
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);

  // The same through a file and LoadModel.
  std::string path = (std::filesystem::temp_directory_path() /
                      ("pcfarm_tiny_" + std::to_string(::getpid()) + ".gguf")).string();
  REQUIRE(WriteFileAtomic(path, bytes).ok());
  auto m = LoadModel(path);
  std::filesystem::remove(path);  // the mapping stays valid
  REQUIRE(m.ok());
  CHECK(m->config.bos_token_id == 1);
  CHECK(m->weights.Get("model.layers.0.self_attn.k_proj.weight").ToF32() ==
        hf["model.layers.0.self_attn.k_proj.weight"]);
  CHECK(m->weights.Get("model.norm.weight").ToF32() == hf["model.norm.weight"]);
  CHECK(m->tokenizer.Encode("hello!") == std::vector<int32_t>{1, 14, 3});

  // Random corruption of the file: errors or a valid parse, never a crash.
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string bad = bytes;
    int flips = 1 + int(rng() % 4);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] = char(rng());
    auto g2 = GgufFile::Parse(bad, "fuzz.gguf", nullptr);
    if (!g2.ok()) continue;
    for (const GgufTensorInfo& info : g2->tensors()) {
      auto t = g2->Tensor(info.name);
      if (t.ok()) (void)t->ToF32();
    }
    auto c2 = ConfigFromGguf(*g2);
    if (c2.ok()) (void)ModelWeights::FromGguf(*g2, *c2);
    (void)Tokenizer::FromGguf(*g2);
  }
}

TEST_CASE("GGUF config errors", "[gguf]") {
  GgufBuilder b;
  b.Str("general.architecture", "gpt2");
  std::string b_bytes = b.Build();  // must outlive the views
  auto g = GgufFile::Parse(b_bytes, "x.gguf", nullptr);
  REQUIRE(g.ok());
  CHECK(ConfigFromGguf(*g).status().message().find("only llama") != std::string::npos);
  GgufBuilder c;
  c.Str("general.architecture", "llama");
  std::string c_bytes = c.Build();  // must outlive the views
  g = GgufFile::Parse(c_bytes, "x.gguf", nullptr);
  REQUIRE(g.ok());
  CHECK(ConfigFromGguf(*g).status().message().find("llama.embedding_length") != std::string::npos);
}

TEST_CASE("a gpt2-style GGUF vocab is byte-level BPE", "[gguf][tokenizer]") {
  GgufBuilder b;
  b.Str("tokenizer.ggml.model", "gpt2");
  b.Str("tokenizer.ggml.pre", "llama-bpe");
  std::vector<std::string> tokens;
  // Byte b's printable code point (GPT-2's bytes_to_unicode).
  int next = 256;
  for (int by = 0; by < 256; ++by) {
    bool printable = (by >= 33 && by <= 126) || (by >= 161 && by <= 172) || by >= 174;
    uint32_t cp = printable ? uint32_t(by) : uint32_t(next++);
    std::string s;
    AppendUtf8(cp, &s);
    tokens.push_back(s);
  }
  for (const char* t : {"he", "ll", "hell", "\xc4\xa0w", "<|begin_of_text|>"}) tokens.push_back(t);
  std::vector<int32_t> types(tokens.size(), 1);
  types.back() = 3;
  b.StrArray("tokenizer.ggml.tokens", tokens);
  b.Array<int32_t>("tokenizer.ggml.token_type", GgufType::kI32, types);
  b.StrArray("tokenizer.ggml.merges", {"h e", "l l", "he ll", "\xc4\xa0 w"});
  b.Scalar<uint32_t>("tokenizer.ggml.bos_token_id", GgufType::kU32, 260);
  b.Scalar<uint8_t>("tokenizer.ggml.add_bos_token", GgufType::kBool, 1);
  std::string b_bytes = b.Build();  // must outlive the views
  auto g = GgufFile::Parse(b_bytes, "bpe.gguf", nullptr);
  REQUIRE(g.ok());
  auto tok = Tokenizer::FromGguf(*g);
  REQUIRE(tok.ok());
  std::vector<int32_t> ids = tok->Encode("hello world");
  CHECK(ids == std::vector<int32_t>{260, 258, 'o', 259, 'o', 'r', 'l', 'd'});
  CHECK(tok->Decode(ids) == "<|begin_of_text|>hello world");
  CHECK(tok->Decode(ids, true) == "hello world");

  GgufBuilder bad;
  bad.Str("tokenizer.ggml.model", "gpt2");
  bad.StrArray("tokenizer.ggml.tokens", {"a"});
  bad.StrArray("tokenizer.ggml.merges", {"a b"});
  std::string bad_bytes = bad.Build();  // must outlive the views
  g = GgufFile::Parse(bad_bytes, "bad.gguf", nullptr);
  REQUIRE(g.ok());
  CHECK(Tokenizer::FromGguf(*g).status().message().find("merges[0]") != std::string::npos);
}

}  // namespace pcfarm
