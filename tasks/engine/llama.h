// LlamaModel: a llama-family decoder (Llama 2/3, TinyLlama, SmolLM, Mistral,
// Qwen2) on a compute Backend: forward, masked cross-entropy, full backward,
// LoRA or full-parameter training with AdamW, batched generation with a KV
// cache, and PEFT LoRA adapters.
//
// Architecture (Hugging Face LlamaForCausalLM): x = embed(tokens); per layer
//   h = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),
//       n1 = rmsnorm(x, input_layernorm)
//   x = h + down_proj(silu(gate_proj(n2)) · up_proj(n2)),
//       n2 = rmsnorm(h, post_attention_layernorm)
// logits = rmsnorm(x, model.norm) · lm_headᵀ (embed_tokens when tied).
// RoPE is rotate-half with RopeInverseFrequencies(config) (llama3 / linear
// scaling applied there); attention is causal grouped-query; q/k/v carry a
// bias when config.attention_bias (Qwen2).
//
// Sequences of different lengths are packed back to back (no padding).
//
// Training targets. A TokenSequence's weights follow Hugging Face's labels:
// weights[i] weights the loss of predicting tokens[i] from tokens[0..i-1];
// weights[0] is never used (nothing predicts the first token); weight 0 masks
// a token (e.g. the prompt). The loss is Σ w·(−log p) / Σ w over the batch.
//
// Trainable parameters and the flat buffers (ONE f32 vector each for
// gradients and for parameters; the layout is TrainableParameters(), a
// concatenation of row-major tensors at increasing offsets):
//   * LoRA: for layer 0..L-1, for each enabled target in the canonical order
//     q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj:
//     lora_A [r, in] then lora_B [out, r], named with PEFT's names
//     ("base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight").
//     ΔW = B·A·(alpha/r) (PEFT, use_rslora false). A is initialised like
//     PEFT's kaiming_uniform_(a=√5): uniform in [−1/√in, 1/√in), drawn from
//     std::mt19937_64(seed) (53 high bits → [0,1)) in layout order; B is zero.
//   * Full: every tensor of ExpectedTensors(config) (tasks/model/
//     model_weights.h) in that order, under its Hugging Face name; weights
//     are then held in f32 on the device.
//
// Gradient accumulation: AccumulateGradients adds ∂(Σ w·loss)/∂θ of each
// micro-batch and the batch's Σ w into the accumulator; ExportGradients
// returns the accumulated MEAN gradient (sum / Σ w). Step / ApplyGradients
// clip the mean gradient to max_grad_norm (global L2 norm over all trainable
// tensors, scale = max/(norm+1e-6) when norm > max, as torch's
// clip_grad_norm_) and take one AdamW step (decoupled weight decay, bias
// correction with a step counter that starts at 1): ClipAndStepAdamW in
// tasks/engine/optimizer.h, which FlatAdamW runs without a model.
//
// Ownership: the model keeps a pointer to `backend`, which must outlive it.
// Host weights are copied to the device during Create, except on a backend
// that can use host memory (the CPU: Backend::WrapHostBytes), where the
// model's tensors are read-only views of them (for a GGUF or safetensors
// file, of its memory map) and keep them alive.
// Thread-safety: one thread at a time (as the Backend).
#pragma once

#include <cstdint>
#include <map>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "tasks/backend/backend.h"
#include "tasks/engine/sampling.h"
#include "tasks/model/model_config.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {

struct LlamaOptions {
  // Keep F16/BF16 and quantized (Q8_0/Q4_0/Q4_K/Q6_K) weights in their
  // storage type on the device where the backend holds that type (the
  // backend converts inside each op); false converts every weight to f32
  // (the dequantized reference path). Full-parameter training always
  // converts to f32; LoRA trains over the weights as they are held.
  bool keep_half_weights = true;
  // QLoRA: quantize the linear projections (q/k/v/o_proj, gate/up/down_proj
  // of every layer) to this block format while loading, with the reference
  // quantizer of tasks/backend/ggml_quants.h (kQ8_0, kQ4_0, kQ4_K or kQ6_K;
  // kF32: keep them as loaded). Embeddings, norms, biases and lm_head keep
  // their loaded type. A projection whose rows are not whole blocks (32
  // values, 256 for the K-quants: an input size like 688) stays as loaded
  // too, and is listed by LlamaModel::UnquantizedProjections(). Create
  // fails with InvalidArgument for another type, a projection that is
  // already quantized (a quantized GGUF: load it as it is), or a weight
  // beyond the f16 scale's range (|x| > 65504·127 for Q8_0, 65504·8 for
  // Q4_0, 65504·63 for Q4_K, 65504·127·31 for Q6_K) or not finite. Where the backend cannot hold the type
  // (or !keep_half_weights) the quantized values are dequantized to f32, so
  // every backend computes the same function. A model with quantized
  // projections trains LoRA adapters only (EnableFullTraining refuses).
  StorageType quantize = StorageType::kF32;
};

