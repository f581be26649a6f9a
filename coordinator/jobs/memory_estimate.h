// How much device memory one shard of an LLM job needs: an estimate of its
// working set from the model's shape, which the planners put into
// ShardSpec::needs_memory_bytes (the scheduler leases a shard only to a
// worker with at least that much). The formulas and what they leave out are
// in docs/architecture.md, "Memory a shard needs".
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"

namespace pcfarm {

// The model's shape as the CLI read it (config.json or GGUF metadata), and
// the bytes of its base weights as a worker holds them: after
// `--quantize`, in their stored type (F32/F16/BF16/quantized blocks),
// embeddings, norms and lm_head included, LoRA not.
struct ModelDims {
  int64_t hidden = 0;
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate = 0;
  int64_t vocab = 0;
  int64_t weight_bytes = 0;
};

// {"hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate",
//  "vocab", "weight_bytes"}: the "model_dims" object of infer and finetune
// job params.
nlohmann::json ModelDimsToJson(const ModelDims& d);
// The inverse. InvalidArgument naming the field that is missing, not an
// integer, or out of range (every size 1..2^31, weight_bytes 0..2^50).
Result<ModelDims> ModelDimsFromJson(const nlohmann::json& j);

// One infer shard: `prompts` sequences decoded together, `prompt_tokens`
// the sum of their prompt tokens (the prefill runs them all at once), and
// `context` the longest prompt plus max_tokens (the KV cache's length).
//   weights + KV cache 2·layers·prompts·context·kv_heads·head_dim·4
//   + prefill activations 4·prompt_tokens·(6·hidden + 2·heads·head_dim
//                          + 2·kv_heads·head_dim + 3·intermediate)
//   + logits 4·prompts·vocab
// REQUIRES: arguments >= 0.
int64_t InferShardMemoryBytes(const ModelDims& d, int64_t prompts, int64_t prompt_tokens,
                              int64_t context);

// One LoRA train shard over `tokens` tokens at once (micro-batch × the
// longest sequence), with `trainable` LoRA parameters of rank `lora_rank`:
//   weights + LoRA 16·trainable (value, gradient, AdamW's two moments; f32)
//   + activations 4·tokens·((layers + 1)·per_layer + hidden + 2·vocab),
//     per_layer = 4·hidden + 2·heads·head_dim + 2·kv_heads·head_dim + heads
//                 + 3·intermediate + 7·lora_rank
//   (every layer's activations kept for backward, one more layer's worth of
//   transients, the final hidden states, the logits and their gradient).
// REQUIRES: arguments >= 0.
int64_t TrainShardMemoryBytes(const ModelDims& d, int64_t trainable, int64_t lora_rank,
                              int64_t tokens);

}  // namespace pcfarm
