// The parts of the LLM task kinds (llm_kinds.cc) that the infer_check kind
// (infer_check.cc) shares with the infer kind: parsing params, the infer
// params and outputs, the text an output carries, and the process's cache
// of loaded infer models. Private to tasks/kinds; the formats are
// documented in llm_kinds.h and infer_check.h.
//
// Thread-safety: pure functions, except AcquireInferModel and
// ReturnInferModel, which share one cache guarded by a mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "tasks/backend/backend.h"
#include "tasks/engine/llama.h"
#include "tasks/kinds/kind.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {

// Results of the LLM kinds leave room in the 8 MiB signed envelope for the
// fields around the output.
inline constexpr size_t kLlmMaxOutputBytes = 8 * 1024 * 1024 - 64 * 1024;
// A train result's tensors travel as a blob the worker uploads
// (proto ResultBody.output_blob), not in the RESULT frame: up to the
// coordinator's default largest output blob.
inline constexpr size_t kTrainMaxOutputBytes = size_t(512) << 20;
// The largest params the infer and train kinds parse.
inline constexpr size_t kLlmMaxParamsBytes = kMaxTaskParamsBytes * 64;

// How far apart two honest runs' logprobs of one token may be: the infer
// kind's Agree, and infer_check's tolerance for logprobs and for the
// difference of two logits (infer_check.h).
inline constexpr double kInferLogprobTolerance = 1e-2;

// `params` parsed as one JSON object of at most `max_bytes`.
// InvalidArgument otherwise.
Result<nlohmann::json> ParseParamsObject(std::string_view params,
                                         size_t max_bytes = kLlmMaxParamsBytes);

// A result of `kind` parsed as one JSON object nested at most `depth` deep,
// of at most kLlmMaxOutputBytes. InvalidArgument names the kind and fault.
Result<nlohmann::json> ParseResultObject(std::string_view output, int depth, const char* kind);

// The generation settings of infer params, and the seed of prompt 0.
struct InferSettings {
  GenerationConfig generation;
  uint64_t seed = 0;
};

// OK iff `p` holds well-formed infer params (llm_kinds.h); then fills
// *settings. InvalidArgument names the field that is wrong.
Status CheckInferParams(const nlohmann::json& p, InferSettings* settings);

// The number of prompts of infer params. REQUIRES: CheckInferParams(p) ok.
size_t InferPromptCount(const nlohmann::json& p);

// One request per prompt of infer params: "prompts" encoded by `tokenizer`
// (with its template's BOS), or "prompt_tokens" as they are; prompt i
// samples with seed + i. InvalidArgument for a prompt that encodes to no
// tokens. REQUIRES: CheckInferParams(p) ok.
Result<std::vector<GenerationRequest>> InferRequests(const nlohmann::json& p,
                                                     const Tokenizer& tokenizer, uint64_t seed);

// OK iff `outputs` is shaped as an infer result's "outputs" for `prompts`
// prompts of at most `max_tokens` tokens each (llm_kinds.h: tokens, text,
// logprobs, finish). InvalidArgument messages start with `what` and name
// the output as `field`[i] and its field.
Status CheckInferOutputs(const nlohmann::json& outputs, size_t prompts, int64_t max_tokens,
                         const std::string& what, const std::string& field);

// An output's "text" as an infer result carries it once parsed: the
// tokenizer's Decode(tokens, skip_special=true) with every byte sequence
// that is not UTF-8 replaced by U+FFFD (a token can end mid-character).
std::string InferOutputText(const Tokenizer& tokenizer, const std::vector<int32_t>& tokens);

// A model loaded from the blobs that params name, on the context's backend,
// with its tokenizer. The model is destroyed before its backend.
struct ModelInstance {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  Tokenizer tokenizer;
};

// The model of infer params `p` ("model", "adapter", "quantize") on ctx's
// backend and device: an idle one the process kept, or one loaded through
// ctx.blob_path. The caller holds it alone until ReturnInferModel.
// REQUIRES: CheckInferParams(p) ok.
Result<std::unique_ptr<ModelInstance>> AcquireInferModel(const nlohmann::json& p,
                                                         const RunContext& ctx);

// Keeps `m`, which served a Run with params `p` and context `ctx` without
// error and is unchanged by it, for the next shard that names the same
// files. A model that failed is dropped instead: the device may have left it
// unusable.
void ReturnInferModel(const nlohmann::json& p, const RunContext& ctx,
                      std::unique_ptr<ModelInstance> m);

}  // namespace pcfarm
