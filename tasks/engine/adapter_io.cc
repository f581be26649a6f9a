#include "tasks/engine/adapter_io.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "tasks/model/safetensors.h"

namespace pcfarm {
namespace {

bool IsAttention(const std::string& target) {
  return target == "q_proj" || target == "k_proj" || target == "v_proj" || target == "o_proj";
}

// The LoraConfig an adapter_config.json describes; errors name the file and
// the field.
Result<LoraConfig> ParseAdapterConfigImpl(std::string_view text, const std::string& path) {
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
    const std::string name = t.get<std::string>();
    if (std::find(LoraTargetOrder().begin(), LoraTargetOrder().end(), name) ==
        LoraTargetOrder().end())
      return InvalidArgument(path + ": unknown target module \"" + name + "\"");
    if (std::find(c.target_modules.begin(), c.target_modules.end(), name) !=
        c.target_modules.end())
      return InvalidArgument(path + ": target module \"" + name + "\" listed twice");
    c.target_modules.push_back(name);
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

// What a LoRA tensor name says; false when it is not one.
struct LoraName {
  int64_t layer = 0;
  std::string target;
  bool b = false;
};

bool ParseLoraName(const std::string& name, LoraName* out) {
  static const std::string kPrefix = "base_model.model.model.layers.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  size_t i = kPrefix.size(), digits = 0;
  int64_t layer = 0;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && digits < 7) {
    layer = layer * 10 + (name[i] - '0');
    ++i;
    ++digits;
  }
  // No leading zero: one name per layer.
  if (digits == 0 || (digits > 1 && name[kPrefix.size()] == '0')) return false;
  for (const std::string& t : LoraTargetOrder()) {
    for (bool b : {false, true}) {
      if (name.substr(kPrefix.size()) ==
          LoraTensorName(layer, t, b).substr(kPrefix.size())) {
        *out = {layer, t, b};
        return true;
      }
    }
  }
  return false;
}

}  // namespace

std::string LoraTensorName(int64_t layer, const std::string& target, bool b) {
  assert(std::find(LoraTargetOrder().begin(), LoraTargetOrder().end(), target) !=
         LoraTargetOrder().end());
  return "base_model.model.model.layers." + std::to_string(layer) +
         (IsAttention(target) ? ".self_attn." : ".mlp.") + target +
         (b ? ".lora_B.weight" : ".lora_A.weight");
}

Result<AdapterTensors> ParseAdapter(std::string_view config_json, std::string_view safetensors,
                                    const std::string& config_name,
                                    const std::string& safetensors_name) {
  AdapterTensors out;
  PCFARM_ASSIGN_OR_RETURN(out.lora, ParseAdapterConfigImpl(config_json, config_name));
  PCFARM_ASSIGN_OR_RETURN(SafetensorsFile file,
                          SafetensorsFile::Parse(safetensors, safetensors_name, nullptr));
  const std::string& st = safetensors_name;
  const std::set<std::string> targets(out.lora.target_modules.begin(),
                                      out.lora.target_modules.end());
  const int64_t r = out.lora.rank;
  int64_t layers = 0;
  for (const SafetensorsEntry& e : file.entries()) {
    LoraName n;
    if (!ParseLoraName(e.name, &n) || !targets.count(n.target))
      return InvalidArgument(st + ": unexpected tensor " + e.name +
                             " (not a LoRA A/B weight of the configured targets)");
    // A [r, in], B [out, r]; the other size comes from the tensor.
    const bool fits = e.shape.size() == 2 && e.shape[n.b ? 1 : 0] == r &&
                      e.shape[n.b ? 0 : 1] >= 1;
    if (!fits) {
      const std::string other = e.shape.size() == 2 && e.shape[n.b ? 0 : 1] >= 1
                                    ? std::to_string(e.shape[n.b ? 0 : 1])
                                    : std::string(n.b ? "out" : "in");
      return InvalidArgument(st + ": " + e.name + " has shape " + ShapeString(e.shape) +
                             ", expected " +
                             (n.b ? "[" + other + "," + std::to_string(r) + "]"
                                  : "[" + std::to_string(r) + "," + other + "]"));
    }
    layers = std::max(layers, n.layer + 1);
  }
  if (layers == 0) return InvalidArgument(st + ": holds no LoRA tensor");
  for (int64_t l = 0; l < layers; ++l) {
    for (const std::string& t : LoraTargetOrder()) {
      if (!targets.count(t)) continue;
      for (bool b : {false, true}) {
        const std::string name = LoraTensorName(l, t, b);
        const SafetensorsEntry* e = file.Find(name);
        if (e == nullptr) return InvalidArgument(st + ": missing tensor " + name);
        PCFARM_ASSIGN_OR_RETURN(HostTensor ht, file.Tensor(name));
        std::vector<float> v = ht.ToF32();
        for (float x : v)
          if (!std::isfinite(x))
            return InvalidArgument(st + ": " + name + " holds a non-finite value");
        ParameterInfo p{name, e->shape, int64_t(out.flat.size()), int64_t(v.size())};
        out.layout.push_back(std::move(p));
        out.flat.insert(out.flat.end(), v.begin(), v.end());
      }
    }
  }
  // Every tensor was checked to be a configured LoRA weight of a layer below
  // `layers`, and each of those was found once: the counts agree.
  assert(out.layout.size() == file.entries().size());
  return out;
}

Result<LoraConfig> ParseAdapterConfig(std::string_view config_json, const std::string& path) {
  return ParseAdapterConfigImpl(config_json, path);
}

void DrawLoraA(std::span<float> a, int64_t in, std::mt19937_64& rng) {
  const double bound = 1.0 / std::sqrt(double(in));
  for (float& x : a) x = float((double(rng() >> 11) * 0x1.0p-53 * 2 - 1) * bound);
}

std::vector<float> InitialLoraValues(const std::vector<ParameterInfo>& layout, uint64_t seed) {
  static const std::string kA = "lora_A.weight";
  std::mt19937_64 rng(seed);
  int64_t total = 0;
  for (const ParameterInfo& p : layout) total = std::max(total, p.offset + p.numel);
  std::vector<float> out(size_t(std::max<int64_t>(total, 0)), 0.0f);
  for (const ParameterInfo& p : layout) {
    const bool is_a = p.name.size() >= kA.size() &&
                      p.name.compare(p.name.size() - kA.size(), kA.size(), kA) == 0;
    if (!is_a || p.shape.size() != 2) continue;
    DrawLoraA(std::span<float>(out.data() + p.offset, size_t(p.numel)), p.shape[1], rng);
  }
  return out;
}

Result<AdapterTensors> ParseFullWeights(std::string_view safetensors, const std::string& name) {
  PCFARM_ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Parse(safetensors, name, nullptr));
  if (file.entries().empty()) return InvalidArgument(name + ": holds no tensor");
  if (file.entries().size() > kMaxFullWeightTensors)
    return InvalidArgument(name + ": holds " + std::to_string(file.entries().size()) +
                           " tensors, more than " + std::to_string(kMaxFullWeightTensors));
  AdapterTensors out;
  for (const SafetensorsEntry& e : file.entries()) {
    if (!e.dtype)
      return InvalidArgument(name + ": " + e.name + " is " + e.dtype_name +
                             ", expected F32, F16 or BF16");
    if (e.shape.empty() || e.shape.size() > 4)
      return InvalidArgument(name + ": " + e.name + " has shape " + ShapeString(e.shape) +
                             ", expected 1 to 4 dimensions");
    PCFARM_ASSIGN_OR_RETURN(HostTensor ht, file.Tensor(e.name));
    std::vector<float> v = ht.ToF32();
    for (float x : v)
      if (!std::isfinite(x)) return InvalidArgument(name + ": " + e.name + " holds a non-finite value");
    out.layout.push_back({e.name, e.shape, int64_t(out.flat.size()), int64_t(v.size())});
    out.flat.insert(out.flat.end(), v.begin(), v.end());
  }
  return out;
}

