#include "tasks/model/gguf_writer.h"

#include <bit>
#include <cassert>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/model/gguf.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/pretokenize.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

static_assert(
    std::endian::native == std::endian::little,
    "GGUF is little-endian; the writer copies host integers as they are");

using nlohmann::json;

constexpr uint64_t kAlignment = 32;
constexpr int32_t kTokenNormal = 1, kTokenControl = 3, kTokenUserDefined = 4;

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

void PutString(std::string* out, std::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s);
}

void PadTo(std::string* out, uint64_t alignment) {
  out->append((alignment - out->size() % alignment) % alignment, '\0');
}

// The KV section, counted as it is appended.
class KvSection {
 public:
  void U32(std::string_view key, uint32_t v) {
    Key(key, GgufType::kU32);
    Put(&bytes_, v);
  }
  void F32(std::string_view key, float v) {
    Key(key, GgufType::kF32);
    Put(&bytes_, v);
  }
  void Bool(std::string_view key, bool v) {
    Key(key, GgufType::kBool);
    Put<uint8_t>(&bytes_, v);
  }
  void String(std::string_view key, std::string_view v) {
    Key(key, GgufType::kString);
    PutString(&bytes_, v);
  }
  void Strings(std::string_view key, const std::vector<std::string>& v) {
    ArrayHead(key, GgufType::kString, v.size());
    for (const std::string& s : v) PutString(&bytes_, s);
  }
  void I32s(std::string_view key, const std::vector<int32_t>& v) {
    ArrayHead(key, GgufType::kI32, v.size());
    for (int32_t x : v) Put(&bytes_, x);
  }

  uint64_t count() const { return count_; }
  const std::string& bytes() const { return bytes_; }

 private:
  void Key(std::string_view key, GgufType type) {
    PutString(&bytes_, key);
    Put(&bytes_, uint32_t(type));
    ++count_;
  }
  void ArrayHead(std::string_view key, GgufType elem, uint64_t n) {
    Key(key, GgufType::kArray);
    Put(&bytes_, uint32_t(elem));
    Put(&bytes_, n);
  }

  std::string bytes_;
  uint64_t count_ = 0;
};

const char kWhat[] = "GGUF writer";

Status Refuse(const std::string& why) {
  return InvalidArgument(std::string(kWhat) + ": " + why);
}

bool ExactInF32(double v) { return double(float(v)) == v; }

Status WriteConfigKeys(const ModelConfig& c, KvSection* kv) {
  if (c.architecture != "LlamaForCausalLM")
    return Refuse(
        "architecture " + c.architecture +
        " would load back as LlamaForCausalLM; only llama models are written");
  if (c.attention_bias)
    return Refuse(
        "attention_bias (q/k/v biases) cannot be carried by llama GGUF keys");
  if (c.rope_scaling.type != "" && c.rope_scaling.type != "linear")
    return Refuse("rope_scaling " + c.rope_scaling.type +
                  " is not supported (none or linear)");
  if (c.head_dim % 2 != 0)
    return Refuse("head_dim " + std::to_string(c.head_dim) + " is odd");
  if (!ExactInF32(c.rope_theta))
    return Refuse("rope_theta " + std::to_string(c.rope_theta) +
                  " is not exact in f32, GGUF's type for it");
  if (c.rope_scaling.type == "linear" && !ExactInF32(c.rope_scaling.factor))
    return Refuse("rope_scaling.factor " +
                  std::to_string(c.rope_scaling.factor) +
                  " is not exact in f32");
  if (c.eos_token_ids.size() > 1)
    return Refuse(std::to_string(c.eos_token_ids.size()) +
                  " EOS ids; GGUF's tokenizer.ggml.eos_token_id holds one");
  const std::pair<const char*, int64_t> ints[] = {
      {"llama.context_length", c.max_position_embeddings},
      {"llama.embedding_length", c.hidden_size},
      {"llama.block_count", c.num_hidden_layers},
      {"llama.feed_forward_length", c.intermediate_size},
      {"llama.vocab_size", c.vocab_size},
      {"llama.rope.dimension_count", c.head_dim},
      {"llama.attention.head_count", c.num_attention_heads},
      {"llama.attention.head_count_kv", c.num_key_value_heads},
      {"llama.attention.key_length", c.head_dim},
      {"llama.attention.value_length", c.head_dim}};
  for (const auto& [key, v] : ints) {
    if (v <= 0 || v > int64_t(std::numeric_limits<uint32_t>::max()))
      return Refuse(std::string(key) + " = " + std::to_string(v) +
                    " is outside 1..2^32-1");
    kv->U32(key, uint32_t(v));
  }
  kv->F32("llama.rope.freq_base", float(c.rope_theta));
  kv->F32("llama.attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  if (c.rope_scaling.type == "linear") {
    kv->String("llama.rope.scaling.type", "linear");
    kv->F32("llama.rope.scaling.factor", float(c.rope_scaling.factor));
  }
  return Status::Ok();
}

