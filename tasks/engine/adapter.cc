// LlamaModel::SaveAdapter / LoadAdapter: PEFT LoRA adapter directories.
#include <cmath>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/engine/llama_internal.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {

Status LlamaModel::SaveAdapter(const std::string& dir,
                               const std::string& base_model_name_or_path) const {
  if (mode_ != TrainMode::kLora)
    return FailedPrecondition("SaveAdapter: the model has no LoRA adapters");
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir));
  std::vector<NamedTensor> tensors;
  for (size_t i = 0; i < params_.size(); ++i) {
    std::vector<float> v(size_t(param_info_[i].numel));
    PCFARM_RETURN_IF_ERROR(backend_->Download(params_[i].value, v));
    tensors.push_back({param_info_[i].name, HostTensor::FromF32(param_info_[i].shape, std::move(v))});
  }
  nlohmann::json targets = nlohmann::json::array();
  for (const std::string& t : LoraTargetOrder())
    if (std::find(lora_.target_modules.begin(), lora_.target_modules.end(), t) !=
        lora_.target_modules.end())
      targets.push_back(t);
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", lora_.rank},
      {"target_modules", targets},
      {"lora_dropout", 0.0},
      {"bias", "none"},
      {"use_rslora", false},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"base_model_name_or_path", base_model_name_or_path},
  };
  if (lora_.alpha == std::floor(lora_.alpha) && std::abs(lora_.alpha) < 1e15)
    cfg["lora_alpha"] = int64_t(lora_.alpha);
  else
    cfg["lora_alpha"] = lora_.alpha;
  const std::filesystem::path d(dir);
  PCFARM_RETURN_IF_ERROR(WriteSafetensors((d / "adapter_model.safetensors").string(), tensors,
                                          {{"format", "pt"}}));
  return WriteFileAtomic((d / "adapter_config.json").string(), cfg.dump(2) + "\n");
}

namespace {

// The LoraConfig an adapter_config.json describes; errors name the file and
// the field.
Result<LoraConfig> ParseAdapterConfig(const std::string& text, const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(path + ": not a JSON object");
  auto field = [&](const char* name) { return j.contains(name) ? j[name] : nlohmann::json(); };
  if (field("peft_type") != "LORA")
    return InvalidArgument(path + ": peft_type is " + field("peft_type").dump() +
                           ", expected \"LORA\"");
  LoraConfig c;
  const nlohmann::json r = field("r");
  if (!r.is_number_integer() || r.get<int64_t>() < 1 || r.get<int64_t>() > 65536)
    return InvalidArgument(path + ": r is " + r.dump() + ", expected an integer in [1, 65536]");
  c.rank = r.get<int64_t>();
  const nlohmann::json alpha = field("lora_alpha");
  if (!alpha.is_number() || !(alpha.get<double>() > 0) || !std::isfinite(alpha.get<double>()))
    return InvalidArgument(path + ": lora_alpha is " + alpha.dump() + ", expected a number > 0");
  c.alpha = alpha.get<double>();
  const nlohmann::json targets = field("target_modules");
  if (!targets.is_array() || targets.empty())
    return InvalidArgument(path + ": target_modules must be a non-empty list of names");
  c.target_modules.clear();
  for (const auto& t : targets) {
    if (!t.is_string())
      return InvalidArgument(path + ": target_modules holds " + t.dump() + ", not a name");
    c.target_modules.push_back(t.get<std::string>());
  }
  if (j.contains("use_rslora") && j["use_rslora"] != false)
    return InvalidArgument(path + ": use_rslora " + j["use_rslora"].dump() + " is not supported");
  if (j.contains("bias") && j["bias"] != "none")
    return InvalidArgument(path + ": bias " + j["bias"].dump() + " is not supported (\"none\")");
  for (const char* name : {"rank_pattern", "alpha_pattern"})
    if (j.contains(name) && !j[name].is_null() && !j[name].empty())
      return InvalidArgument(path + ": " + name + " is not supported");
  for (const char* name : {"layers_to_transform", "modules_to_save"})
    if (j.contains(name) && !j[name].is_null() && !(j[name].is_array() && j[name].empty()))
      return InvalidArgument(path + ": " + name + " is not supported");
  return c;
}

}  // namespace

Status LlamaModel::LoadAdapter(const std::string& dir) {
  if (mode_ == TrainMode::kFull)
    return FailedPrecondition("LoadAdapter: the model is in full-parameter training");
  const std::filesystem::path d(dir);
  const std::string cfg_path = (d / "adapter_config.json").string();
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(cfg_path, 1 << 20));
  PCFARM_ASSIGN_OR_RETURN(LoraConfig lora, ParseAdapterConfig(text, cfg_path));
  const std::string st_path = (d / "adapter_model.safetensors").string();
  PCFARM_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(st_path));

  // The names and shapes EnableLora(lora) would lay out, checked before any
  // state changes (EnableLora itself validates the targets).
  std::set<std::string> wanted(lora.target_modules.begin(), lora.target_modules.end());
  for (const std::string& t : wanted)
    if (std::find(LoraTargetOrder().begin(), LoraTargetOrder().end(), t) ==
        LoraTargetOrder().end())
      return InvalidArgument(cfg_path + ": unknown target module \"" + t + "\"");
  struct Want {
    std::string name;
    std::vector<int64_t> shape;
  };
  std::vector<Want> want;
  for (size_t l = 0; l < layers_.size(); ++l) {
    for (const std::string& t : LoraTargetOrder()) {
      if (!wanted.count(t)) continue;
      const Linear& lin = layers_[l].ByTarget(t);
      const std::string base = "base_model.model.model.layers." + std::to_string(l) +
                               (t.size() == 6 ? ".self_attn." : ".mlp.") + t;
      want.push_back({base + ".lora_A.weight", {lora.rank, lin.in}});
      want.push_back({base + ".lora_B.weight", {lin.out, lora.rank}});
    }
  }
  std::set<std::string> expected_names;
  std::vector<float> flat;
  for (const Want& w : want) {
    expected_names.insert(w.name);
    const SafetensorsEntry* e = file.Find(w.name);
    if (e == nullptr) return InvalidArgument(st_path + ": missing tensor " + w.name);
    if (e->shape != w.shape)
      return InvalidArgument(st_path + ": " + w.name + " has shape " + ShapeString(e->shape) +
                             ", expected " + ShapeString(w.shape));
    PCFARM_ASSIGN_OR_RETURN(HostTensor t, file.Tensor(w.name));
    std::vector<float> v = t.ToF32();
    for (float x : v)
      if (!std::isfinite(x))
        return InvalidArgument(st_path + ": " + w.name + " holds a non-finite value");
    flat.insert(flat.end(), v.begin(), v.end());
  }
  for (const SafetensorsEntry& e : file.entries())
    if (!expected_names.count(e.name))
      return InvalidArgument(st_path + ": unexpected tensor " + e.name +
                             " (not a LoRA A/B weight of the configured targets)");
  PCFARM_RETURN_IF_ERROR(EnableLora(lora));
  return SetParameters(flat);
}

}  // namespace pcfarm
