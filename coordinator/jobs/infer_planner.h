// The `infer` job: a file of prompts continued by a model, split into
// shards of the `infer` task kind (tasks/kinds/llm_kinds.h).
//
// Job params (SubmitRequest.params, written by `pcfarm submit infer`):
//   "model":   {file name: blob hash, ...}   the model's files (required)
//   "adapter": {file name: blob hash, ...}   a PEFT adapter (optional)
//   "prompts_blob": blob hash of the prompts, JSONL, one line per prompt:
//              {"prompt": TEXT, "tokens": N}  (N: its prompt tokens, counted
//              by the CLI with the model's tokenizer; sizes the shards)
//   "prompts": the number of lines (checked against the blob)
//   "max_tokens" (default 64), "temperature", "top_k", "top_p", "seed":
//              as the infer kind; prompt i of the file samples with seed + i
//   "prompts_per_shard": 0 (default: from the token budget below) or 1..256
//   "model_parameters": the model's parameter count (for the budget)
//   "model_bytes": the model files' total size (what each shard needs of
//              device memory when "model_dims" is absent: an older job)
//   "model_dims": the model's shape and held weight bytes
//              (memory_estimate.h ModelDimsFromJson); each shard needs
//              InferShardMemoryBytes of its prompts
//   "quantize": "q8_0" | "q4_0" | "q4_k" | "q6_k" (optional): copied into every shard, whose
//              kind quantizes the base at load
// Shard k's params are the infer kind's, with the prompts of its slice, and
// "seed": seed + (index of its first prompt), "first": that index.
//
// Default shard count: the job's work, 2 * model_parameters * Σ (prompt
// tokens + max_tokens) FLOP, divided by kInferShardFlops (about 10-30 s of
// decode on a home PC), but no more shards than give each
// kInferMinPromptsPerShard prompts (each decode step reads every weight
// whatever the batch, so a small batch wastes steps: a 1-prompt tail shard
// decodes as long as a full one) and no fewer than keep each within
// kInferMaxPromptsPerShard (the KV cache of a shard grows with it). The
// prompts are cut, in file order, into slices of equal work; a slice is
// also cut where its params would pass kInferShardParamsBytes.
//
// The job's output (`pcfarm fetch`): JSONL in prompt order, one object per
// prompt: {"index", "prompt", "text", "tokens", "finish_reason", "worker"}.
// Its summary: {"shards", "prompts" (done), "tokens" (generated)}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pcfarm {

inline constexpr double kInferShardFlops = 5e11;
inline constexpr size_t kInferShardParamsBytes = 48 * 1024;
inline constexpr int kInferMaxPromptsPerShard = 256;
inline constexpr int kInferMinPromptsPerShard = 16;

struct PromptSlice {
  size_t first = 0;
  size_t count = 0;
};

// Splits prompts (their token counts and their params bytes) into shards:
// `prompts_per_shard` each when > 0 (still cut where the params bytes would
// pass kInferShardParamsBytes), else by the budget above. Every prompt is in
// exactly one slice, in order. REQUIRES: the vectors have equal sizes.
std::vector<PromptSlice> SplitPrompts(const std::vector<int64_t>& prompt_tokens,
                                      const std::vector<size_t>& prompt_bytes,
                                      int64_t max_tokens, int64_t model_parameters,
                                      int prompts_per_shard);

}  // namespace pcfarm