// "q8_0" -> kQ8_0, "q4_0" -> kQ4_0, "q4_k" -> kQ4_K, "q6_k" -> kQ6_K
// (case-insensitive); "" and "none" -> kF32. InvalidArgument naming the
// accepted values otherwise.
Result<StorageType> ParseWeightQuantization(const std::string& name);

// The projections LoRA may target, in canonical (layout) order.
inline const std::vector<std::string>& LoraTargetOrder() {
  static const std::vector<std::string> kOrder = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
  return kOrder;
}

struct LoraConfig {
  int64_t rank = 16;
  double alpha = 32;
  // Any non-empty subset of LoraTargetOrder(), any order, no duplicates.
  std::vector<std::string> target_modules = {"q_proj", "k_proj", "v_proj", "o_proj"};
  uint64_t seed = 0;  // for lora_A's initialisation
};

enum class TrainMode { kNone, kLora, kFull };

struct TokenSequence {
  std::vector<int32_t> tokens;  // >= 1 token, each in [0, vocab_size)
  // Empty: weight 1 for every token after the first. Otherwise
  // tokens.size() entries, each finite and >= 0 (weights[0] ignored).
  std::vector<float> weights;
};

struct ParameterInfo {
  std::string name;            // PEFT name (LoRA) or HF name (full)
  std::vector<int64_t> shape;  // row-major
  int64_t offset = 0;          // in the flat buffer, in floats
  int64_t numel = 0;
};

struct OptimizerConfig {
  float lr = 1e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float max_grad_norm = 1.0f;  // <= 0: no clipping
};

struct StepStats {
  double grad_norm = 0;    // of the mean gradient, before clipping
  double clip_scale = 1;   // the factor the gradient was multiplied by
  int64_t step = 0;        // the AdamW step just taken (1-based)
};

// What a generated sequence stopped on.
enum class FinishReason { kStop, kLength };

struct GenerationRequest {
  std::vector<int32_t> prompt;  // >= 1 token
  uint64_t seed = 0;            // the sampling stream of this sequence
};

struct Generation {
  // New tokens only; a stop id that ended generation is included.
  std::vector<int32_t> tokens;
  // log softmax of the RAW logits (temperature 1, before top-k/top-p) at
  // each chosen token.
  std::vector<float> logprobs;
  FinishReason finish = FinishReason::kLength;
};

struct GenerationConfig {
  SamplingConfig sampling;       // temperature 0 = greedy
  int64_t max_new_tokens = 64;   // >= 0
  // Generation of a sequence stops after it emits one of these; empty
  // uses config.eos_token_ids.
  std::vector<int32_t> stop_ids;
  // Called before each decode step; true stops Generate with kCancelled.
  // The worker's pause waits inside it (RunContext::CheckPoint). May be empty.
  std::function<bool()> check_point;
};

class LlamaModel {
 public:
  // Uploads `weights` (which must match `config`, as ModelWeights
  // guarantees) to `backend`. REQUIRES: backend outlives the model.
  static Result<std::unique_ptr<LlamaModel>> Create(const ModelConfig& config,
                                                    const ModelWeights& weights,
                                                    Backend* backend,
                                                    const LlamaOptions& options = {});
  // LoadModel(path) (an HF directory or a .gguf file), then Create.
  static Result<std::unique_ptr<LlamaModel>> Load(const std::string& path, Backend* backend,
                                                  const LlamaOptions& options = {});

  const ModelConfig& config() const { return config_; }
  // The projections LlamaOptions::quantize left as loaded (rows that are not
  // whole blocks), by HF name; empty without quantize.
  const std::vector<std::string>& UnquantizedProjections() const { return unquantized_; }
  // The bytes of the base weights as the backend holds them (embeddings,
  // norms, projections after LlamaOptions::quantize, biases, lm_head unless
  // tied); LoRA adapters not included.
  int64_t WeightBytes() const;
  Backend* backend() const { return backend_; }

