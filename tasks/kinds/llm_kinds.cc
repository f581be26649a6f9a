#include "tasks/kinds/llm_kinds.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/aggregate/compress.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/llama.h"
#include "tasks/engine/token_data.h"
#include "tasks/kinds/llm_kinds_internal.h"
#include "tasks/kinds/train_result.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

using nlohmann::json;

bool PlainFileName(const std::string& n) {
  if (n.empty() || n.size() > 128 || n == "." || n == "..") return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

bool HexHash(const std::string& h) {
  if (h.size() != 64) return false;
  for (char c : h) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

bool IsGgufName(const std::string& n) {
  return n.size() > 5 && n.compare(n.size() - 5, 5, ".gguf") == 0;
}

Status CheckFiles(const json& j, const char* field, bool required) {
  auto it = j.find(field);
  if (it == j.end()) {
    return required ? InvalidArgument(std::string("missing field '") + field + "'")
                    : Status::Ok();
  }
  if (!it->is_object() || it->empty()) {
    return InvalidArgument(std::string("'") + field + "' must map file names to blob hashes");
  }
  for (const auto& [name, hash] : it->items()) {
    if (!PlainFileName(name)) {
      return InvalidArgument(std::string("'") + field + "': bad file name '" + name + "'");
    }
    if (!hash.is_string() || !HexHash(hash.get<std::string>())) {
      return InvalidArgument(std::string("'") + field + "." + name +
                             "' must be a 64-digit hex hash");
    }
    if (IsGgufName(name) && it->size() != 1) {
      return InvalidArgument(std::string("'") + field + "': a .gguf file holds the whole model (" +
                             name + "), so it must be the only file");
    }
  }
  return Status::Ok();
}

// A temporary directory of links to blobs, removed when it goes.
class BlobDir {
 public:
  ~BlobDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  static Result<std::unique_ptr<BlobDir>> Make(const json& files,
                                               const RunContext& ctx) {
    if (!ctx.blob_path) {
      return FailedPrecondition("this runner cannot fetch blobs");
    }
    std::string tmpl = (std::filesystem::temp_directory_path() / "pcfarm-model-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) return IoError("cannot make a temporary directory");
    auto dir = std::unique_ptr<BlobDir>(new BlobDir(tmpl));
    for (const auto& [name, hash] : files.items()) {
      PCFARM_ASSIGN_OR_RETURN(std::string src, ctx.blob_path(hash.get<std::string>()));
      std::error_code ec;
      std::filesystem::create_symlink(std::filesystem::absolute(src), tmpl + "/" + name, ec);
      if (ec) return IoError("link " + name + ": " + ec.message());
    }
    return dir;
  }
  const std::string& path() const { return path_; }

 private:
  explicit BlobDir(std::string p) : path_(std::move(p)) {}
  std::string path_;
};

// The optional "quantize" param: "q8_0", "q4_0", "q4_k" or "q6_k"
// quantizes the base's projections at load (QLoRA; LlamaOptions::quantize).
Result<StorageType> QuantizeParam(const json& p) {
  auto q = p.find("quantize");
  if (q == p.end()) return StorageType::kF32;
  if (!q->is_string())
    return InvalidArgument("'quantize' must be a string: \"q8_0\", \"q4_0\", \"q4_k\" or \"q6_k\"");
  Result<StorageType> t = ParseWeightQuantization(q->get<std::string>());
  if (!t.ok()) return t.status().WithContext("'quantize'");
  return t;
}

// The model map is a Hugging Face directory, or one .gguf file (config,
// weights and tokenizer inside).
Result<std::unique_ptr<ModelInstance>> LoadFromParams(const json& p, const RunContext& ctx) {
  LlamaOptions options;
  PCFARM_ASSIGN_OR_RETURN(options.quantize, QuantizeParam(p));
  const json& files = p.at("model");
  PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<BlobDir> model_dir, BlobDir::Make(files, ctx));
  std::string path = model_dir->path();
  if (files.size() == 1 && IsGgufName(files.begin().key())) path += "/" + files.begin().key();
  PCFARM_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(path));
  auto m = std::make_unique<ModelInstance>();
  BackendOptions bo;
  bo.device_index = ctx.device_index;
  bo.cpu_threads = ctx.cpu_threads;
  bo.memory_limit_bytes = ctx.memory_limit_bytes;
  PCFARM_ASSIGN_OR_RETURN(m->backend, CreateBackend(ctx.backend, bo));
  PCFARM_ASSIGN_OR_RETURN(m->model, LlamaModel::Create(loaded.config, loaded.weights,
                                                       m->backend.get(), options));
  m->tokenizer = std::move(loaded.tokenizer);
  if (p.contains("adapter")) {
    PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<BlobDir> adapter_dir,
                            BlobDir::Make(p.at("adapter"), ctx));
    PCFARM_RETURN_IF_ERROR(m->model->LoadAdapter(adapter_dir->path()));
  }
  // The directories of links go now: Create copied the weights to the
  // backend (`loaded`, which maps the files, goes with this scope) and
  // LoadAdapter read its files whole, so the model never reads them again.
  return m;
}

// The idle models of infer shards, kept for the next shard that names the
// same files on the same device: loading costs a file read and an upload per
// shard, the generation of a small shard often less.
//
// A model is lent to one Run at a time (LlamaModel and Backend are one
// thread at a time): Acquire takes it out of the cache and Return puts it
// back. A second Run that wants the same model while the first holds it
// loads its own instance rather than waiting: that is what every Run did
// before the cache, and the worker's slots keep running side by side
// (waiting would make them take turns on one model). So that a load never
// finds more models in memory than it did before the cache, a miss first
// drops every idle model (none has its key), and a train shard, which
// changes its model and so never reuses one, drops them too. At most
// kIdleModels stay idle, the least recently returned going first.
//
// Keys are the content hashes of the files, so a cached model is what the
// files hold even after the worker's blob cache evicts them; the model does
// not read them after loading.
class InferModelCache {
 public:
  struct Key {
    std::string model, adapter, backend;  // canonical JSON of the file maps
    int device_index = 0;
    bool operator==(const Key&) const = default;
  };

