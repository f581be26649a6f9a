#include "tasks/model/model_config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/model/gguf.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// Reads an optional integer field; error when present with another type.
Status ReadInt(const json& j, const std::string& file, const char* key,
               int64_t* out, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return InvalidArgument(file + ": missing field " + key);
    return Status::Ok();
  }
  if (!it->is_number_integer())
    return InvalidArgument(file + ": field " + key + " is not an integer");
  *out = it->get<int64_t>();
  return Status::Ok();
}

Status ReadDouble(const json& j, const std::string& file, const char* key,
                  double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  if (!it->is_number()) return InvalidArgument(file + ": field " + key + " is not a number");
  *out = it->get<double>();
  return Status::Ok();
}

// eos_token_id may be an integer or a list of integers.
Status ReadIdList(const json& j, const std::string& file, const char* key,
                  std::vector<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return Status::Ok();
  out->clear();
  if (it->is_number_integer()) {
    out->push_back(it->get<int64_t>());
    return Status::Ok();
  }
  if (!it->is_array()) return InvalidArgument(file + ": field " + key + " is not an id or a list of ids");
  for (auto& v : *it) {
    if (!v.is_number_integer()) return InvalidArgument(file + ": field " + key + " holds a non-integer");
    out->push_back(v.get<int64_t>());
  }
  return Status::Ok();
}

Status Validate(const ModelConfig& c, const std::string& file) {
  auto positive = [&](int64_t v, const char* name) -> Status {
    if (v <= 0 || v > (int64_t(1) << 31))
      return InvalidArgument(file + ": " + name + " = " + std::to_string(v) +
                             " is out of range");
    return Status::Ok();
  };
  PCFARM_RETURN_IF_ERROR(positive(c.hidden_size, "hidden_size"));
  PCFARM_RETURN_IF_ERROR(positive(c.intermediate_size, "intermediate_size"));
  PCFARM_RETURN_IF_ERROR(positive(c.num_hidden_layers, "num_hidden_layers"));
  PCFARM_RETURN_IF_ERROR(positive(c.num_attention_heads, "num_attention_heads"));
  PCFARM_RETURN_IF_ERROR(positive(c.num_key_value_heads, "num_key_value_heads"));
  PCFARM_RETURN_IF_ERROR(positive(c.head_dim, "head_dim"));
  PCFARM_RETURN_IF_ERROR(positive(c.vocab_size, "vocab_size"));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return InvalidArgument(file + ": num_attention_heads " +
                           std::to_string(c.num_attention_heads) +
                           " is not a multiple of num_key_value_heads " +
                           std::to_string(c.num_key_value_heads));
  if (c.head_dim % 2 != 0)
    return InvalidArgument(file + ": head_dim " + std::to_string(c.head_dim) + " is odd");
  if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0))
    return InvalidArgument(file + ": rms_norm_eps and rope_theta must be positive");
  if (!c.rope_freq_factors.empty() &&
      int64_t(c.rope_freq_factors.size()) != c.head_dim / 2)
    return InvalidArgument(file + ": rope_freqs has " +
                           std::to_string(c.rope_freq_factors.size()) +
                           " entries, expected head_dim/2 = " +
                           std::to_string(c.head_dim / 2));
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> ParseHfConfig(const std::string& text, const std::string& file) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(file + ": not a JSON object");
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string())
    return InvalidArgument(file + ": missing architectures");
  c.architecture = (*arch)[0].get<std::string>();
  if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM" &&
      c.architecture != "Qwen2ForCausalLM")
    return InvalidArgument(file + ": architecture " + c.architecture +
                           " is not supported (LlamaForCausalLM, MistralForCausalLM, "
                           "Qwen2ForCausalLM)");
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "hidden_size", &c.hidden_size, true));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "intermediate_size", &c.intermediate_size, true));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "num_hidden_layers", &c.num_hidden_layers, true));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "num_attention_heads", &c.num_attention_heads, true));
  c.num_key_value_heads = c.num_attention_heads;
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "num_key_value_heads", &c.num_key_value_heads, false));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "vocab_size", &c.vocab_size, true));
  c.max_position_embeddings = 2048;
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "max_position_embeddings", &c.max_position_embeddings, false));
  if (c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "head_dim", &c.head_dim, false));
  PCFARM_RETURN_IF_ERROR(ReadDouble(j, file, "rms_norm_eps", &c.rms_norm_eps));
  PCFARM_RETURN_IF_ERROR(ReadDouble(j, file, "rope_theta", &c.rope_theta));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "bos_token_id", &c.bos_token_id, false));
  PCFARM_RETURN_IF_ERROR(ReadIdList(j, file, "eos_token_id", &c.eos_token_ids));
  auto boolean = [&](const char* key, bool* out) -> Status {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return Status::Ok();
    if (!it->is_boolean()) return InvalidArgument(file + ": field " + key + " is not a boolean");
    *out = it->get<bool>();
    return Status::Ok();
  };
  c.attention_bias = c.architecture == "Qwen2ForCausalLM";
  PCFARM_RETURN_IF_ERROR(boolean("attention_bias", &c.attention_bias));
  PCFARM_RETURN_IF_ERROR(boolean("tie_word_embeddings", &c.tie_word_embeddings));
  auto rs = j.find("rope_scaling");
  if (rs != j.end() && !rs->is_null()) {
    if (!rs->is_object()) return InvalidArgument(file + ": rope_scaling is not an object");
    std::string type;
    for (const char* key : {"rope_type", "type"}) {
      auto t = rs->find(key);
      if (t != rs->end() && t->is_string()) { type = t->get<std::string>(); break; }
    }
    if (type == "llama3" || type == "linear") {
      c.rope_scaling.type = type;
      std::string f = file + ": rope_scaling";
      PCFARM_RETURN_IF_ERROR(ReadDouble(*rs, f, "factor", &c.rope_scaling.factor));
      PCFARM_RETURN_IF_ERROR(ReadDouble(*rs, f, "low_freq_factor", &c.rope_scaling.low_freq_factor));
      PCFARM_RETURN_IF_ERROR(ReadDouble(*rs, f, "high_freq_factor", &c.rope_scaling.high_freq_factor));
      PCFARM_RETURN_IF_ERROR(ReadInt(*rs, f, "original_max_position_embeddings",
                                     &c.rope_scaling.original_max_position_embeddings, false));
      if (!(c.rope_scaling.factor > 0) ||
          !(c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor) ||
          !(c.rope_scaling.low_freq_factor > 0) ||
          c.rope_scaling.original_max_position_embeddings <= 0)
        return InvalidArgument(f + ": factors out of range");
    } else if (type != "default" && !type.empty()) {
      return InvalidArgument(file + ": rope_scaling type " + type + " is not supported (llama3, linear)");
    }
  }
  PCFARM_RETURN_IF_ERROR(Validate(c, file));
  return c;
}

