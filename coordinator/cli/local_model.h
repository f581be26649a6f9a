// Random llama models for tests and demos (`pcfarm local make-model`).
//
// WriteRandomModel writes a Hugging Face directory (config.json,
// model.safetensors, tokenizer.json) holding a LlamaForCausalLM with random
// weights and a byte-level BPE tokenizer learned (MakeByteLevelTokenizerJson)
// from a small built-in English corpus, so the model can read and write any
// text. Presets:
//   tiny:  hidden 64, 2 layers, 4 heads of 16 (2 KV heads), FFN 128,
//          256 bytes + 200 merges + 2 specials = vocab 458, tied embeddings,
//          103,360 parameters; generation and a 25-step LoRA run take well
//          under a second on one CPU core.
//   small: hidden 256, 4 layers, 8 heads of 32 (4 KV heads), FFN 688,
//          vocab 789 (256 bytes + the 531 merges the corpus gives, of the
//          1000 asked for, + 2), tied embeddings, 3,104,256 parameters.
// Both have max_position_embeddings 1024, RMSNorm eps 1e-5, RoPE theta
// 10000, BOS <|begin_of_text|> (added by the tokenizer's template) and EOS
// <|end_of_text|>. Weights: norms 1; every matrix (embeddings included)
// normal with std 1/sqrt(its input width), from std::mt19937_64(seed), so
// the same seed writes the same bytes. With a GGUF path, the same model
// (config, weights bit for bit, tokenizer) is also written as one GGUF v3
// file (tasks/model/gguf_writer.h), which `pcfarm local` runs exactly as the
// directory.
//
// Thread-safety: pure functions (the file writes are atomic per file).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/model/model_config.h"

namespace pcfarm {

// "tiny", "small".
std::vector<std::string> RandomModelPresetNames();

struct RandomModelInfo {
  ModelConfig config;
  int64_t parameters = 0;
};

// Writes the preset's model to `dir` (created when missing; files there are
// replaced) and, when `gguf_path` is not empty, to that file too (its
// directory must exist; written atomically). InvalidArgument on an unknown
// preset; the first failed write's status otherwise.
Result<RandomModelInfo> WriteRandomModel(const std::string& dir, std::string_view preset,
                                         uint64_t seed, const std::string& gguf_path = "");

}  // namespace pcfarm
