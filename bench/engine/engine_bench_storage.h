// engine_bench --storage: decode, batched decode and prefill of the engine
// benchmark's ~110M model stored as F32, F16, BF16, Q8_0, Q4_0, Q4_K and
// Q6_K, each beside a baseline measured in the same run (issue 16):
//
//   - decode at batch 1 beside its memory-bandwidth bound: the bytes of
//     weights a decode step reads (LlamaModel::WeightBytes; the tied
//     embedding is read whole as lm_head) over the bandwidth that a plain
//     multi-threaded read of as many bytes reaches, with as many threads,
//     measured right before each decode run;
//   - decode of 16 sequences at once and a 256-token prefill beside the F32
//     model's.
//
// F16 and BF16 are Hugging Face directories whose every tensor is stored in
// that type (the loader keeps them 16-bit); the block formats are GGUF files
// whose matrices are quantized by the GGUF writer (loaded as mapped blocks).
// All are written once from the same random F32 weights into --cache-dir.
//
// Thread-safety: none (a program's main).
#pragma once

#include <string>

namespace pcfarm {

struct StorageBenchOptions {
  std::string cache_dir = "/tmp";
  int threads = 2;
  int rounds = 2;     // every storage measured once a round; best round counts
  int reps = 3;       // timed runs per figure (fastest counts) after a warm-up
  int decode_new = 48;
  int batch = 16;     // sequences of the batched decode
  int prefill = 256;  // tokens of the prefill
  bool small = false; // the small (lavapipe) model
  std::string only;   // comma-separated storages to run ("" = all)
};

// Prints the table; returns the process exit code.
int RunStorageBench(const StorageBenchOptions& options);

}  // namespace pcfarm