Status MergeGenerationConfig(const std::string& text, const std::string& file,
                             ModelConfig* c) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(file + ": not a JSON object");
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "bos_token_id", &c->bos_token_id, false));
  PCFARM_RETURN_IF_ERROR(ReadIdList(j, file, "eos_token_id", &c->eos_token_ids));
  PCFARM_RETURN_IF_ERROR(ReadDouble(j, file, "temperature", &c->default_temperature));
  PCFARM_RETURN_IF_ERROR(ReadDouble(j, file, "top_p", &c->default_top_p));
  PCFARM_RETURN_IF_ERROR(ReadInt(j, file, "top_k", &c->default_top_k, false));
  return Status::Ok();
}

Result<ModelConfig> LoadHfConfig(const std::string& dir) {
  std::string path = (std::filesystem::path(dir) / "config.json").string();
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 16 << 20));
  PCFARM_ASSIGN_OR_RETURN(ModelConfig c, ParseHfConfig(text, path));
  std::string gen = (std::filesystem::path(dir) / "generation_config.json").string();
  auto gtext = ReadFile(gen, 16 << 20);
  if (gtext.ok()) {
    PCFARM_RETURN_IF_ERROR(MergeGenerationConfig(*gtext, gen, &c));
  } else if (gtext.status().code() != StatusCode::kNotFound) {
    return gtext.status();
  }
  return c;
}

