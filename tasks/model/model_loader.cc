#include "tasks/model/model_loader.h"

#include <filesystem>
#include <map>

#include "base/file.h"
#include "tasks/model/gguf.h"

namespace pcfarm {
namespace {

void FillSpecialIds(LoadedModel* m) {
  if (m->config.bos_token_id < 0) m->config.bos_token_id = m->tokenizer.bos_id();
  if (m->config.eos_token_ids.empty() && m->tokenizer.eos_id() >= 0)
    m->config.eos_token_ids = {m->tokenizer.eos_id()};
}

}  // namespace

Result<LoadedModel> LoadModel(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  LoadedModel m;
  m.source = path;
  if (fs::is_directory(path, ec)) {
    PCFARM_ASSIGN_OR_RETURN(m.config, LoadHfConfig(path));
    PCFARM_ASSIGN_OR_RETURN(m.weights, ModelWeights::LoadHfDir(path, m.config));
    std::string tok = (fs::path(path) / "tokenizer.json").string();
    if (!fs::exists(tok, ec)) return NotFound(path + ": no tokenizer.json");
    PCFARM_ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::Load(tok));
  } else if (fs::exists(path, ec)) {
    PCFARM_ASSIGN_OR_RETURN(GgufFile g, GgufFile::Open(path));
    PCFARM_ASSIGN_OR_RETURN(m.config, ConfigFromGguf(g));
    PCFARM_ASSIGN_OR_RETURN(m.weights, ModelWeights::FromGguf(g, m.config));
    PCFARM_ASSIGN_OR_RETURN(m.tokenizer, Tokenizer::FromGguf(g));
  } else {
    return NotFound(path + ": no such model directory or GGUF file");
  }
  if (m.tokenizer.vocab_size() > m.config.vocab_size)
    return InvalidArgument(path + ": tokenizer has " + std::to_string(m.tokenizer.vocab_size()) +
                           " tokens but the model's vocab_size is " +
                           std::to_string(m.config.vocab_size));
  FillSpecialIds(&m);
  return m;
}

Status WriteHfModel(const std::string& dir, const ModelConfig& config,
                    const std::vector<NamedTensor>& tensors,
                    const std::string& tokenizer_json) {
  std::map<std::string, HostTensor> by_name;
  for (const NamedTensor& t : tensors) by_name[t.name] = t.tensor;
  PCFARM_RETURN_IF_ERROR(ModelWeights::FromTensors(by_name, config, dir).status());
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir));
  namespace fs = std::filesystem;
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic((fs::path(dir) / "config.json").string(),
                                         ToHfConfigJson(config)));
  PCFARM_RETURN_IF_ERROR(WriteSafetensors((fs::path(dir) / "model.safetensors").string(), tensors,
                                          {{"format", "pt"}}));
  return WriteFileAtomic((fs::path(dir) / "tokenizer.json").string(), tokenizer_json);
}

}  // namespace pcfarm
