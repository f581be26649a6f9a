// The `finetune` job: LoRA fine-tuning of a model on the farm, step by step
// (DESIGN.md §9), in shards of the `train` task kind (tasks/kinds/
// llm_kinds.h). An open-ended job (planner.h): each optimizer step (sync)
// or each DiLoCo round of H local steps (diloco) is one round of shards, and
// the coordinator applies it when all of them are accepted.
//
// Job params (SubmitRequest.params, written by `pcfarm submit finetune`):
//   "model":   {file name: blob hash, ...}   the base model's files
//   "adapter": {"adapter_config.json": H, "adapter_model.safetensors": H}
//              the LoRA adapter the job starts from (version 0: the CLI
//              makes it as `pcfarm local finetune` does, EnableLora(seed))
//   or, with "method": "full" (every weight in f32; no "adapter", "lora"
//   or "quantize"):
//   "weights": {"model.safetensors": H}  every weight as the job starts
//              from them (the CLI writes LlamaModel::TrainableParameters()
//              of the base in full mode with EncodeAdapterSafetensors); each
//              step writes the next version the same way, and the summary
//              keeps "weights" where a LoRA job keeps "adapter". Fetch gets
//              "method": "full" and "files": the base's files but its
//              weights, plus the version as model.safetensors (a Hugging
//              Face directory)
//   "data":    blob hash of the tokenized data (tasks/engine/token_data.h),
//              "examples": its number of sequences (checked)
//   "steps" (1..10^7), "batch" B (1..10^5; at most the usable sequences),
//   "micro_batch" M (1..B; default min(B, kFinetuneDefaultMicroBatch)),
//   "seed": the data order (BatchSampler, as local finetune)
//   "optimizer": {"lr", "beta1", "beta2", "eps", "weight_decay",
//                 "max_grad_norm"} (OptimizerConfig; defaults as local)
//   "mode": "sync" (default) | "diloco", with, for diloco only (refused
//   with sync): "local_steps" H (1..10000, default
//   kFinetuneDefaultLocalSteps; H · min(B, M) <= 100000), "outer_lr"
//   ((0, 10], default 0.7), "outer_momentum" ([0, 1), default 0.9);
//   "aggregate": "mean"
//   (default) | "trimmed-mean" | "median" | "centered-clip",
//   "compress": "none" (default) | "fp16" | "int8": how shards send their
//   gradients (tasks/aggregate/compress.h; fp16 and int8 through an
//   error-feedback stream per job on each worker) and, for LoRA, how the
//   versions after the first travel down (below), "model_bytes": the
//   model files' size, "quantize": "q8_0" | "q4_0" (optional; copied into
//   every shard: QLoRA over a base the train kind quantizes at load),
//   "model_dims" (memory_estimate.h), "trainable_parameters" (the LoRA
//   parameters) and "longest_sequence" (the data's longest, in tokens):
//   each shard needs TrainShardMemoryBytes(dims, trainable, lora.rank,
//   micro_batch · longest) of device memory; without "model_dims" (an
//   older job), "model_bytes"
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
// DiLoCo mode (Douillard et al. 2023): "steps" N stays the number of inner
// (local) AdamW steps; rounds R = ceil(N / H), the last one shorter when H
// does not divide N. Round r runs the job's inner steps t = (r-1)·H + 1 ..
// min(r·H, N); the global batch of step t is the one sync mode and local
// finetune use at step t (BatchSampler's t-th Next(B)), and replica k of
// the round's K = ceil(B / M) takes its k-th slice of M of every step's
// batch. Each replica is one shard (train kind "steps_examples": one list
// per local step) that starts from adapter version r - 1 and returns the
// pseudo-gradient Δ_k = θ_k - θ and its Σ w. The coordinator aggregates
// the Δ_k with weights Σ w as sync aggregates gradients (--aggregate: the
// weighted mean, or a robust rule of tasks/aggregate/aggregate.h), and takes
// one outer Nesterov-momentum SGD step with g = -aggregate
// (tasks/aggregate/outer_optimizer.h) from the stored momentum, giving
// version r; the adapter and the momentum (blob "outer", format POM1) are
// committed in the transaction that advances the job.
//   Inner state: every shard starts its local AdamW with fresh moments (the
// train kind resets them with the adapter). The paper keeps each replica's
// inner moments across rounds; here shards are not pinned to workers (a
// lost worker's shard goes to any other, workers come and go), so kept
// moments would travel as blobs of twice the adapter's size, down and up,
// each round, giving back most of the traffic DiLoCo saves, and a shard
// would stop being a pure function of its params (redundancy's Agree and
// a restart's identical rerun rely on that). The cost is the first few
// inner steps of each round taken with unwarmed moments.
//   Quorum: a round waits for all K shards (the default and, for now, the
// only quorum): every replica's slice is part of the data sequence that
// local finetune and sync mode use, so a round without one would train on
// other data. A lost worker's shard is leased again to another worker when
// its lease expires; workers that join mid-job take shards of the round in
// flight that nobody holds, and of the next rounds. A partial quorum (go on
// with the replicas in by a deadline) is future work.
//
// What shards download (issue 11, home links). The first round's shards
// of a LoRA job whose start adapter is exactly what EnableLora draws from
// the job's seed (InitialLoraValues; `pcfarm submit finetune` uploads that
// one, as `local finetune` starts from it) name "lora": {"rank", "alpha",
// "targets", "seed"} instead of "adapter": each worker draws the start
// itself and downloads nothing. Any other start goes as uploaded. With
// --compress fp16|int8, the next versions go as "adapter":
// {"adapter_config.json", "adapter_model.pcg"}, the version's values in
// the job's codec (one message of compress.h, canonical LoRA order), while
// the coordinator keeps the f32 version (the summary's "adapter", what
// fetch writes) and applies every step to it: the shards compute at the
// version rounded once (int8: at most half a block's scale per value, not
// accumulated, since each version is rounded afresh from the f32 one). The
// summary's "shard_version" is what the next round's shards name.
//
// The job's summary is its durable state as well as what status shows:
//   "step" (steps applied), "steps", "adapter" (the current version's
//   files), "optimizer" (blob of the AdamW state; after step 1), "loss"
//   (the last step's), "losses" (the last kFinetuneLossTrend), "tokens",
//   "examples" (counted so far), "round_first_shard" (the first shard of
//   the step in flight), "round_started_ms", "bytes_up", "bytes_down".
//   "mode" ("sync" | "diloco"); DiLoCo also "round" (rounds applied),
// "rounds" R, "local_steps" H, and "outer" (the blob of the outer momentum
// state, after round 1) instead of "optimizer"; its "step" counts inner
// steps done (H per round), so status and wait show progress in steps, and
// "loss"/"losses" are per round.
// Each applied step writes a job_rounds row: {"step", "loss", "tokens",
// "examples", "grad_norm", "clip_scale", "shards", "workers", "bytes_up",
// "bytes_down", "seconds"}: `pcfarm fetch` writes them as trainer_log.jsonl.
// Each DiLoCo round writes {"round", "step" (inner steps done after it),
// "local_steps" (its own), "loss" (the replicas' mean losses over their
// local steps, weighted by Σ w), "tokens", "examples" (B per inner step),
// "pseudo_grad_norm" (of the aggregate), "shards", "workers", "bytes_up",
// "bytes_down", "seconds"}.
#pragma once

#include <cstdint>

namespace pcfarm {

inline constexpr int64_t kFinetuneDefaultMicroBatch = 8;
// DiLoCo's local steps per round when the job does not say.
inline constexpr int64_t kFinetuneDefaultLocalSteps = 20;
inline constexpr int kFinetuneLossTrend = 20;
// The largest adapter file and data blob the coordinator reads.
inline constexpr int64_t kFinetuneMaxAdapterBytes = int64_t(2) << 30;
inline constexpr int64_t kFinetuneMaxDataBytes = int64_t(1) << 30;

}  // namespace pcfarm
