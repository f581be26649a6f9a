// ModelWeights: the tensors of a llama-family model by canonical name.
//
// Names are Hugging Face's: model.embed_tokens.weight,
// model.layers.{i}.self_attn.{q,k,v,o}_proj.weight (+ q/k/v .bias when
// config.attention_bias), model.layers.{i}.mlp.{gate,up,down}_proj.weight,
// model.layers.{i}.{input,post_attention}_layernorm.weight, model.norm.weight,
// and lm_head.weight (absent when config.tie_word_embeddings). Every one of
// them is present with the shape the config implies, or loading fails with a
// message such as "model.safetensors: model.layers.3.mlp.up_proj.weight has
// shape [64,32], expected [128,32]". Other tensors in the files are ignored.
//
// Tensors are views into the mmap'ed files where the stored layout is the
// one used (F32/F16/BF16 safetensors, F32/F16/BF16 GGUF tensors other than
// q/k, quantized ones included); GGUF q/k weights are copied with their rows
// un-permuted from GGUF's interleaved RoPE order to HF's rotate-half order
// (whole rows, so quantized blocks are moved as they are).
//
// Thread-safety: immutable after loading.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/model/host_tensor.h"
#include "tasks/model/model_config.h"

namespace pcfarm {

class GgufFile;

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor a model with `config` needs, with its shape.
std::vector<ExpectedTensor> ExpectedTensors(const ModelConfig& config);

class ModelWeights {
 public:
  // From dir/model.safetensors, or the files named by
  // dir/model.safetensors.index.json's weight_map.
  static Result<ModelWeights> LoadHfDir(const std::string& dir, const ModelConfig& config);
  // From a parsed GGUF file (tensor names mapped, q/k un-permuted).
  static Result<ModelWeights> FromGguf(const GgufFile& gguf, const ModelConfig& config);
  // From tensors built in memory; `source` names them in errors.
  static Result<ModelWeights> FromTensors(std::map<std::string, HostTensor> tensors,
                                          const ModelConfig& config,
                                          const std::string& source);

  // Null when absent.
  const HostTensor* Find(std::string_view name) const;
  // REQUIRES: `name` is present (every ExpectedTensors name is).
  const HostTensor& Get(std::string_view name) const;
  const std::map<std::string, HostTensor, std::less<>>& tensors() const { return tensors_; }

 private:
  std::map<std::string, HostTensor, std::less<>> tensors_;
};

// Reorders the rows of a GGUF q or k weight (or bias) from llama.cpp's
// interleaved RoPE layout to HF's rotate-half layout: within each of
// `n_heads` heads of head_dim rows, HF row s*head_dim/2 + i comes from GGUF
// row 2*i + s. REQUIRES: shape[0] == n_heads * head_dim, head_dim even.
HostTensor UnpermuteRopeRows(const HostTensor& gguf_tensor, int64_t n_heads);

}  // namespace pcfarm
