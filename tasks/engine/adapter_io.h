// PEFT LoRA adapter files without a model: the bytes of adapter_config.json
// and adapter_model.safetensors, parsed and written, so the farm's
// coordinator can hold adapter versions as flat buffers. LlamaModel's
// SaveAdapter writes exactly these bytes and LoadAdapter parses with
// ParseAdapter, then checks the tensors against the model.
//
// Tensor names and the flat layout are LlamaModel's (tasks/engine/llama.h):
// "base_model.model.model.layers.{l}.{self_attn|mlp}.{target}.lora_{A|B}.weight",
// A [r, in] then B [out, r], for layer l = 0..L-1, for each configured
// target in LoraTargetOrder().
//
// Thread-safety: pure functions.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <random>
#include <span>

#include "base/status.h"
#include "tasks/engine/llama.h"

namespace pcfarm {

// The PEFT name of layer `layer`'s LoRA A (b false) or B (b true) weight on
// `target`. REQUIRES: target is in LoraTargetOrder().
std::string LoraTensorName(int64_t layer, const std::string& target, bool b);

struct AdapterTensors {
  // rank, alpha and target_modules (in the file's order) from the config;
  // seed 0 (an adapter does not record it).
  LoraConfig lora;
  // LlamaModel's canonical LoRA order, offsets back to back from 0.
  std::vector<ParameterInfo> layout;
  // The values in f32, layout order.
  std::vector<float> flat;
};

// Parses the two files of a PEFT LoRA adapter as LlamaModel::LoadAdapter
// accepts them: the config as LoadAdapter documents (peft_type LORA, r in
// [1, 65536], lora_alpha > 0, known target_modules without repeats, no
// rslora, bias, rank/alpha patterns, layers_to_transform or
// modules_to_save); F32, F16 or BF16 tensors, every one a LoRA A [r, in] or
// B [out, r] weight of a configured target, finite, and for every layer
// from 0 to the highest named, an A and a B of every target. The number of
// layers and the in/out sizes come from the tensors; whether they fit a
// model is LoadAdapter's check. InvalidArgument naming the file
// (`config_name`, `safetensors_name`) and the field or tensor.
Result<AdapterTensors> ParseAdapter(std::string_view config_json, std::string_view safetensors,
                                    const std::string& config_name = "adapter_config.json",
                                    const std::string& safetensors_name =
                                        "adapter_model.safetensors");

// Full fine-tuning's weights file (model.safetensors of a farm job's
// version, written by EncodeAdapterSafetensors over
// LlamaModel::TrainableParameters() in full mode): every tensor F32, F16 or
// BF16 (widened), finite, 1 to 4 dimensions, in buffer order, which is the
// layout's order; `lora` stays default. InvalidArgument naming `name` and
// the tensor; an empty file or one of more than kMaxFullWeightTensors
// tensors is refused.
inline constexpr size_t kMaxFullWeightTensors = 100'000;
Result<AdapterTensors> ParseFullWeights(std::string_view safetensors,
                                        const std::string& name = "model.safetensors");

// adapter_config.json as ParseAdapter reads it (the LoraConfig it gives;
// seed 0). InvalidArgument naming `path` and the field.
Result<LoraConfig> ParseAdapterConfig(std::string_view config_json,
                                      const std::string& path = "adapter_config.json");

// The values LlamaModel::EnableLora(lora with `seed`) gives the tensors of
// `layout` (its canonical LoRA order): each A [r, in] drawn uniform in
// ±1/sqrt(in) by DrawLoraA from one std::mt19937_64(seed) in layout order,
// each B zero. A tensor whose name ends in "lora_A.weight" is an A.
std::vector<float> InitialLoraValues(const std::vector<ParameterInfo>& layout, uint64_t seed);
// One A tensor's draw (`in` its input size), as EnableLora makes it.
void DrawLoraA(std::span<float> a, int64_t in, std::mt19937_64& rng);

// The adapter_model.safetensors bytes SaveAdapter writes for `flat` laid out
// as `layout`: the tensors in layout order as F32, metadata {"format":
// "pt"}. InvalidArgument when a tensor lies outside `flat` or two share a
// name.
Result<std::string> EncodeAdapterSafetensors(const std::vector<ParameterInfo>& layout,
                                             std::span<const float> flat);

// The adapter_config.json bytes SaveAdapter writes (two-space indented JSON
// and a newline; targets in LoraTargetOrder(); lora_alpha an integer when
// it is one). Bytes of `base_model_name_or_path` that are not UTF-8 become
// U+FFFD.
std::string EncodeAdapterConfig(const LoraConfig& lora, const std::string& base_model_name_or_path);

}  // namespace pcfarm
