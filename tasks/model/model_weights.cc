#include "tasks/model/model_weights.h"

#include <cassert>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/model/gguf.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {
namespace {

Status CheckShape(const std::string& source, const ExpectedTensor& e, const HostTensor& t) {
  if (t.shape != e.shape)
    return InvalidArgument(source + ": " + e.name + " has shape " + ShapeString(t.shape) +
                           ", expected " + ShapeString(e.shape));
  return Status::Ok();
}

// The GGUF name of HF tensor `name`, or "" when it has none.
std::string GgufName(const std::string& name) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"self_attn.q_proj", "attn_q"},     {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},     {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},      {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},      {"input_layernorm", "attn_norm"},
      {"post_attention_layernorm", "ffn_norm"}};
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return "";
  size_t dot = name.find('.', prefix.size());
  std::string layer = name.substr(prefix.size(), dot - prefix.size());
  std::string rest = name.substr(dot + 1);  // e.g. "self_attn.q_proj.weight"
  size_t last = rest.rfind('.');
  std::string module = rest.substr(0, last), suffix = rest.substr(last);
  for (const auto& [hf, gg] : kLayer)
    if (module == hf) return "blk." + layer + "." + gg + suffix;
  return "";
}

}  // namespace

std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim, ff = c.intermediate_size;
  std::vector<ExpectedTensor> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {h}});
    out.push_back({p + "self_attn.q_proj.weight", {q, h}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, h}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, h}});
    if (c.attention_bias) {
      out.push_back({p + "self_attn.q_proj.bias", {q}});
      out.push_back({p + "self_attn.k_proj.bias", {kv}});
      out.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {h, q}});
    out.push_back({p + "post_attention_layernorm.weight", {h}});
    out.push_back({p + "mlp.gate_proj.weight", {ff, h}});
    out.push_back({p + "mlp.up_proj.weight", {ff, h}});
    out.push_back({p + "mlp.down_proj.weight", {h, ff}});
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

Result<ModelWeights> ModelWeights::LoadHfDir(const std::string& dir, const ModelConfig& c) {
  namespace fs = std::filesystem;
  std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  std::string single_path = (fs::path(dir) / "model.safetensors").string();
  std::map<std::string, std::string> file_of;  // tensor -> file name in dir
  auto index_text = ReadFile(index_path, 64 << 20);
  if (index_text.ok()) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(*index_text);
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgument(index_path + ": not valid JSON: " + e.what());
    }
    auto wm = j.is_object() ? j.find("weight_map") : j.end();
    if (wm == j.end() || !wm->is_object())
      return InvalidArgument(index_path + ": missing object weight_map");
    for (auto& [k, v] : wm->items()) {
      std::string f = v.is_string() ? v.get<std::string>() : "";
      if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        return InvalidArgument(index_path + ": weight_map." + k + " is not a file name in the directory");
      file_of[k] = f;
    }
  } else if (index_text.status().code() != StatusCode::kNotFound) {
    return index_text.status();
  } else if (!fs::exists(single_path)) {
    return NotFound(dir + ": no model.safetensors or model.safetensors.index.json");
  }

  std::map<std::string, SafetensorsFile> open;
  auto get_file = [&](const std::string& fname) -> Result<const SafetensorsFile*> {
    auto it = open.find(fname);
    if (it == open.end()) {
      PCFARM_ASSIGN_OR_RETURN(SafetensorsFile f,
                              SafetensorsFile::Open((fs::path(dir) / fname).string()));
      it = open.emplace(fname, std::move(f)).first;
    }
    return &it->second;
  };

  ModelWeights w;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    std::string fname = "model.safetensors";
    if (!file_of.empty()) {
      auto it = file_of.find(e.name);
      if (it == file_of.end())
        return InvalidArgument(index_path + ": weight_map has no entry for " + e.name);
      fname = it->second;
    }
    PCFARM_ASSIGN_OR_RETURN(const SafetensorsFile* f, get_file(fname));
    if (f->Find(e.name) == nullptr)
      return InvalidArgument(f->display_name() + ": missing tensor " + e.name);
    PCFARM_ASSIGN_OR_RETURN(HostTensor t, f->Tensor(e.name));
    PCFARM_RETURN_IF_ERROR(CheckShape(f->display_name(), e, t));
    w.tensors_[e.name] = std::move(t);
  }
  return w;
}

Result<ModelWeights> ModelWeights::FromGguf(const GgufFile& g, const ModelConfig& c) {
  ModelWeights w;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    std::string gname = GgufName(e.name);
    assert(!gname.empty());
    if (g.FindTensor(gname) == nullptr)
      return InvalidArgument(g.display_name() + ": missing tensor " + gname + " (" + e.name + ")");
    PCFARM_ASSIGN_OR_RETURN(HostTensor t, g.Tensor(gname));
    PCFARM_RETURN_IF_ERROR(CheckShape(g.display_name(), e, t).WithContext("tensor " + gname));
    if (e.name.find("self_attn.q_proj") != std::string::npos)
      t = UnpermuteRopeRows(t, c.num_attention_heads);
    else if (e.name.find("self_attn.k_proj") != std::string::npos)
      t = UnpermuteRopeRows(t, c.num_key_value_heads);
    w.tensors_[e.name] = std::move(t);
  }
  return w;
}

Result<ModelWeights> ModelWeights::FromTensors(std::map<std::string, HostTensor> tensors,
                                               const ModelConfig& c,
                                               const std::string& source) {
  ModelWeights w;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    auto it = tensors.find(e.name);
    if (it == tensors.end()) return InvalidArgument(source + ": missing tensor " + e.name);
    PCFARM_RETURN_IF_ERROR(CheckShape(source, e, it->second));
    w.tensors_[e.name] = std::move(it->second);
  }
  return w;
}

const HostTensor* ModelWeights::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const HostTensor& ModelWeights::Get(std::string_view name) const {
  const HostTensor* t = Find(name);
  assert(t != nullptr && "ModelWeights::Get of an absent tensor");
  return *t;
}

HostTensor UnpermuteRopeRows(const HostTensor& in, int64_t n_heads) {
  assert(!in.shape.empty() && n_heads > 0 && in.shape[0] % n_heads == 0);
  const int64_t rows = in.shape[0];
  const int64_t head_dim = rows / n_heads, half = head_dim / 2;
  assert(head_dim % 2 == 0);
  const size_t row_bytes = in.nbytes() / size_t(rows);
  auto buf = std::make_shared<std::vector<uint8_t>>(in.nbytes());
  const auto* src = static_cast<const uint8_t*>(in.data);
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t i = 0; i < half; ++i) {
        int64_t dst_row = h * head_dim + s * half + i;
        int64_t src_row = h * head_dim + 2 * i + s;
        std::memcpy(buf->data() + dst_row * row_bytes, src + src_row * row_bytes, row_bytes);
      }
  HostTensor out;
  out.dtype = in.dtype;
  out.shape = in.shape;
  out.data = buf->data();
  out.owner = buf;
  return out;
}

}  // namespace pcfarm