// The tokenizer.ggml.pre name of a byte-level pre-tokenizer: its steps must
// come down to one regex split (a ByteLevel with use_regex is GPT-2's).
Result<std::string> PreTokenizerName(const json& pre) {
  std::vector<SplitRegex> splits;
  std::vector<const json*> todo{&pre};
  while (!todo.empty()) {
    const json& p = *todo.back();
    todo.pop_back();
    if (p.is_null()) continue;
    std::string type = p.value("type", "");
    if (type == "Sequence") {
      const json& subs = p.at("pretokenizers");
      for (auto it = subs.rbegin(); it != subs.rend(); ++it)
        todo.push_back(&*it);
    } else if (type == "ByteLevel") {
      if (p.value("add_prefix_space", false))
        return Refuse("tokenizer ByteLevel add_prefix_space has no GGUF key");
      if (p.value("use_regex", true)) splits.push_back(SplitRegex::kGpt2);
    } else if (type == "Split") {
      auto regex =
          SplitRegexFromPattern(p.at("pattern").at("Regex").get<std::string>());
      if (!regex)
        return Refuse(
            "tokenizer Split pattern is not the GPT-2, Llama-3 or Qwen2 regex");
      splits.push_back(*regex);
    } else {
      return Refuse("tokenizer pre_tokenizer " + type +
                    " has no GGUF equivalent");
    }
  }
  if (splits.size() != 1)
    return Refuse("tokenizer pre-tokenizes with " +
                  std::to_string(splits.size()) +
                  " regex splits; GGUF's tokenizer.ggml.pre names exactly one");
  switch (splits[0]) {
    case SplitRegex::kGpt2:
      return std::string("gpt-2");
    case SplitRegex::kLlama3:
      return std::string("llama-bpe");
    case SplitRegex::kQwen2:
      return std::string("qwen2");
  }
  return Refuse("unknown pre-tokenizer regex");
}

Status WriteTokenizerKeys(const ModelConfig& c,
                          const std::string& tokenizer_json, KvSection* kv) {
  auto parsed = Tokenizer::FromJson(tokenizer_json, "tokenizer.json");
  if (!parsed.ok()) return parsed.status().WithContext(kWhat);
  const Tokenizer& tok = *parsed;
  if (!tok.byte_level())
    return Refuse(
        "tokenizer.json is not byte-level BPE (SentencePiece-style BPE "
        "merges by rank, GGUF's llama tokenizer by score)");
  if (tok.vocab_size() > c.vocab_size)
    return Refuse("tokenizer has " + std::to_string(tok.vocab_size()) +
                  " tokens but vocab_size is " + std::to_string(c.vocab_size));
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  if (c.bos_token_id >= 0 && c.bos_token_id != bos)
    return Refuse("config bos_token_id " + std::to_string(c.bos_token_id) +
                  " differs from the tokenizer's BOS " + std::to_string(bos) +
                  "; GGUF holds one BOS id");
  if (!c.eos_token_ids.empty() && c.eos_token_ids[0] != eos)
    return Refuse("config eos_token_id " + std::to_string(c.eos_token_ids[0]) +
                  " differs from the tokenizer's EOS " + std::to_string(eos) +
                  "; GGUF holds one EOS id");
  if (tok.prefix_ids().size() > 1 || tok.suffix_ids().size() > 1)
    return Refuse(
        "tokenizer template adds more than one token before or after the text; "
        "GGUF has only add_bos_token and add_eos_token");

  std::vector<std::string> tokens(size_t(tok.vocab_size()));
  std::vector<int32_t> types(tokens.size(), kTokenNormal);
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    tokens[id] = tok.TokenString(id);
    if (tok.TokenId(tokens[id]) != id)
      return Refuse("tokenizer token '" + tokens[id] +
                    "' has more than one id");
  }
  std::vector<std::string> merges;
  std::string pre;
  bool ignore_merges = false;
  int32_t unk = -1;
  try {  // FromJson has checked the structure; at() only guards the rest.
    const json j = json::parse(tokenizer_json);
    const json& model = j.at("model");
    ignore_merges = model.value("ignore_merges", false);
    if (auto u = model.find("unk_token"); u != model.end() && u->is_string())
      unk = tok.TokenId(u->get<std::string>());
    if (auto added = j.find("added_tokens");
        added != j.end() && added->is_array())
      for (const json& a : *added)
        types[a.at("id").get<size_t>()] =
            a.value("special", false) ? kTokenControl : kTokenUserDefined;
    for (const json& m : model.at("merges")) {
      std::string s = m.is_string() ? m.get<std::string>()
                                    : m.at(0).get<std::string>() + " " +
                                          m.at(1).get<std::string>();
      // The reader splits at the first space after the first byte.
      const size_t left =
          m.is_string() ? s.find(' ') : m.at(0).get<std::string>().size();
      if (s.find(' ', 1) != left)
        return Refuse("tokenizer merge " + std::to_string(merges.size()) +
                      " '" + s + "' has a space inside its left token");
      merges.push_back(std::move(s));
    }
    PCFARM_ASSIGN_OR_RETURN(pre,
                            PreTokenizerName(j.value("pre_tokenizer", json())));
  } catch (const json::exception& e) {
    return Refuse(std::string("tokenizer.json: unexpected structure: ") +
                  e.what());
  }
  if (ignore_merges)
    return Refuse(
        "tokenizer model.ignore_merges has no GGUF key (pcfarm's GGUF reader "
        "always merges)");

  kv->String("tokenizer.ggml.model", "gpt2");
  kv->String("tokenizer.ggml.pre", pre);
  kv->Strings("tokenizer.ggml.tokens", tokens);
  kv->I32s("tokenizer.ggml.token_type", types);
  kv->Strings("tokenizer.ggml.merges", merges);
  if (bos >= 0) kv->U32("tokenizer.ggml.bos_token_id", uint32_t(bos));
  if (eos >= 0) kv->U32("tokenizer.ggml.eos_token_id", uint32_t(eos));
  if (unk >= 0) kv->U32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
  kv->Bool("tokenizer.ggml.add_bos_token", !tok.prefix_ids().empty());
  kv->Bool("tokenizer.ggml.add_eos_token", !tok.suffix_ids().empty());
  return Status::Ok();
}