  static Key KeyOf(const json& p, const RunContext& ctx) {
    // A quantized base is another model than the file's.
    std::string model = p.at("model").dump();
    if (p.contains("quantize")) model += " quantize=" + p.at("quantize").dump();
    return {model, p.contains("adapter") ? p.at("adapter").dump() : "", ctx.backend,
            ctx.device_index};
  }

  // The process's cache; never destroyed (a GPU backend must not be torn
  // down after its driver at exit).
  static InferModelCache& Get() {
    static auto* cache = new InferModelCache;
    return *cache;
  }

  // An idle model with `key`, or nullptr after dropping every idle model.
  std::unique_ptr<ModelInstance> Acquire(const Key& key) {
    std::vector<Entry> dropped;
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if (it->key == key) {
        std::unique_ptr<ModelInstance> m = std::move(it->model);
        idle_.erase(it);
        return m;
      }
    }
    dropped.swap(idle_);  // freed after the lock is released
    return nullptr;
  }

  // Takes back a model that served a Run without error.
  void Return(Key key, std::unique_ptr<ModelInstance> m) {
    std::vector<Entry> dropped;
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back({std::move(key), std::move(m)});
    while (idle_.size() > kIdleModels) {
      dropped.push_back(std::move(idle_.front()));
      idle_.erase(idle_.begin());
    }
  }

  void DropIdle() {
    std::vector<Entry> dropped;
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(idle_);
  }

 private:
  // Two: a worker with two slots on one model keeps both instances.
  static constexpr size_t kIdleModels = 2;
  struct Entry {
    Key key;
    std::unique_ptr<ModelInstance> model;
  };
  std::mutex mu_;
  std::vector<Entry> idle_;  // oldest first
};

template <typename T>
Status GetNumber(const json& j, const char* name, T lo, T hi, T* out) {
  auto it = j.find(name);
  if (it == j.end()) return Status::Ok();
  if (!it->is_number()) return InvalidArgument(std::string("'") + name + "' must be a number");
  double v = it->get<double>();
  if (!(v >= double(lo) && v <= double(hi))) {
    return InvalidArgument(std::string("'") + name + "' must be in " + std::to_string(lo) +
                           ".." + std::to_string(hi));
  }
  *out = static_cast<T>(v);
  return Status::Ok();
}

Status CheckTokenLists(const json& arr, const char* what) {
  if (!arr.is_array() || arr.empty()) {
    return InvalidArgument(std::string("'") + what + "' must be a non-empty array");
  }
  for (size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_array() || arr[i].empty()) {
      return InvalidArgument(std::string(what) + "[" + std::to_string(i) +
                             "] must be a non-empty array of token ids");
    }
    for (const auto& t : arr[i]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return InvalidArgument(std::string(what) + "[" + std::to_string(i) +
                               "] holds a value that is not a token id");
      }
    }
  }
  return Status::Ok();
}

// The most values a train result may hold: what fits the output as f32.
constexpr int64_t kMaxTrainValues = int64_t(kTrainMaxOutputBytes / 4);
// The model cache's key for a train shard's base model (no infer key has it).
const char kTrainModelKey[] = "\x01train";
// Full fine-tuning's base, apart from LoRA's: a model in full-training mode
// cannot take adapters, and one with adapters cannot train every weight.
const char kTrainFullModelKey[] = "\x01train-full";
constexpr const char* kFullWeightsFile = "model.safetensors";

constexpr const char* kCompressedAdapterFile = "adapter_model.pcg";

// Whether a train shard's "adapter" is a compressed version: its config and
// "adapter_model.pcg", the values in the canonical LoRA order as a gradient
// message (tasks/aggregate/compress.h), which a fine-tuning job sends down
// with --compress fp16|int8. An "adapter" is exactly that pair or the PEFT
// pair.
Result<bool> CompressedAdapter(const json& p) {
  auto a = p.find("adapter");
  if (a == p.end()) return false;
  const bool compressed = a->contains(kCompressedAdapterFile);
  if (a->size() != 2 || !a->contains("adapter_config.json") ||
      !(compressed || a->contains("adapter_model.safetensors"))) {
    return InvalidArgument("'adapter' must name adapter_config.json and "
                           "adapter_model.safetensors (or adapter_model.pcg)");
  }
  return compressed;
}

// The train shard's "method": false for "lora" (the default), true for
// "full"; "full" needs "weights" ({"model.safetensors": HASH}, the version
// it trains from) and takes no "adapter", "lora" or "quantize"; "lora"
// takes no "weights".
Result<bool> FullMethod(const json& p) {
  auto m = p.find("method");
  const bool full = m != p.end() && *m == "full";
  if (m != p.end() && !full && *m != "lora")
    return InvalidArgument("'method' must be \"lora\" or \"full\"");
  if (!full) {
    if (p.contains("weights")) return InvalidArgument("'weights' is for method \"full\"");
    return false;
  }
  PCFARM_RETURN_IF_ERROR(CheckFiles(p, "weights", true));
  if (p["weights"].size() != 1 || !p["weights"].contains(kFullWeightsFile))
    return InvalidArgument(std::string("'weights' must name exactly ") + kFullWeightsFile);
  for (const char* field : {"adapter", "lora", "quantize"})
    if (p.contains(field))
      return InvalidArgument(std::string("method \"full\" takes no '") + field + "'");
  return true;
}

