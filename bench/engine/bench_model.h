// The engine benchmark's random llama model, shared by the programs that
// measure with it (bench/engine/engine_bench.cc, bench/farm/farm_infer_bench.cc):
// written once into a directory and reused while it loads with the same
// shape.
//
// Thread-safety: pure functions (the write is atomic per file).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "tasks/model/model_config.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {

// hidden 768, 12 layers, 12 heads of 64, ffn 2048, vocab 32000, tied
// embeddings: 110M parameters; `small`: hidden 256, 4 layers, 4 heads, ffn
// 768, vocab 8000 (7M), the lavapipe model.
ModelConfig EngineBenchConfig(bool small);

// Parameters of a model of this config.
int64_t ParamCount(const ModelConfig& c);

// The random model's tensors by Hugging Face name, F32 (seed 20261121):
// embeddings N(0,1) (so that logits have clear margins and greedy tokens
// can be compared across implementations), projections N(0, 0.02), norms 1.
std::vector<NamedTensor> EngineBenchTensors(const ModelConfig& c);

// The tokenizer.json the random model ships with.
std::string EngineBenchTokenizerJson();

// Writes the random model into `dir` (a Hugging Face directory) unless a
// loadable one with the same config is already there.
Status EnsureEngineBenchModel(const std::string& dir, const ModelConfig& c);

}  // namespace pcfarm
