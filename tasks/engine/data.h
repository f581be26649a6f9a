// Training and evaluation data: JSONL files of examples, validated whole
// before any work starts, and their tokenization into TokenSequences whose
// weights say which tokens the loss counts; and the order in which
// fine-tuning draws them (BatchSampler, at the end).
//
// A data file holds one JSON object per line (a final newline is optional;
// "\r\n" endings are accepted). Each object is exactly one of three kinds
// (kinds may be mixed within a file; keys other than the ones below are
// ignored, e.g. "id" or "meta"):
//   {"text": "..."}                       every next token counts
//   {"prompt": "...", "completion": "..."} only the completion counts
//   {"messages": [{"role": "system"|"user"|"assistant",
//                  "content": "..."}, ...]} only assistant content counts
// A line is bad when it is blank, not JSON, not an object, has none of
// "text" / "prompt"+"completion" / "messages" or more than one kind, has a
// field of the wrong type, an empty "text" or "completion", an empty
// "messages" array, a message that is not an object, a role outside the
// three above, or no assistant message; or when it is longer than
// kMaxDataLineBytes. The error is InvalidArgument "FILE:LINE: what is wrong"
// (lines counted from 1), for the first bad line.
//
// Tokenization (Tokenizer::Encode; `prefix` = tokenizer.prefix_ids(), the
// post-processor's BOS when it adds one):
//   text:     Encode(text, add_special=true): the template's BOS/EOS around
//             the text, as the model's tokenizer does; every token counts.
//   prompt:   prefix + Encode(prompt, false)                 weight 0
//             + Encode(completion, false) + [eos]            weight 1
//             (prompt and completion are encoded separately, so the prompt
//             tokens are those `pcfarm local generate` feeds the model when
//             the template adds no suffix).
//   messages: prefix, then for each message
//               Encode("<|ROLE|>\n", false)                  weight 0
//               Encode(CONTENT + "\n", false)                weight 1 iff
//                                                            ROLE is assistant
//             then [eos], weight 1 iff the last message is the assistant's.
//             ("<|ROLE|>" is plain text to the tokenizer, not a special
//             token; this is pcfarm's own minimal chat format, not a model's
//             chat template.)
//   [eos] is `eos_id` when >= 0 and left out otherwise.
// A sequence longer than `max_tokens` keeps its first max_tokens tokens;
// TokenizedData counts how many were cut and how many were left with no
// counted token (only prompt, for instance) — those are still returned.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/engine/llama.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {

// Longest accepted line of a data or prompts file, in bytes.
inline constexpr size_t kMaxDataLineBytes = size_t(16) << 20;
// Largest accepted data or prompts file, in bytes.
inline constexpr size_t kMaxDataFileBytes = size_t(1) << 30;

enum class ExampleKind { kText, kPromptCompletion, kMessages };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct Example {
  ExampleKind kind = ExampleKind::kText;
  int64_t line = 0;  // 1-based line in its file
  std::string text;                   // kText
  std::string prompt, completion;     // kPromptCompletion
  std::vector<ChatMessage> messages;  // kMessages
};

// Parses JSONL `contents`; `display_name` (the file's path) names it in
// errors. InvalidArgument on the first bad line (see the top of this file)
// or when there is no example at all.
Result<std::vector<Example>> ParseExamplesJsonl(std::string_view contents,
                                                const std::string& display_name);
// ReadFile(path) (NotFound / ResourceExhausted name the path), then
// ParseExamplesJsonl.
Result<std::vector<Example>> ReadExamplesJsonl(const std::string& path);

// The prompt text of a chat in pcfarm's chat format: for each message
// "<|ROLE|>\n" + CONTENT + "\n", then "<|assistant|>\n", so the model
// continues as the assistant. It is the text TokenizeExample trains on for
// the same messages up to the assistant's reply. Encoded as one text
// (Encode(prompt, true), as generation does), its tokens are the training
// tokens unless a pre-token spans a piece boundary: with a byte-level
// tokenizer only where the pre-tokenizer joins the "\n" after "<|ROLE|>"
// with whitespace that begins the content (Llama 3's does for a content
// that starts with a newline); with a SentencePiece-style tokenizer that
// prepends '▁', always, since each training piece gets its own '▁'.
std::string RenderChatPrompt(const std::vector<ChatMessage>& messages);

// A prompts file for generation: one object per line, either
//   {"prompt": "..."}                 the text as it is (not empty), or
//   {"messages": [{"role": "system"|"user"|"assistant",
//                  "content": "..."}, ...]}   RenderChatPrompt(messages)
// (other keys ignored). Returns one prompt text per line, in order. A line
// is bad, besides the line rules above, when it has both "prompt" and
// "messages" or neither, an empty "prompt", or "messages" that are bad as in
// a data file (not an array, empty, a message that is not an object, a role
// outside the three, content that is not a string); no assistant message is
// needed. Errors are InvalidArgument "FILE:LINE: what is wrong" for the
// first bad line, so prompt i (from 0) is always line i + 1.
Result<std::vector<std::string>> ParsePromptsJsonl(std::string_view contents,
                                                   const std::string& display_name);
Result<std::vector<std::string>> ReadPromptsJsonl(const std::string& path);

// The tokens and weights of one example, and whether it was cut to
// max_tokens. REQUIRES: max_tokens >= 1.
TokenSequence TokenizeExample(const Example& example, const Tokenizer& tokenizer,
                              int32_t eos_id, int64_t max_tokens, bool* truncated);

struct TokenizedData {
  std::vector<TokenSequence> sequences;  // one per example, in order
  int64_t truncated = 0;        // sequences cut to max_tokens
  int64_t without_counted = 0;  // sequences with no token of weight > 0
  int64_t counted_tokens = 0;   // tokens of weight > 0, over all sequences
};

// TokenizeExample over every example. REQUIRES: max_tokens >= 1.
TokenizedData TokenizeExamples(const std::vector<Example>& examples, const Tokenizer& tokenizer,
                               int32_t eos_id, int64_t max_tokens);

// ---- the order of fine-tuning steps -------------------------------------------
//
// `pcfarm local finetune` and the farm's finetune planner draw the sequences
// of each step the same way, so that both train on the same examples in the
// same order for the same seed.

// Indices, increasing, of the sequences with a counted token: a weight > 0
// at some position >= 1 (an empty `weights` counts every token after the
// first, so a sequence of >= 2 tokens). Only these take part in training.
// (weights[0] is never counted; TokenizeExample always sets it to 0.)
std::vector<int64_t> UsableSequences(const std::vector<TokenSequence>& seqs);

// The sequences of successive fine-tuning steps: passes over `usable`, each
// pass a fresh std::shuffle of `usable` (in the order given) with one
// std::mt19937_64(seed) that lives across passes; a step takes the next
// min(batch, usable.size()) indices, crossing into the next pass when the
// current one runs out (so one step may hold the same index twice, once
// from each pass). std::shuffle is the standard library's, so the order is
// that of the library the binary is built with (libstdc++ for pcfarm).
//
// Thread-safety: one thread at a time.
class BatchSampler {
 public:
  BatchSampler(std::vector<int64_t> usable, uint64_t seed);

  // The sequence indices of the next step, in order: min(batch,
  // usable.size()) of them (none when `usable` is empty). REQUIRES:
  // batch >= 1.
  std::vector<int64_t> Next(int64_t batch);

 private:
  std::vector<int64_t> usable_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;  // the current pass
  size_t next_ = 0;             // into order_
};

}  // namespace pcfarm
