// The `finetune` job: LoRA fine-tuning of a model on the farm, step by step
// (DESIGN.md §9), in shards of the `train` task kind (tasks/kinds/
// llm_kinds.h). An open-ended job (planner.h): each optimizer step is one
// round of shards, and the coordinator applies the step when all of them
// are accepted.
//
// Job params (SubmitRequest.params, written by `pcfarm submit finetune`):
//   "model":   {file name: blob hash, ...}   the base model's files
//   "adapter": {"adapter_config.json": H, "adapter_model.safetensors": H}
//              the LoRA adapter the job starts from (version 0: the CLI
//              makes it as `pcfarm local finetune` does, EnableLora(seed))
//   "data":    blob hash of the tokenized data (tasks/engine/token_data.h),
//              "examples": its number of sequences (checked)
//   "steps" (1..10^7), "batch" B (1..10^5; at most the usable sequences),
//   "micro_batch" M (1..B; default min(B, kFinetuneDefaultMicroBatch)),
//   "seed": the data order (BatchSampler, as local finetune)
//   "optimizer": {"lr", "beta1", "beta2", "eps", "weight_decay",
//                 "max_grad_norm"} (OptimizerConfig; defaults as local)
//   "mode": "sync" (the only mode built so far), "aggregate": "mean"
//   (default) | "trimmed-mean" | "median" | "centered-clip",
//   "compress": "none" (default) | "fp16" | "int8": how shards send their
//   gradients (tasks/aggregate/compress.h; fp16 and int8 through an
//   error-feedback stream per job on each worker), "model_bytes": the
//   model files' size
//
// Sync mode, step s (1-based): the B sequences BatchSampler(usable, seed)
// gives at its s-th Next(B), in that order, cut into micro-batches of M;
// one shard each, naming the adapter version of step s - 1. Each returns
// the weighted SUM of its gradients and Σ w. The coordinator adds them
// (mean: Σ sums / Σ w; the robust rules aggregate the per-shard means
// x_i = sum_i / w_i with weights w_i), then clips and takes one AdamW step
// with the engine's optimizer (tasks/engine/optimizer.h) on the CPU, and
// stores the new adapter and the optimizer state as blobs: the same
// arithmetic as `pcfarm local finetune`, up to the order of floating-point
// sums.
//
// The job's summary is its durable state as well as what status shows:
//   "step" (steps applied), "steps", "adapter" (the current version's
//   files), "optimizer" (blob of the AdamW state; after step 1), "loss"
//   (the last step's), "losses" (the last kFinetuneLossTrend), "tokens",
//   "examples" (counted so far), "round_first_shard" (the first shard of
//   the step in flight), "round_started_ms", "bytes_up", "bytes_down".
// Each applied step writes a job_rounds row: {"step", "loss", "tokens",
// "examples", "grad_norm", "clip_scale", "shards", "workers", "bytes_up",
// "bytes_down", "seconds"}: `pcfarm fetch` writes them as trainer_log.jsonl.
#pragma once

#include <cstdint>

namespace pcfarm {

inline constexpr int64_t kFinetuneDefaultMicroBatch = 8;
inline constexpr int kFinetuneLossTrend = 20;
// The largest adapter file and data blob the coordinator reads.
inline constexpr int64_t kFinetuneMaxAdapterBytes = int64_t(2) << 30;
inline constexpr int64_t kFinetuneMaxDataBytes = int64_t(1) << 30;

}  // namespace pcfarm
