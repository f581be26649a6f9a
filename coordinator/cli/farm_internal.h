// Helpers shared by the farm commands' files (farm_commands.cc,
// farm_finetune.cc); not an interface of its own.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

class CoordinatorClient;
struct ModelConfig;

// The files of a model or adapter that travel to the workers, as (name,
// path): a .gguf file alone, or the files of a Hugging Face (or PEFT
// adapter, when `adapter`) directory the loader reads. NotFound and
// InvalidArgument name the flag and path.
Result<std::vector<std::pair<std::string, std::string>>> FilesToSend(const std::string& path,
                                                                     bool adapter);

// Uploads a model's files (FilesToSend), progress bars when `progress`:
// (*map)[name] = each file's hash; adds their sizes to `*bytes` and the
// bytes sent (not deduplicated) to `*sent`. The first failed upload's
// status.
Status UploadModelFiles(CoordinatorClient* client,
                        const std::vector<std::pair<std::string, std::string>>& files,
                        bool progress, nlohmann::json* map, int64_t* bytes, int64_t* sent);

// The "model_dims" job param (coordinator/jobs/memory_estimate.h) of a
// model with config `c` whose base weights a worker holds in
// `weight_bytes` (LlamaModel::WeightBytes after LlamaOptions::quantize).
nlohmann::json ModelDimsParam(const ModelConfig& c, int64_t weight_bytes);

// "q8_0" / "q4_0" / "q4_k" / "q6_k": the "quantize" job and shard param for
// kQ8_0 / kQ4_0 / kQ4_K / kQ6_K (ParseWeightQuantization's result); ""
// otherwise.
std::string QuantizeParamName(StorageType t);

// "12.3 MiB" / "1.25 GiB".
std::string Human(int64_t bytes);

}  // namespace pcfarm