bool FiniteNumber(const json& v) {
  return v.is_number() && std::isfinite(v.get<double>());
}

// Decoded tokens are short: a token is one to a few dozen bytes (runs of
// spaces or punctuation reach a hundred or two), and replacing a byte that
// is not UTF-8 makes it three.
constexpr size_t kMaxTextBytesPerToken = 256;

// The generation settings of infer params.
Status InferGenerationSettings(const json& p, GenerationConfig* g, uint64_t* seed) {
  g->max_new_tokens = 64;
  PCFARM_RETURN_IF_ERROR(GetNumber<int64_t>(p, "max_tokens", 1, 4096, &g->max_new_tokens));
  PCFARM_RETURN_IF_ERROR(GetNumber<double>(p, "temperature", 0, 100, &g->sampling.temperature));
  PCFARM_RETURN_IF_ERROR(GetNumber<int64_t>(p, "top_k", 0, 1 << 20, &g->sampling.top_k));
  PCFARM_RETURN_IF_ERROR(GetNumber<double>(p, "top_p", 1e-6, 1, &g->sampling.top_p));
  auto it = p.find("seed");
  if (it != p.end()) {
    if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<int64_t>() >= 0)) {
      return InvalidArgument("'seed' must be a non-negative integer");
    }
    *seed = it->get<uint64_t>();
  }
  return Status::Ok();
}

}  // namespace

// ------------------------------------------- shared with infer_check

Result<json> ParseParamsObject(std::string_view params, size_t max_bytes) {
  if (params.size() > max_bytes) {
    return InvalidArgument("params of " + std::to_string(params.size()) +
                           " bytes are over the size limit of " + std::to_string(max_bytes));
  }
  try {
    json j = json::parse(params);
    if (!j.is_object()) return InvalidArgument("params must be a JSON object");
    return j;
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("params are not JSON: ") + e.what());
  }
}

Result<json> ParseResultObject(std::string_view output, int depth, const char* kind) {
  if (output.size() > kLlmMaxOutputBytes) {
    return InvalidArgument(std::string(kind) + " result of " +
                           std::to_string(output.size()) +
                           " bytes is over the limit of " +
                           std::to_string(kLlmMaxOutputBytes));
  }
  std::string what = std::string(kind) + " result";
  PCFARM_ASSIGN_OR_RETURN(json r, ParseBoundedJson(output, depth, what));
  if (!r.is_object()) return InvalidArgument(what + ": not a JSON object");
  return r;
}

Status CheckInferParams(const json& p, InferSettings* settings) {
  PCFARM_RETURN_IF_ERROR(CheckFiles(p, "model", true));
  PCFARM_RETURN_IF_ERROR(CheckFiles(p, "adapter", false));
  PCFARM_RETURN_IF_ERROR(QuantizeParam(p).status());
  bool text = p.contains("prompts"), ids = p.contains("prompt_tokens");
  if (text == ids) return InvalidArgument("give exactly one of 'prompts' and 'prompt_tokens'");
  if (text) {
    const json& a = p["prompts"];
    if (!a.is_array() || a.empty()) return InvalidArgument("'prompts' must be a non-empty array");
    for (const auto& s : a) {
      if (!s.is_string()) return InvalidArgument("'prompts' must hold strings");
    }
  } else {
    PCFARM_RETURN_IF_ERROR(CheckTokenLists(p["prompt_tokens"], "prompt_tokens"));
  }
  *settings = InferSettings{};
  return InferGenerationSettings(p, &settings->generation, &settings->seed);
}

size_t InferPromptCount(const json& p) {
  return p.contains("prompts") ? p["prompts"].size()
                               : p.value("prompt_tokens", json::array()).size();
}

Result<std::vector<GenerationRequest>> InferRequests(const json& p, const Tokenizer& tokenizer,
                                                     uint64_t seed) {
  std::vector<GenerationRequest> reqs;
  if (p.contains("prompts")) {
    for (const auto& s : p["prompts"]) {
      auto ids = tokenizer.Encode(s.get<std::string>(), true);
      if (ids.empty()) return InvalidArgument("a prompt encodes to no tokens");
      reqs.push_back({std::move(ids), 0});
    }
  } else {
    for (const auto& a : p["prompt_tokens"]) {
      GenerationRequest r;
      for (const auto& t : a) r.prompt.push_back(t.get<int32_t>());
      reqs.push_back(std::move(r));
    }
  }
  for (size_t i = 0; i < reqs.size(); ++i) reqs[i].seed = seed + i;
  return reqs;
}

Status CheckInferOutputs(const json& outs, size_t prompts, int64_t max_tokens,
                         const std::string& what, const std::string& field) {
  if (!outs.is_array() || outs.size() != prompts) {
    return InvalidArgument(what + ": '" + field + "' must hold one entry per prompt (" +
                           std::to_string(prompts) + ")");
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    const json& o = outs[i];
    std::string where = what + ": " + field + "[" + std::to_string(i) + "]";
    if (!o.is_object()) return InvalidArgument(where + " is not an object");
    auto t = o.find("tokens"), l = o.find("logprobs"), f = o.find("finish");
    if (t == o.end() || !t->is_array() || t->size() > size_t(max_tokens)) {
      return InvalidArgument(where + ": 'tokens' must be an array of at most " +
                             std::to_string(max_tokens) + " ids");
    }
    for (const auto& id : *t) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return InvalidArgument(where + ": 'tokens' holds a value that is not a token id");
      }
    }
    auto x = o.find("text");
    const size_t max_text = kMaxTextBytesPerToken * t->size() + 64;
    if (x == o.end() || !x->is_string() || x->get_ref<const std::string&>().size() > max_text) {
      return InvalidArgument(where + ": 'text' must be a string of at most " +
                             std::to_string(max_text) + " bytes");
    }
    if (l == o.end() || !l->is_array() || l->size() != t->size()) {
      return InvalidArgument(where + ": 'logprobs' must have one number per token");
    }
    for (const auto& v : *l) {
      if (!FiniteNumber(v) || v.get<double>() > 1e-3) {
        return InvalidArgument(where + ": 'logprobs' must be finite numbers <= 0");
      }
    }
    if (f == o.end() || !f->is_string() || (*f != "stop" && *f != "length")) {
      return InvalidArgument(where + ": 'finish' must be \"stop\" or \"length\"");
    }
  }
  return Status::Ok();
}