Result<std::string> EncodeAdapterSafetensors(const std::vector<ParameterInfo>& layout,
                                             std::span<const float> flat) {
  std::vector<NamedTensor> tensors;
  for (const ParameterInfo& p : layout) {
    if (p.offset < 0 || p.numel < 0 || uint64_t(p.offset) + uint64_t(p.numel) > flat.size())
      return InvalidArgument("EncodeAdapterSafetensors: " + p.name + " at [" +
                             std::to_string(p.offset) + ", +" + std::to_string(p.numel) +
                             ") lies outside the " + std::to_string(flat.size()) +
                             " values");
    auto v = flat.subspan(size_t(p.offset), size_t(p.numel));
    tensors.push_back({p.name, HostTensor::FromF32(p.shape, std::vector<float>(v.begin(), v.end()))});
  }
  return SerializeSafetensors(tensors, {{"format", "pt"}});
}

std::string EncodeAdapterConfig(const LoraConfig& lora, const std::string& base_model_name_or_path) {
  nlohmann::json targets = nlohmann::json::array();
  for (const std::string& t : LoraTargetOrder())
    if (std::find(lora.target_modules.begin(), lora.target_modules.end(), t) !=
        lora.target_modules.end())
      targets.push_back(t);
  nlohmann::json cfg = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", lora.rank},
      {"target_modules", targets},
      {"lora_dropout", 0.0},
      {"bias", "none"},
      {"use_rslora", false},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"base_model_name_or_path", base_model_name_or_path},
  };
  if (lora.alpha == std::floor(lora.alpha) && std::abs(lora.alpha) < 1e15)
    cfg["lora_alpha"] = int64_t(lora.alpha);
  else
    cfg["lora_alpha"] = lora.alpha;
  return cfg.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace pcfarm
