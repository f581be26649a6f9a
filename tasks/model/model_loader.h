// LoadModel / WriteHfModel: a whole llama-family model in one call.
//
// A model is either a Hugging Face directory (config.json, optional
// generation_config.json, model.safetensors or a sharded index,
// tokenizer.json) or a single GGUF v3 file (config, weights and vocab
// inside). The result owns everything it needs: weights stay mapped for as
// long as any HostTensor of them is held.
//
// Thread-safety: LoadModel may run concurrently on different paths; a
// LoadedModel is immutable.
#pragma once

#include <string>
#include <vector>

#include "base/status.h"
#include "tasks/model/model_config.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/safetensors.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {

struct LoadedModel {
  std::string source;  // the path it came from
  ModelConfig config;  // bos/eos ids filled from the tokenizer when absent
  ModelWeights weights;
  Tokenizer tokenizer;
};

// Loads the directory or .gguf file at `path`. Every failure names the file
// and the field or tensor that is wrong.
Result<LoadedModel> LoadModel(const std::string& path);

// Writes a Hugging Face directory: config.json, model.safetensors (the
// given tensors, which must match `config`) and tokenizer.json
// (`tokenizer_json` verbatim). Creates `dir` when missing; files are
// written atomically.
Status WriteHfModel(const std::string& dir, const ModelConfig& config,
                    const std::vector<NamedTensor>& tensors,
                    const std::string& tokenizer_json);

}  // namespace pcfarm