Result<ModelConfig> ConfigFromGguf(const GgufFile& g) {
  const std::string& file = g.display_name();
  PCFARM_ASSIGN_OR_RETURN(std::string arch, g.GetString("general.architecture"));
  if (arch != "llama")
    return InvalidArgument(file + ": general.architecture is " + arch +
                           "; only llama is supported");
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  auto req = [&](const char* key, int64_t* out) -> Status {
    auto r = g.GetInt(key);
    if (!r.ok()) return r.status();
    *out = *r;
    return Status::Ok();
  };
  PCFARM_RETURN_IF_ERROR(req("llama.embedding_length", &c.hidden_size));
  PCFARM_RETURN_IF_ERROR(req("llama.feed_forward_length", &c.intermediate_size));
  PCFARM_RETURN_IF_ERROR(req("llama.block_count", &c.num_hidden_layers));
  PCFARM_RETURN_IF_ERROR(req("llama.attention.head_count", &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  if (g.Find("llama.attention.head_count_kv"))
    PCFARM_RETURN_IF_ERROR(req("llama.attention.head_count_kv", &c.num_key_value_heads));
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  if (g.Find("llama.attention.key_length"))
    PCFARM_RETURN_IF_ERROR(req("llama.attention.key_length", &c.head_dim));
  c.max_position_embeddings = 2048;
  if (g.Find("llama.context_length"))
    PCFARM_RETURN_IF_ERROR(req("llama.context_length", &c.max_position_embeddings));
  if (g.Find("llama.rope.freq_base")) {
    PCFARM_ASSIGN_OR_RETURN(c.rope_theta, g.GetFloat("llama.rope.freq_base"));
  }
  if (g.Find("llama.attention.layer_norm_rms_epsilon")) {
    PCFARM_ASSIGN_OR_RETURN(c.rms_norm_eps, g.GetFloat("llama.attention.layer_norm_rms_epsilon"));
  }
  if (g.Find("llama.rope.scaling.type")) {
    PCFARM_ASSIGN_OR_RETURN(std::string t, g.GetString("llama.rope.scaling.type"));
    if (t == "linear") {
      c.rope_scaling.type = "linear";
      PCFARM_ASSIGN_OR_RETURN(c.rope_scaling.factor, g.GetFloat("llama.rope.scaling.factor"));
    } else if (t != "none") {
      return InvalidArgument(file + ": llama.rope.scaling.type " + t + " is not supported");
    }
  }
  if (g.Find("llama.vocab_size")) {
    PCFARM_RETURN_IF_ERROR(req("llama.vocab_size", &c.vocab_size));
  } else if (const GgufValue* toks = g.Find("tokenizer.ggml.tokens")) {
    c.vocab_size = int64_t(toks->array_size);
  } else if (const GgufTensorInfo* emb = g.FindTensor("token_embd.weight");
             emb && emb->dims.size() == 2) {
    c.vocab_size = int64_t(emb->dims[1]);
  }
  if (g.Find("tokenizer.ggml.bos_token_id"))
    PCFARM_RETURN_IF_ERROR(req("tokenizer.ggml.bos_token_id", &c.bos_token_id));
  if (g.Find("tokenizer.ggml.eos_token_id")) {
    int64_t eos;
    PCFARM_RETURN_IF_ERROR(req("tokenizer.ggml.eos_token_id", &eos));
    c.eos_token_ids = {eos};
  }
  c.tie_word_embeddings = g.FindTensor("output.weight") == nullptr;
  if (g.FindTensor("rope_freqs.weight")) {
    PCFARM_ASSIGN_OR_RETURN(HostTensor t, g.Tensor("rope_freqs.weight"));
    c.rope_freq_factors = t.ToF32();
  }
  PCFARM_RETURN_IF_ERROR(Validate(c, file));
  return c;
}

std::string ToHfConfigJson(const ModelConfig& c) {
  json j = {{"architectures", {c.architecture}},
            {"model_type", c.architecture == "Qwen2ForCausalLM"     ? "qwen2"
                           : c.architecture == "MistralForCausalLM" ? "mistral"
                                                                    : "llama"},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.num_key_value_heads},
            {"head_dim", c.head_dim},
            {"vocab_size", c.vocab_size},
            {"max_position_embeddings", c.max_position_embeddings},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"attention_bias", c.attention_bias},
            {"hidden_act", "silu"},
            {"torch_dtype", "float32"}};
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (!c.rope_scaling.type.empty()) {
    j["rope_scaling"] = {{"rope_type", c.rope_scaling.type}, {"factor", c.rope_scaling.factor}};
    if (c.rope_scaling.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = c.rope_scaling.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = c.rope_scaling.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] =
          c.rope_scaling.original_max_position_embeddings;
    }
  }
  return j.dump(2) + "\n";
}

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> out(half);
  const RopeScaling& s = c.rope_scaling;
  for (int64_t i = 0; i < half; ++i) {
    double inv = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(c.head_dim));
    if (s.type == "linear") {
      inv /= s.factor;
    } else if (s.type == "llama3") {
      // transformers' _compute_llama3_parameters.
      double old_ctx = double(s.original_max_position_embeddings);
      double low_wavelen = old_ctx / s.low_freq_factor;
      double high_wavelen = old_ctx / s.high_freq_factor;
      double wavelen = 2 * M_PI / inv;
      if (wavelen > low_wavelen) {
        inv /= s.factor;
      } else if (wavelen >= high_wavelen) {
        double smooth = (old_ctx / wavelen - s.low_freq_factor) /
                        (s.high_freq_factor - s.low_freq_factor);
        inv = (1 - smooth) * inv / s.factor + smooth * inv;
      }
    }
    if (!c.rope_freq_factors.empty()) inv /= c.rope_freq_factors[i];
    out[i] = float(inv);
  }
  return out;
}

}  // namespace pcfarm
