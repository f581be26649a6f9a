// LlamaModel::SaveAdapter / LoadAdapter: PEFT LoRA adapter directories, in
// the bytes of tasks/engine/adapter_io.h.
#include <algorithm>
#include <filesystem>
#include <map>

#include "base/file.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/llama_internal.h"

namespace pcfarm {

Status LlamaModel::SaveAdapter(const std::string& dir,
                               const std::string& base_model_name_or_path) const {
  if (mode_ != TrainMode::kLora)
    return FailedPrecondition("SaveAdapter: the model has no LoRA adapters");
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir));
  std::vector<float> flat(static_cast<size_t>(TrainableCount()));
  for (size_t i = 0; i < params_.size(); ++i)
    PCFARM_RETURN_IF_ERROR(backend_->Download(
        params_[i].value,
        std::span(flat.data() + param_info_[i].offset, size_t(param_info_[i].numel))));
  PCFARM_ASSIGN_OR_RETURN(std::string tensors, EncodeAdapterSafetensors(param_info_, flat));
  const std::filesystem::path d(dir);
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic((d / "adapter_model.safetensors").string(), tensors));
  return WriteFileAtomic((d / "adapter_config.json").string(),
                         EncodeAdapterConfig(lora_, base_model_name_or_path));
}

Status LlamaModel::LoadAdapter(const std::string& dir) {
  if (mode_ == TrainMode::kFull)
    return FailedPrecondition("LoadAdapter: the model is in full-parameter training");
  const std::filesystem::path d(dir);
  const std::string cfg_path = (d / "adapter_config.json").string();
  const std::string st_path = (d / "adapter_model.safetensors").string();
  PCFARM_ASSIGN_OR_RETURN(std::string cfg, ReadFile(cfg_path, 1 << 20));
  PCFARM_ASSIGN_OR_RETURN(std::string st, ReadFile(st_path));
  PCFARM_ASSIGN_OR_RETURN(AdapterTensors adapter, ParseAdapter(cfg, st, cfg_path, st_path));

  // The tensors EnableLora(adapter.lora) would lay out, checked against the
  // file's before any state changes. Both are in the canonical order, so
  // once every wanted tensor is there with its shape and there are no
  // others, the file's flat buffer is the model's.
  std::map<std::string, const ParameterInfo*> found;
  for (const ParameterInfo& p : adapter.layout) found[p.name] = &p;
  size_t wanted = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    for (const std::string& t : LoraTargetOrder()) {
      if (std::find(adapter.lora.target_modules.begin(), adapter.lora.target_modules.end(), t) ==
          adapter.lora.target_modules.end())
        continue;
      const Linear& lin = layers_[l].ByTarget(t);
      for (bool b : {false, true}) {
        const std::string name = LoraTensorName(int64_t(l), t, b);
        const std::vector<int64_t> shape =
            b ? std::vector<int64_t>{lin.out, adapter.lora.rank}
              : std::vector<int64_t>{adapter.lora.rank, lin.in};
        auto it = found.find(name);
        if (it == found.end()) return InvalidArgument(st_path + ": missing tensor " + name);
        if (it->second->shape != shape)
          return InvalidArgument(st_path + ": " + name + " has shape " +
                                 ShapeString(it->second->shape) + ", expected " +
                                 ShapeString(shape));
        ++wanted;
      }
    }
  }
  if (wanted != adapter.layout.size())
    return InvalidArgument(st_path + ": unexpected tensor " + adapter.layout[wanted].name +
                           " (the model has " + std::to_string(layers_.size()) + " layers)");
  PCFARM_RETURN_IF_ERROR(EnableLora(adapter.lora));
  return SetParameters(adapter.flat);
}

Status LlamaModel::LoadFullWeights(const std::string& path) {
  PCFARM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  PCFARM_ASSIGN_OR_RETURN(AdapterTensors w, ParseFullWeights(bytes, path));
  PCFARM_RETURN_IF_ERROR(EnableFullTraining());
  const size_t n = std::min(w.layout.size(), param_info_.size());
  for (size_t i = 0; i < n; ++i) {
    const ParameterInfo& want = param_info_[i];
    const ParameterInfo& got = w.layout[i];
    if (got.name != want.name)
      return InvalidArgument(path + ": tensor " + std::to_string(i) + " is " + got.name +
                             ", expected " + want.name + " (the model's weights, in order)");
    if (got.shape != want.shape)
      return InvalidArgument(path + ": " + got.name + " has shape " + ShapeString(got.shape) +
                             ", expected " + ShapeString(want.shape));
  }
  if (w.layout.size() > n)
    return InvalidArgument(path + ": unexpected tensor " + w.layout[n].name);
  if (param_info_.size() > n) return InvalidArgument(path + ": missing tensor " + param_info_[n].name);
  PCFARM_RETURN_IF_ERROR(SetParameters(w.flat));
  for (Param& p : params_)
    for (const Tensor* t : {&p.grad, &p.m, &p.v}) PCFARM_RETURN_IF_ERROR(backend_->Fill(*t, 0));
  accumulated_weight_ = 0;
  step_ = 0;
  return Status::Ok();
}

}  // namespace pcfarm