// llama.cpp's GGUF name of HF tensor `name` (the table ModelWeights::FromGguf
// maps back).
std::string GgufTensorName(const std::string& name) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"self_attn.q_proj.", "attn_q."},
      {"self_attn.k_proj.", "attn_k."},
      {"self_attn.v_proj.", "attn_v."},
      {"self_attn.o_proj.", "attn_output."},
      {"mlp.gate_proj.", "ffn_gate."},
      {"mlp.up_proj.", "ffn_up."},
      {"mlp.down_proj.", "ffn_down."},
      {"input_layernorm.", "attn_norm."},
      {"post_attention_layernorm.", "ffn_norm."}};
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  assert(name.rfind(prefix, 0) == 0);
  const size_t dot = name.find('.', prefix.size());
  const std::string layer = name.substr(prefix.size(), dot - prefix.size());
  const std::string rest = name.substr(dot + 1);
  for (const auto& [hf, gg] : kLayer)
    if (rest.rfind(hf, 0) == 0)
      return "blk." + layer + "." + gg + rest.substr(std::strlen(hf));
  assert(false && "an ExpectedTensors name without a GGUF name");
  return "";
}

// Rows of a q/k weight reordered from HF's rotate-half RoPE layout to GGUF's
// interleaved one: within each head, GGUF row 2*i + s is HF row
// s*head_dim/2 + i. UnpermuteRopeRows is the inverse.
std::vector<float> PermuteRopeRows(const std::vector<float>& hf, int64_t rows,
                                   int64_t n_heads) {
  const int64_t head_dim = rows / n_heads, half = head_dim / 2;
  const size_t width = hf.size() / size_t(rows);
  std::vector<float> out(hf.size());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(&out[size_t(h * head_dim + 2 * i + s) * width],
                    &hf[size_t(h * head_dim + s * half + i) * width],
                    width * sizeof(float));
  return out;
}

}  // namespace

