// Tokenizer: text <-> token ids for llama-family models.
//
// Sources:
//  * tokenizer.json (HF tokenizers) with a BPE model, either
//    - byte-level (GPT-2 / Llama-3 / Qwen2): a ByteLevel pre-tokenizer, with
//      GPT-2's regex or a Split regex (see pretokenize.h) and optional Digits
//      splitting; bytes map to printable code points (space -> 'Ġ');
//    - SentencePiece-style (Llama 2 / TinyLlama): normalizer Prepend '▁' +
//      Replace ' ' -> '▁' (or a Metaspace pre-tokenizer), byte_fallback to
//      <0xNN> tokens, unk otherwise.
//    Merges as "a b" strings or ["a","b"] pairs. added_tokens are matched in
//    the raw text before anything else (longest first; lstrip/rstrip and
//    single_word flags are ignored). A TemplateProcessing post_processor
//    gives the BOS/EOS ids added by Encode(..., add_special=true). An NFC
//    normalizer is accepted and treated as the identity (input is assumed to
//    be NFC already); other normalizers and pre-tokenizers are rejected with
//    an error naming them.
//  * a GGUF file's embedded vocab: tokenizer.ggml.model "llama"
//    (SentencePiece: merge the adjacent pair whose concatenation has the
//    highest score; byte fallback) or "gpt2" (byte-level BPE with merges;
//    tokenizer.ggml.pre picks the regex); control and user-defined tokens
//    are matched as added tokens; add_bos/add_eos keys give the template.
//
// Decode reverses the byte mapping (byte-level) or '▁' -> ' ' and <0xNN>
// bytes (SentencePiece, dropping the one leading space the normalizer
// added). Decode(Encode(s, false)) == s for any valid UTF-8 `s` when the
// vocab covers it (always for byte-level).
//
// Thread-safety: immutable after construction; Encode/Decode are const and
// may run concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"
#include "tasks/model/pretokenize.h"

namespace pcfarm {

class GgufFile;

class Tokenizer {
 public:
  // Parses tokenizer.json text; `display_name` names it in errors.
  static Result<Tokenizer> FromJson(const std::string& json_text,
                                    const std::string& display_name);
  // Reads and parses a tokenizer.json file.
  static Result<Tokenizer> Load(const std::string& path);
  // From a GGUF file's tokenizer.ggml.* keys.
  static Result<Tokenizer> FromGguf(const GgufFile& gguf);

  // Token ids of `text`; with add_special, the template's BOS/EOS around.
  std::vector<int32_t> Encode(std::string_view text, bool add_special = true) const;
  // The text of `ids`; ids out of range are skipped; with skip_special,
  // special added tokens (BOS, EOS, ...) are left out.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  bool byte_level() const { return byte_level_; }
  int32_t vocab_size() const { return int32_t(id_to_token_.size()); }
  // -1 when absent.
  int32_t TokenId(std::string_view token) const;
  // The vocab string of `id` (e.g. "Ġthe", "▁the", "<0x0A>"); "" when out
  // of range.
  const std::string& TokenString(int32_t id) const;
  bool IsSpecial(int32_t id) const;
  // BOS: the template's first prefix token, else "<s>"/"<|begin_of_text|>"
  // when present; EOS: the template's suffix, else "</s>", "<|end_of_text|>"
  // or "<|endoftext|>"; -1 when none. A model's config.json eos ids take
  // precedence over this guess.
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  const std::vector<int32_t>& prefix_ids() const { return prefix_ids_; }
  const std::vector<int32_t>& suffix_ids() const { return suffix_ids_; }

 private:
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  enum class Prepend { kNever, kFirst, kAlways };

  void Finish();  // derived tables: specials, byte ids, BOS/EOS
  int32_t AddToken(const std::string& token);  // returns id; appends
  void EncodeSegment(std::string_view text, bool first, std::vector<int32_t>* out) const;
  void Bpe(std::vector<int32_t> symbols, std::vector<int32_t>* out) const;
  bool FindMerge(int32_t a, int32_t b, double* priority, int32_t* merged) const;

  bool byte_level_ = false;
  struct PreStep {  // one pre-tokenizer split, applied in order
    bool digits;         // Digits pre-tokenizer, else a regex scanner
    bool individual;     // Digits: one piece per digit
    SplitRegex regex;
  };

  Status ParseNormalizer(const nlohmann::json& j, const std::string& source);
  Status ParsePreTokenizer(const nlohmann::json& j, const std::string& source);
  Status ParsePostProcessor(const nlohmann::json& j, const std::string& source);

  // Byte-level options.
  std::vector<PreStep> pre_steps_;
  bool add_prefix_space_ = false;
  bool ignore_merges_ = false;
  // SentencePiece options.
  Prepend prepend_ = Prepend::kNever;
  bool prepend_if_missing_ = false;  // Metaspace: not when text starts with '▁'
  bool replace_spaces_ = false;
  bool metaspace_split_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool use_scores_ = false;  // GGUF llama: merge by vocab score, no merges list

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<float> scores_;
  std::unordered_map<uint64_t, Merge> merges_;  // (a << 32 | b) -> merge
  std::vector<AddedToken> added_;               // longest content first
  std::array<std::vector<uint32_t>, 256> added_by_first_byte_;  // indices into added_
  std::vector<bool> special_;                   // by id
  std::vector<bool> added_id_;                  // by id: decode as content
  std::array<int32_t, 256> byte_ids_{};         // byte -> <0xNN> id, or -1
  std::array<int32_t, 256> byte_char_ids_{};    // byte -> byte-level char id, or -1
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1, eos_id_ = -1;
  std::vector<int32_t> prefix_ids_, suffix_ids_;
};

// Writes the text of a small, valid byte-level BPE tokenizer.json: the 256
// byte tokens (ids 0..255 in byte order), then up to `num_merges` merges
// learned from `corpus` (pre-tokenized with GPT-2's regex; the most frequent
// pair each step, ties broken by the smaller pair of ids), then the special
// tokens "<|begin_of_text|>" and "<|end_of_text|>"; a TemplateProcessing
// adds BOS. Deterministic: the same corpus gives the same bytes.
std::string MakeByteLevelTokenizerJson(std::string_view corpus, int num_merges);

}  // namespace pcfarm