std::string InferOutputText(const Tokenizer& tokenizer, const std::vector<int32_t>& tokens) {
  // As `pcfarm local generate` prints it: nlohmann's replacing dump.
  const std::string raw = tokenizer.Decode(tokens, /*skip_special=*/true);
  return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

Result<std::unique_ptr<ModelInstance>> AcquireInferModel(const json& p, const RunContext& ctx) {
  std::unique_ptr<ModelInstance> m =
      InferModelCache::Get().Acquire(InferModelCache::KeyOf(p, ctx));
  if (m == nullptr) {
    PCFARM_ASSIGN_OR_RETURN(m, LoadFromParams(p, ctx));
  }
  return m;
}

void ReturnInferModel(const json& p, const RunContext& ctx, std::unique_ptr<ModelInstance> m) {
  InferModelCache::Get().Return(InferModelCache::KeyOf(p, ctx), std::move(m));
}

namespace {

// ------------------------------------------------------------------ infer

class InferKind final : public TaskKind {
 public:
  std::string_view name() const override { return "infer"; }

  Status ValidateParams(std::string_view params) const override {
    PCFARM_ASSIGN_OR_RETURN(json p, ParseParamsObject(params));
    InferSettings settings;
    return CheckInferParams(p, &settings);
  }

  Result<std::string> Run(std::string_view params, const RunContext& ctx) const override {
    PCFARM_ASSIGN_OR_RETURN(json p, ParseParamsObject(params));
    InferSettings settings;
    PCFARM_RETURN_IF_ERROR(CheckInferParams(p, &settings));
    GenerationConfig& g = settings.generation;
    PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<ModelInstance> m, AcquireInferModel(p, ctx));
    ctx.ReportProgress(0.1);
    if (ctx.cancelled()) return Cancelled("cancelled");
    PCFARM_ASSIGN_OR_RETURN(std::vector<GenerationRequest> reqs,
                            InferRequests(p, m->tokenizer, settings.seed));
    g.check_point = [&ctx] { return ctx.CheckPoint(); };
    // A model whose Generate failed is dropped with `m`: the device may
    // have left it unusable.
    PCFARM_ASSIGN_OR_RETURN(auto gens, m->model->Generate(reqs, g));
    json outputs = json::array();
    for (const auto& gen : gens) {
      outputs.push_back({{"tokens", gen.tokens},
                         {"text", InferOutputText(m->tokenizer, gen.tokens)},
                         {"logprobs", gen.logprobs},
                         {"finish", gen.finish == FinishReason::kStop ? "stop" : "length"}});
    }
    ReturnInferModel(p, ctx, std::move(m));
    ctx.ReportProgress(1.0);
    return json{{"outputs", outputs}, {"backend", ctx.backend}}.dump(
        -1, ' ', false, json::error_handler_t::replace);
  }

  size_t max_output_bytes() const override { return kLlmMaxOutputBytes; }

  // One output per prompt, each with at most max_tokens token ids, a text
  // of at most kMaxTextBytesPerToken per token (+ 64), one finite logprob
  // <= 0 per token, and finish "stop" or "length".
  Status ValidateOutput(std::string_view params,
                        std::string_view output) const override {
    PCFARM_ASSIGN_OR_RETURN(json r, ParseResultObject(output, 4, "infer"));
    PCFARM_ASSIGN_OR_RETURN(json p, ParseParamsObject(params));
    InferSettings settings;
    PCFARM_RETURN_IF_ERROR(CheckInferParams(p, &settings));
    auto outs = r.find("outputs");
    if (outs == r.end()) {
      return InvalidArgument("infer result: 'outputs' must hold one entry per prompt (" +
                             std::to_string(InferPromptCount(p)) + ")");
    }
    return CheckInferOutputs(*outs, InferPromptCount(p), settings.generation.max_new_tokens,
                             "infer result", "outputs");
  }

  bool Agree(std::string_view a, std::string_view b) const override {
    try {
      json x = json::parse(a), y = json::parse(b);
      const json &ox = x.at("outputs"), &oy = y.at("outputs");
      if (!ox.is_array() || ox.size() != oy.size()) return false;
      for (size_t i = 0; i < ox.size(); ++i) {
        if (ox[i].at("tokens") != oy[i].at("tokens")) return false;
        if (ox[i].at("text") != oy[i].at("text")) return false;
        const json &lx = ox[i].at("logprobs"), &ly = oy[i].at("logprobs");
        if (lx.size() != ly.size()) return false;
        for (size_t k = 0; k < lx.size(); ++k) {
          if (std::fabs(lx[k].get<double>() - ly[k].get<double>()) > kInferLogprobTolerance) {
            return false;
          }
        }
      }
      return true;
    } catch (const json::exception&) {
      return false;
    }
  }
};

// ------------------------------------------------------------------ train

// The error-feedback residuals of this process's compressed train results,
// one stream per key (a job) and codec and size: what compression lost in
// one shard's values is added to the next shard of the same job here, so
// over a job nothing is lost for good (tasks/aggregate/compress.h). The
// residuals live in memory: a worker that restarts starts them at zero,
// which loses at most one message's rounding. At most kFeedbackStreams are
// kept, the least recently used going first.
class FeedbackStreams {
 public:
  static FeedbackStreams& Get() {
    static auto* streams = new FeedbackStreams;
    return *streams;
  }

  Result<std::string> Encode(const std::string& key, const TrainResult& r) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string full = key + "/" + GradientCodecName(r.codec) + "/" +
                             std::to_string(r.values.size());
    auto it = streams_.begin();
    for (; it != streams_.end(); ++it) {
      if (it->first == full) break;
    }
    if (it == streams_.end()) {
      if (streams_.size() >= kFeedbackStreams) streams_.erase(streams_.begin());
      streams_.emplace_back(full, ErrorFeedback(r.codec, r.values.size()));
      it = std::prev(streams_.end());
    } else {
      std::rotate(it, std::next(it), streams_.end());  // most recent last
      it = std::prev(streams_.end());
    }
    return EncodeTrainResult(r, &it->second);
  }

 private:
  static constexpr size_t kFeedbackStreams = 8;
  std::mutex mu_;
  std::vector<std::pair<std::string, ErrorFeedback>> streams_;
};

