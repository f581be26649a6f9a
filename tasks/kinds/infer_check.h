// The `infer_check` task kind: checks an `infer` result with one
// teacher-forced forward pass (a prefill of every prompt + its claimed
// output) instead of decoding it again, token by token (DESIGN.md §8.3).
// On a GPU decoding is bound by memory bandwidth and the prefill is not, so
// the check costs a fraction of a re-run; on a CPU both are products of the
// same size and the check saves less (bench/README.md, infer_check_bench).
//
// params (JSON): exactly the infer params of the shard that was run
// (llm_kinds.h: "model", "adapter", "quantize", "prompts" or
// "prompt_tokens", "max_tokens", "temperature", "top_k", "top_p", "seed"),
// plus
//   "claimed": the infer result's "outputs" array, one entry per prompt in
//              order, each {"tokens": [...], "text": "...",
//              "logprobs": [...], "finish": "stop"|"length"}
//   or, instead of "claimed" (exactly one of the two),
//   "claimed_blob": the hash (64 hex digits) of a blob holding the infer
//              result itself ({"outputs": [...], ...}, at most 8 MiB),
//              read through RunContext::blob_path. The coordinator sends
//              its checks so, since shard params travel in at most 64 KiB.
// ValidateParams holds "claimed" to what infer's ValidateOutput accepts
// (the count of entries, at most max_tokens integer ids in 0..2^31-1 each,
// one finite logprob <= 0 per token, a text of at most 256 bytes per token
// + 64, finish "stop" or "length"); the params may be up to 4 MiB + the
// infer result's 8 MiB - 64 KiB, JSON nested at most 4 deep. A claim that is
// well formed but false (a token outside the model's vocabulary, a wrong
// finish) is a verdict of Run, not an error: only the model knows its
// vocabulary and stop tokens.
//
// result: {"ok": bool, "prompts": [{"ok": bool, "bad_at": int, "why": "..."}],
//   "checked_tokens": N, "tolerated_tokens": M, "max_logprob_diff": D,
//   "backend": NAME}
//   "ok": every prompt's claim holds. One entry per prompt, in order:
//   "bad_at" is -1 when the claim holds or its text is what is wrong,
//   else the index of the first claimed token the check refutes, or the
//   number of claimed tokens when the output ends where the generator
//   would have gone on; "why" (empty when ok, at most 512 bytes) says what
//   the claim contradicts. "checked_tokens": claimed tokens whose logits
//   were checked; "tolerated_tokens": how many of those passed only by the
//   tolerance (the rule on the checker's own logits picks another token),
//   a figure to watch: an honest worker on the same kind of device has
//   almost none. "max_logprob_diff": the largest |claimed logprob -
//   checker's| over the tokens whose logprobs were compared, how close
//   honest claims come to the tolerance.
//
// The rules, for each prompt i with claimed tokens t[0..n):
//   * n >= 1; every t[k] in [0, vocab_size); a stop token (the model's
//     eos_token_ids, what infer's generator stops on) only as t[n-1];
//     finish "stop" iff t[n-1] is a stop token; "length" iff not, with
//     n == max_tokens.
//   * t[k] is a draw of the sampling rule (tasks/engine/sampling.h) from the
//     checker's logits after prompt + t[0..k), with the draw infer made:
//     CounterUniform(seed + i, k); greedy when temperature is 0. Within
//     tolerance (CheckDraw): any two logits' difference may differ from
//     the claimant's by up to kInferLogprobTolerance (1e-2). Greedy: t[k]'s
//     logit is at most 1e-2 below the highest. Sampled: t[k] may be kept by
//     top-k / top-p under that tolerance, and the draw lies within the
//     bounds of t[k]'s interval of the renormalised cumulative
//     probabilities over all logits within that tolerance (which bounds
//     turn the 1e-2 into a relative change of about 1e-2 / temperature in
//     the odds, not a fixed width in u).
//   * |logprobs[k] - log softmax(checker's logits)[t[k]]| <= 1e-2, infer's
//     own Agree tolerance (log softmax of the raw logits, temperature 1).
//   * text == Decode(t, skip_special=true) with bytes that are not UTF-8
//     replaced by U+FFFD, as the infer kind writes it.
//   Checked in that order per token, and the first fault is reported.
// Why 1e-2: it is the logprob tolerance infer's Agree already grants two
// honest devices, and a difference of two logits moves both logprobs by it.
// Measured differences are far below it (docs/architecture.md,
// "Checking inference"): at most 6.8e-6 in a logprob between the CPU's
// prefill and its decode steps, 5.8e-6 between the CPU and Vulkan
// (lavapipe); no GPU measured yet.
//
// Agree: both results have the same "ok" and the same per-prompt "ok".
//
// The model is the infer kind's: the same cache, so a worker that checks
// several shards of a job loads it once.
//
// Thread-safety: as every TaskKind.
#pragma once

#include <memory>

#include "tasks/kinds/kind.h"

namespace pcfarm {

std::unique_ptr<TaskKind> MakeInferCheckKind();

}  // namespace pcfarm