Result<std::string> SerializeGgufModel(
    const ModelConfig& config, const std::vector<NamedTensor>& hf_tensors,
    const std::string& tokenizer_json, const GgufWriteOptions& options) {
  const uint32_t mtype = options.matrix_type;
  if (mtype != kGgmlF32 && mtype != kGgmlQ8_0 && mtype != kGgmlQ4_0 && mtype != kGgmlQ4_K &&
      mtype != kGgmlQ6_K)
    return Refuse("matrix type " + std::to_string(mtype) +
                  " (F32, Q8_0, Q4_0, Q4_K or Q6_K are written)");
  KvSection kv;
  kv.String("general.architecture", "llama");
  kv.U32("general.alignment", uint32_t(kAlignment));
  // LLAMA_FTYPE_ALL_F32, _MOSTLY_Q8_0, _MOSTLY_Q4_0, _MOSTLY_Q4_K_S (every
  // matrix Q4_K), _MOSTLY_Q6_K.
  const uint32_t file_type = mtype == kGgmlQ8_0   ? 7
                             : mtype == kGgmlQ4_0 ? 2
                             : mtype == kGgmlQ4_K ? 14
                             : mtype == kGgmlQ6_K ? 18
                                                  : 0;
  kv.U32("general.file_type", file_type);
  PCFARM_RETURN_IF_ERROR(WriteConfigKeys(config, &kv));
  PCFARM_RETURN_IF_ERROR(WriteTokenizerKeys(config, tokenizer_json, &kv));

  std::map<std::string, HostTensor> by_name;
  for (const NamedTensor& t : hf_tensors)
    if (!by_name.emplace(t.name, t.tensor).second)
      return Refuse("tensor " + t.name + " is given twice");
  const std::vector<ExpectedTensor> expected = ExpectedTensors(config);
  if (by_name.size() != expected.size()) {
    std::map<std::string, HostTensor> rest = by_name;
    for (const ExpectedTensor& e : expected) rest.erase(e.name);
    if (!rest.empty())
      return Refuse("tensor " + rest.begin()->first +
                    " is not part of the model's config");
  }
  PCFARM_ASSIGN_OR_RETURN(ModelWeights weights,
                          ModelWeights::FromTensors(by_name, config, kWhat));

  // Tensor infos first, then the data, each converted as it is appended.
  struct OutTensor {
    std::string name;
    std::vector<int64_t> shape;  // row-major, outermost first
    const HostTensor* hf;        // null for rope_freqs
    uint32_t type = kGgmlF32;
  };
  std::vector<OutTensor> out;
  if (!config.rope_freq_factors.empty())
    out.push_back({"rope_freqs.weight",
                   {int64_t(config.rope_freq_factors.size())},
                   nullptr});
  for (const ExpectedTensor& e : expected) {
    // Matrices whose rows are whole blocks (32 values, 256 for the
    // K-quants) take the matrix type; the rest (norms, ragged rows) stay
    // F32, as llama.cpp's quantizer does.
    const int64_t block = mtype == kGgmlQ4_K || mtype == kGgmlQ6_K ? 256 : 32;
    const bool quantize = e.shape.size() == 2 && e.shape[1] % block == 0;
    out.push_back({GgufTensorName(e.name), e.shape, &weights.Get(e.name),
                   quantize ? mtype : uint32_t(kGgmlF32)});
  }

  std::string file = "GGUF";
  Put<uint32_t>(&file, 3);
  Put<uint64_t>(&file, out.size());
  Put<uint64_t>(&file, kv.count());
  file += kv.bytes();
  uint64_t offset = 0;
  for (const OutTensor& t : out) {
    PutString(&file, t.name);
    Put<uint32_t>(&file, uint32_t(t.shape.size()));
    uint64_t numel = 1;
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
      Put<uint64_t>(&file, uint64_t(*it));
      numel *= uint64_t(*it);
    }
    Put<uint32_t>(&file, t.type);
    Put<uint64_t>(&file, offset);
    offset += (GgmlTypeBytes(t.type, numel) + kAlignment - 1) / kAlignment * kAlignment;
  }
  PadTo(&file, kAlignment);
  file.reserve(file.size() + offset);
  for (const OutTensor& t : out) {
    std::vector<float> v =
        t.hf == nullptr ? config.rope_freq_factors : t.hf->ToF32();
    if (t.name.find(".attn_q.") != std::string::npos)
      v = PermuteRopeRows(v, t.shape[0], config.num_attention_heads);
    else if (t.name.find(".attn_k.") != std::string::npos)
      v = PermuteRopeRows(v, t.shape[0], config.num_key_value_heads);
    if (t.type == kGgmlF32) {
      file.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
    } else {
      std::string q(GgmlTypeBytes(t.type, v.size()), '\0');
      PCFARM_RETURN_IF_ERROR(QuantizeBlocks(t.type, v.data(), int64_t(v.size()),
                                            reinterpret_cast<uint8_t*>(q.data())));
      file += q;
    }
    PadTo(&file, kAlignment);
  }
  return file;
}

Status WriteGgufModel(const std::string& path, const ModelConfig& config,
                      const std::vector<NamedTensor>& hf_tensors,
                      const std::string& tokenizer_json, const GgufWriteOptions& options) {
  auto bytes = SerializeGgufModel(config, hf_tensors, tokenizer_json, options);
  if (!bytes.ok()) return bytes.status().WithContext(path);
  return WriteFileAtomic(path, *bytes).WithContext(path);
}

}  // namespace pcfarm
