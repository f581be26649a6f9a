// The LLM task kinds: `infer` (generate for a batch of prompts) and `train`
// (gradients of a batch, or H local AdamW steps returning the parameter
// difference). Both are pure functions of their params and the blobs those
// name: the same shard run twice gives answers that Agree().
//
// Models travel as blobs. Params name each file of a Hugging Face model
// directory by the BLAKE2b-256 hex hash of its bytes; the kind asks
// RunContext::blob_path for each and lays them out as a directory of links:
//   "model":   {"config.json": HASH, "model.safetensors": HASH,
//               "tokenizer.json": HASH, ...}        (required)
//   "adapter": {"adapter_config.json": HASH,
//               "adapter_model.safetensors": HASH}  (optional PEFT adapter)
// File names are plain names (letters, digits, '.', '_', '-'). A "model" map
// may instead hold exactly one file whose name ends in ".gguf": a GGUF v3
// model with its config, weights and tokenizer inside (tasks/model/
// model_loader.h); a .gguf name beside other files is refused.
//
// Both kinds take an optional "quantize": "q8_0", "q4_0", "q4_k" or "q6_k"
// (QLoRA: the base's q/k/v/o/gate/up/down projections quantized at load,
// LlamaOptions::quantize; a quantized GGUF is refused with it, use it as it
// is). A quantized base is cached apart from the unquantized one.
//
// infer params (JSON):
//   "prompts": ["text", ...]           tokenized with the model's tokenizer
//                                      (tokenizer.json, or the GGUF's vocab;
//                                      its template adds BOS), or
//   "prompt_tokens": [[ids], ...]      token ids as they are
//   "max_tokens": 1..4096 (default 64), "temperature" (0 = greedy),
//   "top_k" (0 = off), "top_p" (1 = off), "seed" (u64; prompt i samples
//   with seed + i)
// infer result: {"outputs": [{"tokens": [...], "text": "...",
//   "logprobs": [...], "finish": "stop"|"length"}], "backend": NAME}
//   one output per prompt, in order. `text` is the model tokenizer's
//   Decode(tokens, skip_special=true), as `pcfarm local generate` prints it:
//   bytes that are not UTF-8 (a token can end mid-character) are replaced by
//   U+FFFD when the result is written (nlohmann's error_handler_t::replace),
//   so it is the same string byte for byte. ValidateOutput allows at most
//   256 bytes of text per token, plus 64.
// Agree: the same tokens and text for every prompt, and logprobs within
//   1e-2.
// The infer_check kind (infer_check.h) checks an infer result with one
// teacher-forced forward pass instead of a second decode.
//
// A worker keeps the models of its last shards loaded (at most two, idle
// ones only) and reuses one for the next shard with the same "model" and
// "adapter" files (infer) or the same "model" files (train: the shard then
// loads its own "adapter", or fresh LoRA, over the last shard's), backend
// and device; a model serves one shard at a time, and a shard that finds
// none frees the idle ones before it loads its own.
//
// train params (JSON): "model" and "adapter" as above, the shard's
// sequences as exactly one of
//   "batch": [{"tokens": [ids], "weights": [w per token]}, ...]  weights[i]
//            weights the prediction of tokens[i] from the tokens before it
//            (Hugging Face labels; weights[0] is unused)
//   "data": HASH, "examples": [i, ...]   sequences i of a token data blob
//            (tasks/engine/token_data.h), resolved by RunContext::blob_path
//            like the model's files; 1..100000 indices, each below the
//            blob's count (Run's error names the first that is not), in
//            order, repeats allowed. The kind keeps the decoded sequences of
//            its last two blobs for the next shards.
//   "data": HASH, "steps_examples": [[i, ...], [i, ...], ...]
//            one list of indices per local step (a DiLoCo replica's own
//            micro-batch of each inner step): 1..10000 non-empty lists,
//            100000 indices in all, each checked as "examples"' are; the
//            shard takes one AdamW step per list, on that list's sequences.
// and
//   "method": "lora" (default) or "full": full fine-tuning trains every
//            weight in f32 from "weights": {"model.safetensors": HASH} (the
//            job's current version of all of them, LlamaModel::
//            LoadFullWeights), and takes no "adapter", "lora" or
//            "quantize"; its values follow TrainableParameters() in full
//            mode (HF names, ExpectedTensors order)
//   "lora": {"rank": 16, "alpha": 32, "targets": ["q_proj", ...], "seed": 0}
//   "local_steps": 0 (default: return the summed gradient) or H >= 1
//            (H AdamW steps on the batch, return parameters_after - before);
//            with "steps_examples" it may be left out, and if given must be
//            the number of lists
//   "optimizer": {"lr", "beta1", "beta2", "eps", "weight_decay",
//                 "max_grad_norm"}  (for local steps)
// Local steps start from fresh AdamW moments (step 1 of the bias
// correction): a shard is a pure function of its params, whichever worker
// runs it and whatever it ran before.
// train result: binary (tasks/kinds/train_result.h): one JSON line
//   {"loss": mean CE, "weight": Σ weights, "tokens": counted, "count": n,
//   "codec": "none", "layout": "lora", "backend": NAME}, then the n values
//   as an f32 gradient message (tasks/aggregate/compress.h). The values
//   follow LlamaModel::TrainableParameters() order (PEFT names, layer by
//   layer, A then B). For local_steps 0 they are the weighted SUM of
//   per-token gradients (divide by `weight` for the mean), so shards add up.
//   For local steps they are parameters_after - before (the pseudo-
//   gradient, not scaled by the weight); loss, weight and tokens are the
//   batch's before the first step ("batch", "examples") or, with
//   "steps_examples", summed over every local step (loss: Σ w·CE / Σ w of
//   each step's micro-batch, measured before that step's update).
// Agree: loss within 1e-4 relative, the same "tokens", "weight" within
//   1e-6 relative, and values with relative L2 distance <= 1e-3 and cosine
//   >= 0.999 (different devices round differently; wider for fp16/int8,
//   TrainAgreementFor).
//
// Thread-safety: as every TaskKind; the infer model cache and the train
// kind's token data cache are each guarded by a mutex.
#pragma once

#include <memory>

#include "tasks/kinds/kind.h"

namespace pcfarm {

std::unique_ptr<TaskKind> MakeInferKind();
std::unique_ptr<TaskKind> MakeTrainKind();

}  // namespace pcfarm
