// ModelConfig: the hyper-parameters of a llama-family decoder.
//
// Built from a Hugging Face config.json (LlamaForCausalLM,
// MistralForCausalLM, Qwen2ForCausalLM; plus generation_config.json when
// present) or from a GGUF file's llama.* keys. Anything else, or a missing or
// inconsistent field, is an InvalidArgument naming the file and the field.
//
// Thread-safety: a plain value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace pcfarm {

class GgufFile;

struct RopeScaling {
  std::string type;  // "" (none), "llama3" or "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // explicit, or hidden_size / num_attention_heads
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Per-frequency divisors from a GGUF rope_freqs tensor (llama3 files carry
  // their scaling this way); empty otherwise. Size head_dim / 2 when set.
  std::vector<float> rope_freq_factors;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  int64_t bos_token_id = -1;    // -1 when unknown
  std::vector<int64_t> eos_token_ids;
  // Sampling defaults from generation_config.json (0 when not given).
  double default_temperature = 0;
  double default_top_p = 0;
  int64_t default_top_k = 0;
};

// Parses config.json text; `display_name` names it in errors.
Result<ModelConfig> ParseHfConfig(const std::string& json_text,
                                  const std::string& display_name);

// Merges generation_config.json text (eos ids, bos id, sampling defaults)
// into `config`.
Status MergeGenerationConfig(const std::string& json_text,
                             const std::string& display_name, ModelConfig* config);

// Reads dir/config.json and, when present, dir/generation_config.json.
Result<ModelConfig> LoadHfConfig(const std::string& dir);

// Reads the llama.* keys of a GGUF file (general.architecture must be
// "llama"). tie_word_embeddings is set when the file has no "output" tensor;
// rope_freq_factors from its "rope_freqs.weight" tensor when present.
Result<ModelConfig> ConfigFromGguf(const GgufFile& gguf);

// config.json text for `config` (LlamaForCausalLM-style keys).
std::string ToHfConfigJson(const ModelConfig& config);

// The head_dim / 2 RoPE inverse frequencies theta^(-2i/head_dim), with the
// llama3 or linear scaling, or the GGUF freq factors, applied.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace pcfarm