class TrainKind final : public TaskKind {
 public:
  std::string_view name() const override { return "train"; }

  Status ValidateParams(std::string_view params) const override {
    PCFARM_ASSIGN_OR_RETURN(json p, ParseParamsObject(params));
    PCFARM_RETURN_IF_ERROR(CheckFiles(p, "model", true));
    PCFARM_RETURN_IF_ERROR(CheckFiles(p, "adapter", false));
    PCFARM_RETURN_IF_ERROR(QuantizeParam(p).status());
    PCFARM_RETURN_IF_ERROR(FullMethod(p).status());
    PCFARM_RETURN_IF_ERROR(CompressedAdapter(p).status());
    const bool inline_batch = p.contains("batch");
    const bool per_step = p.contains("steps_examples");
    if (inline_batch ==
        (p.contains("data") || p.contains("examples") || per_step)) {
      return InvalidArgument(
          "give exactly one of 'batch' and 'data' with 'examples' or 'steps_examples'");
    }
    if (per_step && p.contains("examples")) {
      return InvalidArgument("give 'examples' or 'steps_examples', not both");
    }
    if (inline_batch) {
      PCFARM_RETURN_IF_ERROR(CheckBatch(p["batch"]));
    } else if (per_step) {
      PCFARM_RETURN_IF_ERROR(CheckDataStepsExamples(p));
    } else {
      PCFARM_RETURN_IF_ERROR(CheckDataExamples(p));
    }
    LoraConfig lora;
    OptimizerConfig opt;
    int64_t steps = 0;
    PCFARM_RETURN_IF_ERROR(Settings(p, &lora, &opt, &steps));
    if (per_step && p.contains("local_steps") && steps != int64_t(p["steps_examples"].size())) {
      return InvalidArgument("'local_steps' is " + std::to_string(steps) +
                             " but 'steps_examples' has " +
                             std::to_string(p["steps_examples"].size()) +
                             " lists (one per local step)");
    }
    GradientCodec codec;
    std::string feedback;
    return Compression(p, &codec, &feedback);
  }

