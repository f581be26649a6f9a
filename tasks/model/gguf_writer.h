// Writing a llama-family model as one GGUF v3 file (ggml-org/ggml
// docs/gguf.md) that LoadModel reads back as the same model.
//
// Input is what WriteHfModel takes: a config, the Hugging Face tensors and
// the tokenizer.json text. Output, all little-endian:
//   "GGUF", u32 3, u64 tensor_count, u64 kv_count, the KV pairs, the tensor
//   infos, zero padding to general.alignment (32), the data section (each
//   tensor at a multiple of 32 and zero-padded to one).
// KV pairs: general.architecture "llama", general.alignment,
// general.file_type (0 all F32, 7 mostly Q8_0, 2 mostly Q4_0: options); llama.context_length, .embedding_length,
// .block_count, .feed_forward_length, .vocab_size, .rope.dimension_count,
// .attention.head_count(_kv), .attention.key_length/.value_length (u32),
// .rope.freq_base and .attention.layer_norm_rms_epsilon (f32, the type
// llama.cpp requires), .rope.scaling.type/.factor for linear scaling; the
// tokenizer as tokenizer.ggml.model "gpt2", .pre, .tokens, .token_type
// (1 normal, 3 control = special added token, 4 user-defined = other added
// token), .merges ("a b"), .bos/.eos/.unknown_token_id and
// .add_bos_token/.add_eos_token (from the post-processor's template).
// Tensors: F32 (matrices Q8_0/Q4_0 when options say so), llama.cpp names (token_embd, blk.N.attn_q, ..., output_norm,
// output), dims reversed (GGUF lists the fastest-varying dim first), q and k
// rows permuted from HF's rotate-half RoPE order to GGUF's interleaved order
// (the inverse of UnpermuteRopeRows), rope_freqs.weight when the config has
// rope_freq_factors.
//
// Round trip: LoadModel(path) gives the config (rms_norm_eps, rope_theta and
// the scaling factor rounded to f32; the engine computes eps in f32), the
// tensors as f32 with the values of `hf_tensors` (F16/BF16 inputs widen
// exactly) and a tokenizer that encodes and decodes every text as the one of
// `tokenizer_json` does. What GGUF or pcfarm's reader cannot carry is
// refused, not approximated: an InvalidArgument naming the field for an
// architecture other than LlamaForCausalLM, attention_bias, llama3 RoPE
// scaling, more than one EOS id, BOS/EOS ids that disagree with the
// tokenizer's, a rope_theta or scaling factor that f32 cannot hold exactly,
// and tokenizers other than byte-level BPE with one GPT-2, Llama-3 or Qwen2
// regex split, no prefix space, no ignore_merges and a template of at most
// one BOS before and one EOS after. Sampling defaults (generation_config)
// are not stored.
//
// The whole file is built in memory, about the model's f32 size.
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "tasks/model/model_config.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {

struct GgufWriteOptions {
  // ggml type of the 2-D weights whose rows are whole blocks (32 values;
  // 256 for the K-quants): kGgmlF32 (0), kGgmlQ8_0 (8), kGgmlQ4_0 (2),
  // kGgmlQ4_K (12) or kGgmlQ6_K (14), quantized by QuantizeBlocks
  // (gguf-py's reference quantizer for the first two, our plain fit for
  // the K-quants; general.file_type says which). Norms, other 1-D tensors
  // and ragged matrices stay F32. Reading back gives the dequantized
  // values, not the originals.
  uint32_t matrix_type = 0;
};

// The bytes of the GGUF file described above. `hf_tensors` holds exactly the
// tensors ExpectedTensors(config) lists, by HF name, with those shapes, in
// any order and any DType. InvalidArgument, naming the tensor, key or
// tokenizer part, when they do not match or cannot be carried (see above).
Result<std::string> SerializeGgufModel(
    const ModelConfig& config, const std::vector<NamedTensor>& hf_tensors,
    const std::string& tokenizer_json, const GgufWriteOptions& options = {});

// SerializeGgufModel, then WriteFileAtomic to `path` (a temporary file in
// the same directory, fsync, rename, fsync of the directory); the parent
// directory must exist. Errors name `path`.
Status WriteGgufModel(const std::string& path, const ModelConfig& config,
                      const std::vector<NamedTensor>& hf_tensors,
                      const std::string& tokenizer_json,
                      const GgufWriteOptions& options = {});

}  // namespace pcfarm
