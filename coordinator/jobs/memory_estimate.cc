#include "coordinator/jobs/memory_estimate.h"

#include <cassert>
#include <nlohmann/json.hpp>
#include <string>

namespace pcfarm {

using nlohmann::json;

namespace {

struct Field {
  const char* name;
  int64_t ModelDims::*member;
  int64_t max;
};

constexpr int64_t kMaxDim = int64_t(1) << 31;
constexpr Field kFields[] = {
    {"hidden", &ModelDims::hidden, kMaxDim},
    {"layers", &ModelDims::layers, kMaxDim},
    {"heads", &ModelDims::heads, kMaxDim},
    {"kv_heads", &ModelDims::kv_heads, kMaxDim},
    {"head_dim", &ModelDims::head_dim, kMaxDim},
    {"intermediate", &ModelDims::intermediate, kMaxDim},
    {"vocab", &ModelDims::vocab, kMaxDim},
    {"weight_bytes", &ModelDims::weight_bytes, int64_t(1) << 50},
};

constexpr int64_t kF32 = 4;

}  // namespace

json ModelDimsToJson(const ModelDims& d) {
  json j = json::object();
  for (const Field& f : kFields) j[f.name] = d.*f.member;
  return j;
}

Result<ModelDims> ModelDimsFromJson(const json& j) {
  if (!j.is_object()) return InvalidArgument("'model_dims' must be an object");
  ModelDims d;
  for (const Field& f : kFields) {
    auto it = j.find(f.name);
    const int64_t min = f.member == &ModelDims::weight_bytes ? 0 : 1;
    if (it == j.end() || !it->is_number_integer() || it->get<int64_t>() < min ||
        it->get<int64_t>() > f.max) {
      return InvalidArgument(std::string("'model_dims.") + f.name + "' must be an integer in " +
                             std::to_string(min) + ".." + std::to_string(f.max));
    }
    d.*f.member = it->get<int64_t>();
  }
  return d;
}

// In double, clamped: products of dims up to 2^31 can pass int64.
int64_t InferShardMemoryBytes(const ModelDims& d, int64_t prompts, int64_t prompt_tokens,
                              int64_t context) {
  assert(prompts >= 0 && prompt_tokens >= 0 && context >= 0);
  const double q = double(d.heads) * double(d.head_dim);
  const double kv = double(d.kv_heads) * double(d.head_dim);
  const double cache = 2.0 * double(d.layers) * double(prompts) * double(context) * kv * kF32;
  const double acts = double(kF32) * double(prompt_tokens) *
                      (6.0 * double(d.hidden) + 2 * q + 2 * kv + 3.0 * double(d.intermediate));
  const double logits = double(kF32) * double(prompts) * double(d.vocab);
  const double total = double(d.weight_bytes) + cache + acts + logits;
  return total >= 9.2e18 ? INT64_MAX : int64_t(total);
}

int64_t TrainShardMemoryBytes(const ModelDims& d, int64_t trainable, int64_t lora_rank,
                              int64_t tokens) {
  assert(trainable >= 0 && lora_rank >= 0 && tokens >= 0);
  const double q = double(d.heads) * double(d.head_dim);
  const double kv = double(d.kv_heads) * double(d.head_dim);
  const double per_layer = 4.0 * double(d.hidden) + 2 * q + 2 * kv + double(d.heads) +
                           3.0 * double(d.intermediate) + 7.0 * double(lora_rank);
  const double acts = double(kF32) * double(tokens) *
                      ((double(d.layers) + 1) * per_layer + double(d.hidden) +
                       2.0 * double(d.vocab));
  const double lora = 4.0 * kF32 * double(trainable);
  const double total = double(d.weight_bytes) + lora + acts;
  return total >= 9.2e18 ? INT64_MAX : int64_t(total);
}

}  // namespace pcfarm