  Result<std::string> Run(std::string_view params, const RunContext& ctx) const override {
    PCFARM_RETURN_IF_ERROR(ValidateParams(params));
    json p = json::parse(params);
    LoraConfig lora;
    OptimizerConfig opt;
    int64_t steps = 0;
    PCFARM_RETURN_IF_ERROR(Settings(p, &lora, &opt, &steps));
    // One batch for every step, or (steps_examples) one batch per local step.
    std::vector<std::vector<TokenSequence>> step_batches;
    std::vector<TokenSequence> batch;
    if (p.contains("steps_examples")) {
      PCFARM_ASSIGN_OR_RETURN(step_batches, StepBatchesOf(p, ctx));
      steps = int64_t(step_batches.size());
    } else {
      PCFARM_ASSIGN_OR_RETURN(batch, BatchOf(p, ctx));
    }
    // The base model stays loaded between train shards (a fine-tuning job's
    // shards all name it); each shard sets its own adapter, which replaces
    // the LoRA state of the last one. Its key is apart from infer's, so an
    // infer shard never gets a model with trained adapters.
    // A full fine-tuning shard loads its version of every weight over the
    // last one's.
    PCFARM_ASSIGN_OR_RETURN(const bool full, FullMethod(p));
    InferModelCache& cache = InferModelCache::Get();
    InferModelCache::Key key = InferModelCache::KeyOf(p, ctx);
    key.adapter = full ? kTrainFullModelKey : kTrainModelKey;
    std::unique_ptr<ModelInstance> m = cache.Acquire(key);
    if (m == nullptr) {
      json base = p;
      base.erase("adapter");
      base.erase("weights");
      PCFARM_ASSIGN_OR_RETURN(m, LoadFromParams(base, ctx));
    }
    if (full) {
      PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<BlobDir> weights_dir,
                              BlobDir::Make(p.at("weights"), ctx));
      PCFARM_RETURN_IF_ERROR(
          m->model->LoadFullWeights(weights_dir->path() + "/" + kFullWeightsFile));
    } else if (p.contains("adapter")) {
      // The current version: train from it.
      PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<BlobDir> adapter_dir,
                              BlobDir::Make(p.at("adapter"), ctx));
      PCFARM_ASSIGN_OR_RETURN(const bool compressed, CompressedAdapter(p));
      if (compressed) {
        // Its config, then the values as the job's codec sent them.
        const std::string cfg_path = adapter_dir->path() + "/adapter_config.json";
        PCFARM_ASSIGN_OR_RETURN(std::string cfg, ReadFile(cfg_path, 1 << 20));
        PCFARM_ASSIGN_OR_RETURN(LoraConfig sent, ParseAdapterConfig(cfg, cfg_path));
        PCFARM_ASSIGN_OR_RETURN(
            std::string bytes,
            ReadFile(adapter_dir->path() + "/" + kCompressedAdapterFile, kTrainMaxOutputBytes));
        auto values = DecodeGradient(bytes);
        if (!values.ok()) return values.status().WithContext(kCompressedAdapterFile);
        PCFARM_RETURN_IF_ERROR(m->model->EnableLora(sent));
        PCFARM_RETURN_IF_ERROR(m->model->SetParameters(*values).WithContext(kCompressedAdapterFile));
      } else {
        PCFARM_RETURN_IF_ERROR(m->model->LoadAdapter(adapter_dir->path()));
      }
    } else {
      PCFARM_RETURN_IF_ERROR(m->model->EnableLora(lora));
    }
    ctx.ReportProgress(0.1);
    json out;
    std::vector<float> values;
    if (steps == 0) {
      PCFARM_ASSIGN_OR_RETURN(CrossEntropySums sums, m->model->AccumulateGradients(batch));
      PCFARM_ASSIGN_OR_RETURN(values, m->model->ExportGradients());
      for (float& v : values) v = static_cast<float>(v * sums.weight);
      out = {{"loss", sums.mean()}, {"weight", sums.weight}, {"tokens", sums.counted}};
    } else {
      // Fresh AdamW moments: LoadAdapter, LoadFullWeights and EnableLora reset the optimizer.
      PCFARM_ASSIGN_OR_RETURN(std::vector<float> before, m->model->GetParameters());
      CrossEntropySums first, all;
      for (int64_t s = 0; s < steps; ++s) {
        if (ctx.CheckPoint()) return Cancelled("cancelled");
        const std::vector<TokenSequence>& b =
            step_batches.empty() ? batch : step_batches[size_t(s)];
        PCFARM_ASSIGN_OR_RETURN(CrossEntropySums sums, m->model->AccumulateGradients(b));
        if (s == 0) first = sums;
        all.weighted_loss += sums.weighted_loss;
        all.weight += sums.weight;
        all.counted += sums.counted;
        PCFARM_RETURN_IF_ERROR(m->model->Step(opt).status());
        ctx.ReportProgress(0.1 + 0.9 * double(s + 1) / double(steps));
      }
      PCFARM_ASSIGN_OR_RETURN(values, m->model->GetParameters());
      for (size_t i = 0; i < values.size(); ++i) values[i] -= before[i];
      // One batch H times: its loss before the first step. A batch per step:
      // what every step saw, before it stepped.
      const CrossEntropySums& r = step_batches.empty() ? first : all;
      out = {{"loss", r.mean()}, {"weight", r.weight}, {"tokens", r.counted}};
    }
    TrainResult result;
    result.loss = out.at("loss").get<double>();
    result.weight = out.at("weight").get<double>();
    result.tokens = out.at("tokens").get<int64_t>();
    result.backend = ctx.backend;
    result.values = std::move(values);
    GradientCodec codec;
    std::string feedback_key;
    PCFARM_RETURN_IF_ERROR(Compression(p, &codec, &feedback_key));
    result.codec = codec;
    std::string bytes;
    if (codec != GradientCodec::kNone && !feedback_key.empty()) {
      PCFARM_ASSIGN_OR_RETURN(bytes, FeedbackStreams::Get().Encode(feedback_key, result));
    } else {
      PCFARM_ASSIGN_OR_RETURN(bytes, EncodeTrainResult(result));
    }
    cache.Return(std::move(key), std::move(m));
    ctx.ReportProgress(1.0);
    return bytes;
  }

  size_t max_output_bytes() const override { return kTrainMaxOutputBytes; }

  // A binary train result (train_result.h) that decodes: finite loss,
  // weight >= 0, tokens >= 0, and its values, all finite.
  Status ValidateOutput(std::string_view params,
                        std::string_view output) const override {
    (void)params;  // the number of values depends on the model, not the params
    return DecodeTrainResult(output, kMaxTrainValues).status();
  }

  bool Agree(std::string_view a, std::string_view b) const override {
    auto x = DecodeTrainResult(a, kMaxTrainValues), y = DecodeTrainResult(b, kMaxTrainValues);
    if (!x.ok() || !y.ok()) return false;
    const double lx = x->loss, ly = y->loss;
    if (std::fabs(lx - ly) > 1e-4 * std::max(std::fabs(lx), std::fabs(ly)) + 1e-6) return false;
    // The weight and token count are sums over the same examples: equal up
    // to the order of a float sum. The coordinator divides by Σ weight, so
    // a result with honest values but another weight is another answer.
    if (x->tokens != y->tokens) return false;
    if (std::fabs(x->weight - y->weight) >
        1e-6 * std::max(std::fabs(x->weight), std::fabs(y->weight)) + 1e-9) {
      return false;
    }
    const std::vector<float>&vx = x->values, &vy = y->values;
    if (vx.size() != vy.size() || vx.empty()) return false;
    double dot = 0, nx = 0, ny = 0, dd = 0;
    for (size_t i = 0; i < vx.size(); ++i) {
      const double p = vx[i], q = vy[i];
      dot += p * q;
      nx += p * p;
      ny += q * q;
      dd += (p - q) * (p - q);
    }
    if (nx == 0 && ny == 0) return true;
    if (x->codec != y->codec) return false;
    const TrainAgreement t = TrainAgreementFor(x->codec);
    const double rel = std::sqrt(dd) / std::max(std::sqrt(nx), std::sqrt(ny));
    const double cosine = dot / std::sqrt(nx * ny);
    return rel <= t.max_relative_l2 && cosine >= t.min_cosine;
  }

 private:
  // Most sequences a shard may name by index.
  static constexpr size_t kMaxExamples = 100000;
  // Most local steps a shard takes ("local_steps", "steps_examples").
  static constexpr int64_t kMaxLocalSteps = 10000;
  // Token data blobs whose decoded sequences are kept: a job's consecutive
  // shards name the same blob.
  static constexpr size_t kCachedTokenData = 2;
  // Largest token data blob read.
  static constexpr size_t kMaxTokenDataBytes = size_t(4) << 30;
  using Sequences = std::shared_ptr<const std::vector<TokenSequence>>;

  static Status CheckBatch(const json& b) {
    if (!b.is_array() || b.empty()) {
      return InvalidArgument("'batch' must be a non-empty array");
    }
    for (size_t i = 0; i < b.size(); ++i) {
      const json& s = b[i];
      std::string where = "batch[" + std::to_string(i) + "]";
      if (!s.is_object() || !s.contains("tokens") || !s.contains("weights")) {
        return InvalidArgument(where + " needs 'tokens' and 'weights'");
      }
      PCFARM_RETURN_IF_ERROR(CheckTokenLists(json::array({s["tokens"]}), where.c_str()));
      if (!s["weights"].is_array() || s["weights"].size() != s["tokens"].size()) {
        return InvalidArgument(where + ": 'weights' must have one number per token");
      }
      for (const auto& w : s["weights"]) {
        if (!w.is_number() || w.get<double>() < 0) {
          return InvalidArgument(where + ": weights must be non-negative numbers");
        }
      }
    }
    return Status::Ok();
  }

  static Status CheckDataExamples(const json& p) {
    auto d = p.find("data");
    if (d == p.end() || !d->is_string() || !HexHash(d->get<std::string>())) {
      return InvalidArgument("'data' must be the 64-digit hex hash of a token data blob");
    }
    auto e = p.find("examples");
    if (e == p.end() || !e->is_array() || e->empty() || e->size() > kMaxExamples) {
      return InvalidArgument("'examples' must be an array of 1 to " +
                             std::to_string(kMaxExamples) + " sequence indices");
    }
    for (size_t i = 0; i < e->size(); ++i) {
      const json& x = (*e)[i];
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > UINT32_MAX) {
        return InvalidArgument("examples[" + std::to_string(i) + "] is " + x.dump() +
                               ", not a sequence index");
      }
    }
    return Status::Ok();
  }

  // "steps_examples": 1..kMaxLocalSteps lists of sequence indices as
  // "examples" takes them, kMaxExamples indices in all.
  static Status CheckDataStepsExamples(const json& p) {
    auto d = p.find("data");
    if (d == p.end() || !d->is_string() || !HexHash(d->get<std::string>())) {
      return InvalidArgument("'data' must be the 64-digit hex hash of a token data blob");
    }
    const json& steps = p["steps_examples"];
    if (!steps.is_array() || steps.empty() || steps.size() > size_t(kMaxLocalSteps)) {
      return InvalidArgument("'steps_examples' must be an array of 1 to " +
                             std::to_string(kMaxLocalSteps) +
                             " lists of sequence indices (one per local step)");
    }
    size_t total = 0;
    for (size_t s = 0; s < steps.size(); ++s) {
      const json& e = steps[s];
      const std::string where = "steps_examples[" + std::to_string(s) + "]";
      if (!e.is_array() || e.empty()) {
        return InvalidArgument(where + " must be a non-empty array of sequence indices");
      }
      total += e.size();
      if (total > kMaxExamples) {
        return InvalidArgument("'steps_examples' holds more than " +
                               std::to_string(kMaxExamples) + " sequence indices");
      }
      for (size_t i = 0; i < e.size(); ++i) {
        const json& x = e[i];
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > UINT32_MAX) {
          return InvalidArgument(where + "[" + std::to_string(i) + "] is " + x.dump() +
                                 ", not a sequence index");
        }
      }
    }
    return Status::Ok();
  }

  // The sequences `indices` of the data blob; errors name `field`[i].
  static Result<std::vector<TokenSequence>> Pick(const std::vector<TokenSequence>& data,
                                                 const json& indices, const std::string& field) {
    std::vector<TokenSequence> batch;
    for (size_t i = 0; i < indices.size(); ++i) {
      const uint64_t x = indices[i].get<uint64_t>();
      if (x >= data.size()) {
        return InvalidArgument(field + "[" + std::to_string(i) + "] is " + std::to_string(x) +
                               ", but the token data holds " + std::to_string(data.size()) +
                               " sequences");
      }
      batch.push_back(data[size_t(x)]);
    }
    return batch;
  }

  // The shard's sequences: "batch" as it is, or "examples" of the "data"
  // blob. REQUIRES: ValidateParams(p) passed, without "steps_examples".
  Result<std::vector<TokenSequence>> BatchOf(const json& p, const RunContext& ctx) const {
    std::vector<TokenSequence> batch;
    if (p.contains("batch")) {
      for (const auto& s : p["batch"]) {
        TokenSequence t;
        for (const auto& id : s["tokens"]) t.tokens.push_back(id.get<int32_t>());
        for (const auto& w : s["weights"]) t.weights.push_back(w.get<float>());
        batch.push_back(std::move(t));
      }
      return batch;
    }
    PCFARM_ASSIGN_OR_RETURN(Sequences data, TokenData(p["data"].get<std::string>(), ctx));
    return Pick(*data, p["examples"], "examples");
  }

  // The sequences of each local step of "steps_examples".
  // REQUIRES: ValidateParams(p) passed, with "steps_examples".
  Result<std::vector<std::vector<TokenSequence>>> StepBatchesOf(const json& p,
                                                                const RunContext& ctx) const {
    PCFARM_ASSIGN_OR_RETURN(Sequences data, TokenData(p["data"].get<std::string>(), ctx));
    const json& steps = p["steps_examples"];
    std::vector<std::vector<TokenSequence>> out;
    for (size_t s = 0; s < steps.size(); ++s) {
      PCFARM_ASSIGN_OR_RETURN(auto b,
                              Pick(*data, steps[s], "steps_examples[" + std::to_string(s) + "]"));
      out.push_back(std::move(b));
    }
    return out;
  }

  // The decoded blob `hash`, from the cache or read through ctx.blob_path.
  Result<Sequences> TokenData(const std::string& hash, const RunContext& ctx) const {
    {
      std::lock_guard<std::mutex> lock(data_mu_);
      for (auto it = data_cache_.begin(); it != data_cache_.end(); ++it) {
        if (it->first == hash) {
          std::rotate(it, it + 1, data_cache_.end());  // now the newest
          return data_cache_.back().second;
        }
      }
    }
    if (!ctx.blob_path) return FailedPrecondition("this runner cannot fetch blobs");
    PCFARM_ASSIGN_OR_RETURN(std::string path, ctx.blob_path(hash));
    // Decoded outside the lock: two shards may decode one blob at once,
    // which costs memory for a moment but never makes one wait.
    PCFARM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, kMaxTokenDataBytes));
    auto decoded = DecodeTokenData(bytes, /*vocab_size=*/0);  // the model checks ids
    if (!decoded.ok()) return decoded.status().WithContext("'data' " + hash);
    Sequences data =
        std::make_shared<const std::vector<TokenSequence>>(std::move(decoded).value());
    Sequences dropped;  // freed after the lock is released
    std::lock_guard<std::mutex> lock(data_mu_);
    for (const auto& [h, d] : data_cache_) {
      if (h == hash) return d;  // another shard decoded it meanwhile
    }
    data_cache_.emplace_back(hash, data);
    if (data_cache_.size() > kCachedTokenData) {
      dropped = std::move(data_cache_.front().second);
      data_cache_.erase(data_cache_.begin());
    }
    return data;
  }

  mutable std::mutex data_mu_;
  // Oldest first; guarded by data_mu_.
  mutable std::vector<std::pair<std::string, Sequences>> data_cache_;

  // "compress": "none" (default) | "fp16" | "int8", and "feedback": the
  // error-feedback stream's key (1..128 printable characters; a job's
  // planner gives its shards one), optional.
  static Status Compression(const json& p, GradientCodec* codec, std::string* feedback) {
    *codec = GradientCodec::kNone;
    feedback->clear();
    if (auto c = p.find("compress"); c != p.end()) {
      if (!c->is_string()) return InvalidArgument("'compress' must be none, fp16 or int8");
      auto parsed = ParseGradientCodec(c->get<std::string>());
      if (!parsed.ok()) return parsed.status().WithContext("'compress'");
      *codec = *parsed;
    }
    if (auto f = p.find("feedback"); f != p.end()) {
      if (!f->is_string() || f->get<std::string>().empty() || f->get<std::string>().size() > 128) {
        return InvalidArgument("'feedback' must be a key of 1..128 characters");
      }
      for (char ch : f->get<std::string>()) {
        if (ch < 0x21 || ch > 0x7e) return InvalidArgument("'feedback' must be printable ASCII");
      }
      *feedback = f->get<std::string>();
    }
    return Status::Ok();
  }

  static Status Settings(const json& p, LoraConfig* lora, OptimizerConfig* opt, int64_t* steps) {
    PCFARM_RETURN_IF_ERROR(GetNumber<int64_t>(p, "local_steps", 0, kMaxLocalSteps, steps));
    auto l = p.find("lora");
    if (l != p.end()) {
      if (!l->is_object()) return InvalidArgument("'lora' must be an object");
      PCFARM_RETURN_IF_ERROR(GetNumber<int64_t>(*l, "rank", 1, 1024, &lora->rank));
      PCFARM_RETURN_IF_ERROR(GetNumber<double>(*l, "alpha", 1e-6, 1e6, &lora->alpha));
      PCFARM_RETURN_IF_ERROR(GetNumber<uint64_t>(*l, "seed", 0, UINT32_MAX, &lora->seed));
      auto t = l->find("targets");
      if (t != l->end()) {
        if (!t->is_array() || t->empty()) return InvalidArgument("'lora.targets' must be a non-empty array");
        lora->target_modules.clear();
        for (const auto& name : *t) {
          if (!name.is_string()) return InvalidArgument("'lora.targets' must hold names");
          const auto& order = LoraTargetOrder();
          if (std::find(order.begin(), order.end(), name.get<std::string>()) == order.end()) {
            return InvalidArgument("unknown LoRA target '" + name.get<std::string>() + "'");
          }
          lora->target_modules.push_back(name.get<std::string>());
        }
      }
    }
    auto o = p.find("optimizer");
    if (o != p.end()) {
      if (!o->is_object()) return InvalidArgument("'optimizer' must be an object");
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "lr", 0, 10, &opt->lr));
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "beta1", 0, 1, &opt->beta1));
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "beta2", 0, 1, &opt->beta2));
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "eps", 0, 1, &opt->eps));
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "weight_decay", 0, 10, &opt->weight_decay));
      PCFARM_RETURN_IF_ERROR(GetNumber<float>(*o, "max_grad_norm", 0, 1e9, &opt->max_grad_norm));
    }
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<TaskKind> MakeInferKind() { return std::make_unique<InferKind>(); }
std::unique_ptr<TaskKind> MakeTrainKind() { return std::make_unique<TrainKind>(); }

}  // namespace pcfarm