  // ---- inference ------------------------------------------------------------

  // Logits of one sequence: tokens.size() rows of vocab_size, row-major.
  Result<std::vector<float>> Logits(std::span<const int32_t> tokens);
  // Logits of several sequences packed: Σ len rows (last_only: one row per
  // sequence, its last token's), row-major [rows, vocab_size].
  Result<std::vector<float>> BatchLogits(const std::vector<std::vector<int32_t>>& sequences,
                                         bool last_only = false);
  // The masked cross-entropy of a batch, no gradients. InvalidArgument on a
  // bad token id, weight or empty sequence.
  Result<CrossEntropySums> Loss(const std::vector<TokenSequence>& batch);

  // Greedy or sampled continuations of every request, decoded together (one
  // prefill of all prompts into a KV cache, then one token per live sequence
  // per step). Sequence i draws its k-th sampled token from
  // CounterUniform(requests[i].seed, k), so its tokens do not depend on the
  // batch it is in.
  Result<std::vector<Generation>> Generate(const std::vector<GenerationRequest>& requests,
                                           const GenerationConfig& config);
  // The ids Generate stops a sequence after: config.stop_ids, or the model
  // config's eos_token_ids when that is empty.
  std::vector<int32_t> StopIds(const GenerationConfig& config) const;

  // Teacher forcing: the logits Generate would have sampled each token of
  // continuations[s] from, had it produced them after prompts[s], from one
  // forward pass over every prompt + continuation (packed as BatchLogits
  // packs them, without a KV cache; a continuation's last token is not fed).
  // Calls row(s, k, logits) for every continuation token k of every
  // sequence s, s then k increasing, with vocab_size floats valid during the
  // call; rows reach the host in chunks of at most
  // max(1, kTeacherForcedChunkFloats / vocab_size). A non-OK status from
  // `row` ends the pass and is returned. Sequences with an empty
  // continuation are not run. InvalidArgument on an empty prompt, a token
  // outside [0, vocab_size) or prompts.size() != continuations.size().
  static constexpr int64_t kTeacherForcedChunkFloats = int64_t(1) << 24;
  using LogitsRowFn = std::function<Status(size_t s, size_t k, std::span<const float> logits)>;
  Status TeacherForcedLogits(const std::vector<std::vector<int32_t>>& prompts,
                             const std::vector<std::vector<int32_t>>& continuations,
                             const LogitsRowFn& row);

  // ---- training -------------------------------------------------------------

  // Adds fresh LoRA adapters (A random, B zero) on `lora.target_modules` of
  // every layer and makes them the trainable parameters; resets gradients and
  // optimizer state. FailedPrecondition after EnableFullTraining.
  Status EnableLora(const LoraConfig& lora);
  // Makes every weight trainable (converted to f32). FailedPrecondition
  // after EnableLora, and when a projection is held quantized (a quantized
  // GGUF or LlamaOptions::quantize): a quantized base trains LoRA only.
  Status EnableFullTraining();
  TrainMode train_mode() const { return mode_; }
  const LoraConfig& lora_config() const { return lora_; }

  // The flat layout (see the top of this file); empty when kNone.
  const std::vector<ParameterInfo>& TrainableParameters() const { return param_info_; }
  int64_t TrainableCount() const;

  // Forward + backward of `batch`, adding ∂(Σ w·loss)/∂θ and Σ w into the
  // accumulator. Returns this batch's sums. FailedPrecondition when kNone.
  Result<CrossEntropySums> AccumulateGradients(const std::vector<TokenSequence>& batch);
  // Σ w of everything accumulated since the last reset.
  double accumulated_weight() const { return accumulated_weight_; }
  Status ZeroGradients();
  // The accumulated mean gradient, TrainableCount() floats.
  // FailedPrecondition when nothing with weight > 0 was accumulated.
  Result<std::vector<float>> ExportGradients();

  // Clips and applies the accumulated mean gradient (one AdamW step), then
  // resets the accumulator.
  Result<StepStats> Step(const OptimizerConfig& opt);
  // Clips and applies `mean_gradient` (an ExportGradients() of a model with
  // the same trainable layout, possibly another machine's); the local
  // accumulator is discarded. InvalidArgument on a size mismatch or a
  // non-finite value.
  Result<StepStats> ApplyGradients(std::span<const float> mean_gradient,
                                   const OptimizerConfig& opt);
  // AdamW steps taken so far.
  int64_t optimizer_step() const { return step_; }

