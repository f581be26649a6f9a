// The engine benchmark's random llama model, shared by the programs that
// measure with it (bench/engine/engine_bench.cc, bench/farm/farm_infer_bench.cc):
// written once into a directory and reused while it loads with the same
// shape.
//
// Thread-safety: pure functions (the write is atomic per file).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "tasks/model/model_config.h"

namespace pcfarm {

// hidden 768, 12 layers, 12 heads of 64, ffn 2048, vocab 32000, tied
// embeddings: 110M parameters; `small`: hidden 256, 4 layers, 4 heads, ffn
// 768, vocab 8000 (7M), the lavapipe model.
ModelConfig EngineBenchConfig(bool small);

// Parameters of a model of this config.
int64_t ParamCount(const ModelConfig& c);

// Writes the random model (seed 20261121) into `dir` unless a loadable one
// with the same config is already there.
Status EnsureEngineBenchModel(const std::string& dir, const ModelConfig& c);

}  // namespace pcfarm