  // The trainable parameters as one flat buffer, and back (e.g. DiLoCo
  // pseudo-gradients). SetParameters keeps the optimizer state.
  Result<std::vector<float>> GetParameters();
  Status SetParameters(std::span<const float> flat);

  // Every weight by its HF name, in ExpectedTensors order, as f32 host
  // tensors (16-bit and quantized weights widened): what WriteHfModel
  // writes for a fully fine-tuned model.
  Result<std::vector<NamedTensor>> ExportWeights();

  // ---- PEFT adapters ----------------------------------------------------------

  // Writes dir/adapter_config.json and dir/adapter_model.safetensors (f32)
  // for the current LoRA adapters, the bytes of EncodeAdapterConfig and
  // EncodeAdapterSafetensors (tasks/engine/adapter_io.h); creates dir.
  // FailedPrecondition unless kLora.
  Status SaveAdapter(const std::string& dir, const std::string& base_model_name_or_path) const;
  // Reads a PEFT LoRA adapter (F32/F16/BF16 tensors; ParseAdapter) and
  // makes it the trainable LoRA (as EnableLora, then the loaded values).
  // Every tensor must be present with its shape, and no other; errors name
  // the file and the tensor or field.
  Status LoadAdapter(const std::string& dir);
  // Full fine-tuning from a version of the weights (a farm job's
  // model.safetensors; ParseFullWeights): EnableFullTraining, then every
  // trainable tensor from the file, which must hold exactly
  // TrainableParameters() in that order with those shapes; gradients,
  // AdamW moments and the step count start afresh, as after LoadAdapter.
  // FailedPrecondition after EnableLora or on a quantized base;
  // InvalidArgument naming the file and the tensor.
  Status LoadFullWeights(const std::string& path);

  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

 private:
  struct Linear;
  struct Layer;
  struct Param;
  struct Packed;
  struct Acts;
  struct KvCache;
  struct Slot {
    Tensor* value;
    Tensor* grad;
  };

  LlamaModel(const ModelConfig& config, Backend* backend);

  Status Upload(const ModelWeights& weights, const LlamaOptions& options);
  Result<Packed> Pack(const std::vector<std::vector<int32_t>>& seqs) const;
  Result<Packed> PackBatch(const std::vector<TokenSequence>& batch) const;
  // The final-norm hidden states [N, hidden] of a packed batch; with `cache`,
  // k/v are written to it and attention reads it (slots/positions from p).
  Result<Tensor> Forward(const Packed& p, Acts* acts, KvCache* cache);
  Status LinearForward(const Linear& l, const Tensor& x, const Tensor& y, const Tensor& ones,
                       Tensor* lora_t);
  // Linear layers over one input x (q, k, v; gate, up): y_i = l_i(x), the
  // base products in one Backend::MatMulForwardShared, then each layer's
  // bias and LoRA as LinearForward adds them.
  struct LinearCall {
    const Linear* l;
    Tensor y;
    Tensor* lora_t;
  };
  Status LinearsForward(std::initializer_list<LinearCall> calls, const Tensor& x,
                        const Tensor& ones);
  // LinearForward after the base product: bias and LoRA.
  Status LinearExtras(const Linear& l, const Tensor& x, const Tensor& y, const Tensor& ones,
                      Tensor* lora_t);
  Status LinearBackward(const Linear& l, const Tensor& x, const Tensor& dy, const Tensor& dx,
                        const Tensor& ones, const Tensor& lora_t);
  Status Backward(const Packed& p, Acts& acts, const Tensor& dhidden);
  const Tensor& LmHead() const;
  Result<Tensor> Alloc(Shape s);
  Status ApplyAccumulated(const OptimizerConfig& opt, StepStats* stats);
  // Every weight by its HF name (ExpectedTensors(config_)).
  std::map<std::string, Slot> WeightSlots();

  ModelConfig config_;
  Backend* backend_;
  Tensor inv_freq_;
  Tensor embed_, d_embed_, norm_, d_norm_, lm_head_, d_lm_head_;
  std::vector<Layer> layers_;
  std::vector<std::string> unquantized_;
  TrainMode mode_ = TrainMode::kNone;
  LoraConfig lora_;
  std::vector<Param> params_;
  std::vector<ParameterInfo> param_info_;
  double accumulated_weight_ = 0;
  int64_t step_ = 0;
};

}  // namespace pcfarm
