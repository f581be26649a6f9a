// Adapter files without a model: SaveAdapter writes the Encode* bytes,
// ParseAdapter reads them back as the model's layout and values, and bad
// files are named.
#include "tasks/engine/adapter_io.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/engine/engine_test_util.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/engine_adapter_io_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { fs::remove_all(path); }
};

std::unique_ptr<Backend> Cpu() {
  BackendOptions o;
  o.cpu_threads = 2;
  return std::move(CreateCpuBackend(o)).value();
}

// A tiny model with LoRA on `targets` and every value non-zero (a step
// moves B off zero).
std::unique_ptr<LlamaModel> Trained(Backend* be, std::vector<std::string> targets, double alpha) {
  const ModelConfig c = testing::TinyConfig();
  auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, 17), c), be);
  REQUIRE(m.ok());
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = alpha;
  lora.target_modules = std::move(targets);
  lora.seed = 3;
  REQUIRE((*m)->EnableLora(lora).ok());
  REQUIRE((*m)->AccumulateGradients({{{1, 5, 9, 13, 7, 22, 39}, {}}}).ok());
  REQUIRE((*m)->Step(OptimizerConfig{}).ok());
  return std::move(m).value();
}

void CheckSameLayout(const std::vector<ParameterInfo>& a, const std::vector<ParameterInfo>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("tensor " << i);
    CHECK(a[i].name == b[i].name);
    CHECK(a[i].shape == b[i].shape);
    CHECK(a[i].offset == b[i].offset);
    CHECK(a[i].numel == b[i].numel);
  }
}

TEST_CASE("SaveAdapter writes the Encode* bytes and ParseAdapter reads them back",
          "[adapter_io]") {
  auto be = Cpu();
  // Targets out of canonical order, and a fractional alpha.
  for (auto [targets, alpha] :
       {std::pair<std::vector<std::string>, double>{{"down_proj", "q_proj", "v_proj"}, 8},
        {{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 2.5}}) {
    INFO(targets.size() << " targets");
    auto model = Trained(be.get(), targets, alpha);
    TempDir dir;
    REQUIRE(model->SaveAdapter(dir.path.string(), "org/base-model").ok());
    const std::string cfg = *ReadFile((dir.path / "adapter_config.json").string());
    const std::string st = *ReadFile((dir.path / "adapter_model.safetensors").string());
    auto params = model->GetParameters();
    REQUIRE(params.ok());
    CHECK(cfg == EncodeAdapterConfig(model->lora_config(), "org/base-model"));
    auto encoded = EncodeAdapterSafetensors(model->TrainableParameters(), *params);
    REQUIRE(encoded.ok());
    CHECK(st == *encoded);

    auto parsed = ParseAdapter(cfg, st);
    REQUIRE(parsed.ok());
    CheckSameLayout(parsed->layout, model->TrainableParameters());
    CHECK(parsed->flat == *params);
    CHECK(parsed->lora.rank == 4);
    CHECK(parsed->lora.alpha == alpha);
    CHECK(parsed->lora.target_modules.size() == targets.size());
    // Parsed values encode to the same bytes.
    CHECK(*EncodeAdapterSafetensors(parsed->layout, parsed->flat) == st);
    CHECK(EncodeAdapterConfig(parsed->lora, "org/base-model") == cfg);
  }
  // Bad UTF-8 in the base model's name does not throw.
  LoraConfig lora;
  CHECK(EncodeAdapterConfig(lora, "bad\xff").find("bad\xef\xbf\xbd") != std::string::npos);
}

TEST_CASE("ParseAdapter reads F16 and BF16 tensors", "[adapter_io]") {
  auto be = Cpu();
  auto model = Trained(be.get(), {"q_proj"}, 8);
  auto params = *model->GetParameters();
  const std::string cfg = EncodeAdapterConfig(model->lora_config(), "base");
  for (DType dt : {DType::kF16, DType::kBF16}) {
    INFO(DTypeName(dt));
    std::vector<NamedTensor> tensors;
    std::vector<float> want;
    for (const ParameterInfo& p : model->TrainableParameters()) {
      auto bits = std::make_shared<std::vector<uint16_t>>();
      for (int64_t i = 0; i < p.numel; ++i) {
        const float x = params[size_t(p.offset + i)];
        bits->push_back(dt == DType::kF16 ? F32ToF16(x) : F32ToBF16(x));
        want.push_back(dt == DType::kF16 ? F16ToF32(bits->back()) : BF16ToF32(bits->back()));
      }
      HostTensor t;
      t.dtype = dt;
      t.shape = p.shape;
      t.data = bits->data();
      t.owner = bits;
      tensors.push_back({p.name, t});
    }
    auto st = SerializeSafetensors(tensors);
    REQUIRE(st.ok());
    auto parsed = ParseAdapter(cfg, *st);
    REQUIRE(parsed.ok());
    CheckSameLayout(parsed->layout, model->TrainableParameters());
    CHECK(parsed->flat == want);
  }
}

TEST_CASE("ParseAdapter names the file and the field or tensor that is wrong", "[adapter_io]") {
  auto be = Cpu();
  auto model = Trained(be.get(), {"q_proj", "down_proj"}, 8);
  const auto params = *model->GetParameters();
  const auto& layout = model->TrainableParameters();
  const std::string cfg = EncodeAdapterConfig(model->lora_config(), "base");
  const std::string st = *EncodeAdapterSafetensors(layout, params);
  REQUIRE(ParseAdapter(cfg, st).ok());

  auto error = [](const std::string& c, const std::string& s) {
    auto r = ParseAdapter(c, s, "cfg.json", "w.safetensors");
    REQUIRE(!r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    return r.status().message();
  };
  auto has = [](const std::string& s, const std::string& part) {
    INFO(s);
    return s.find(part) != std::string::npos;
  };
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = nlohmann::json::parse(cfg);
    j[key] = v;
    return j.dump();
  };
  // The config.
  CHECK(has(error("{", st), "cfg.json: not valid JSON"));
  CHECK(has(error("[]", st), "cfg.json: not a JSON object"));
  CHECK(has(error(with("peft_type", "IA3"), st), "cfg.json: peft_type"));
  CHECK(has(error(with("r", 0), st), "cfg.json: r is 0"));
  CHECK(has(error(with("lora_alpha", 0), st), "cfg.json: lora_alpha"));
  CHECK(has(error(with("target_modules", {"q_proj", "q_proj"}), st),
            "cfg.json: target module \"q_proj\" listed twice"));
  CHECK(has(error(with("target_modules", {"lm_head"}), st), "unknown target module \"lm_head\""));
  CHECK(has(error(with("use_rslora", true), st), "cfg.json: use_rslora"));
  CHECK(has(error(with("layers_to_transform", {0}), st), "cfg.json: layers_to_transform"));
  // Config and tensors disagree.
  CHECK(has(error(with("r", 2), st),
            "w.safetensors: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has "
            "shape [4,16], expected [2,16]"));
  CHECK(has(error(with("target_modules", {"q_proj"}), st),
            "w.safetensors: unexpected tensor base_model.model.model.layers.0.mlp.down_proj"));
  CHECK(has(error(with("target_modules", {"q_proj", "v_proj", "down_proj"}), st),
            "w.safetensors: missing tensor base_model.model.model.layers.0.self_attn.v_proj.lora_A"));
  // Damaged or odd tensor files.
  CHECK(has(error(cfg, st.substr(0, st.size() - 1)), "w.safetensors"));
  CHECK(has(error(cfg, "junk"), "w.safetensors"));
  auto tensors_with = [&](auto edit) {
    std::vector<NamedTensor> t;
    for (const ParameterInfo& p : layout) {
      std::vector<float> v(params.begin() + p.offset, params.begin() + p.offset + p.numel);
      std::string name = p.name;
      std::vector<int64_t> shape = p.shape;
      if (!edit(&name, &shape, &v)) continue;
      t.push_back({name, HostTensor::FromF32(shape, v)});
    }
    return *SerializeSafetensors(t);
  };
  CHECK(has(error(cfg, *SerializeSafetensors({})), "w.safetensors: holds no LoRA tensor"));
  // The last tensor (layer 1 down_proj B) gone.
  const std::string last = layout.back().name;
  CHECK(has(error(cfg, tensors_with([&](std::string* n, auto*, auto*) { return *n != last; })),
            "missing tensor " + last));
  // A layer 1 tensor named as layer 01, or as a layer far away.
  for (const char* bad : {"layers.01.", "layers.12345678."}) {
    CHECK(has(error(cfg, tensors_with([&](std::string* n, auto*, auto*) {
                if (*n == last) n->replace(n->find("layers.1."), 9, bad);
                return true;
              })),
              std::string("unexpected tensor base_model.model.model.") + bad));
  }
  // A tensor of a third layer makes layer 2's others missing.
  CHECK(has(error(cfg, tensors_with([&](std::string* n, auto*, auto*) {
              if (*n == last) n->replace(n->find("layers.1."), 9, "layers.2.");
              return true;
            })),
            "missing tensor base_model.model.model.layers.1.mlp.down_proj.lora_B"));
  // Wrong shapes: rank in the wrong place, a 1-D or 3-D tensor, a zero size.
  auto reshaped = [&](std::vector<int64_t> to) {
    return tensors_with([&](std::string* n, std::vector<int64_t>* s, std::vector<float>* v) {
      if (*n == last) {
        *s = to;
        int64_t numel = 1;
        for (int64_t d : to) numel *= d;
        v->resize(size_t(numel));
      }
      return true;
    });
  };
  CHECK(has(error(cfg, reshaped({4, 16})), last + " has shape [4,16], expected [4,4]"));
  CHECK(has(error(cfg, reshaped({64})), last + " has shape [64], expected [out,4]"));
  CHECK(has(error(cfg, reshaped({16, 4, 1})), "has shape [16,4,1], expected [out,4]"));
  CHECK(has(error(cfg, reshaped({0, 4})), "has shape [0,4], expected [out,4]"));
  // A non-finite value.
  CHECK(has(error(cfg, tensors_with([&](std::string* n, auto*, std::vector<float>* v) {
              if (*n == last) (*v)[3] = INFINITY;
              return true;
            })),
            last + " holds a non-finite value"));
  // Encoding refuses a layout that does not fit the values.
  CHECK(EncodeAdapterSafetensors(layout, std::span(params).first(params.size() - 1))
            .status()
            .code() == StatusCode::kInvalidArgument);
}

TEST_CASE("InitialLoraValues are EnableLora's values, without a model", "[adapter_io]") {
  auto be = Cpu();
  const ModelConfig c = testing::TinyConfig();
  for (uint64_t seed : {uint64_t(0), uint64_t(7), uint64_t(1) << 40}) {
    auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, 17), c),
                                be.get());
    REQUIRE(m.ok());
    LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 8;
    lora.target_modules = {"q_proj", "v_proj", "down_proj"};
    lora.seed = seed;
    REQUIRE((*m)->EnableLora(lora).ok());
    INFO("seed " << seed);
    CHECK(InitialLoraValues((*m)->TrainableParameters(), seed) == *(*m)->GetParameters());
    CHECK(InitialLoraValues((*m)->TrainableParameters(), seed + 1) != *(*m)->GetParameters());
  }
  // adapter_config.json alone.
  auto cfg = ParseAdapterConfig(EncodeAdapterConfig(LoraConfig{}, "base"));
  REQUIRE(cfg.ok());
  CHECK(cfg->rank == LoraConfig{}.rank);
  CHECK(ParseAdapterConfig("{}", "x/adapter_config.json").status().message().find(
            "x/adapter_config.json: peft_type") != std::string::npos);
}

TEST_CASE("full weights: ParseFullWeights reads the version bytes, LoadFullWeights trains from them",
          "[adapter_io][full]") {
  auto be = Cpu();
  const ModelConfig c = testing::TinyConfig();
  auto make = [&](uint64_t seed) {
    auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, seed), c),
                                be.get());
    REQUIRE(m.ok());
    REQUIRE((*m)->EnableFullTraining().ok());
    return std::move(m).value();
  };
  // Model a takes one step; its weights, as a version file, make model b
  // (other weights) equal to it, with fresh AdamW moments.
  auto a = make(17);
  const std::vector<TokenSequence> batch = {{{1, 5, 9, 13, 7, 22, 39}, {}}};
  REQUIRE(a->AccumulateGradients(batch).ok());
  REQUIRE(a->Step(OptimizerConfig{}).ok());
  const auto params = *a->GetParameters();
  const std::string bytes = *EncodeAdapterSafetensors(a->TrainableParameters(), params);
  auto parsed = ParseFullWeights(bytes);
  REQUIRE(parsed.ok());
  CheckSameLayout(parsed->layout, a->TrainableParameters());
  CHECK(parsed->flat == params);

  TempDir dir;
  const std::string path = (dir.path / "model.safetensors").string();
  REQUIRE(WriteFileAtomic(path, bytes).ok());
  auto b = make(99);
  REQUIRE(b->AccumulateGradients(batch).ok());
  REQUIRE(b->Step(OptimizerConfig{}).ok());
  REQUIRE(b->LoadFullWeights(path).ok());
  CHECK(*b->GetParameters() == params);
  CHECK(b->optimizer_step() == 0);
  // A step from here is the step a fresh model with these weights takes.
  auto fresh = make(99);
  REQUIRE(fresh->LoadFullWeights(path).ok());
  for (auto* m : {b.get(), fresh.get()}) {
    REQUIRE(m->AccumulateGradients(batch).ok());
    REQUIRE(m->Step(OptimizerConfig{}).ok());
  }
  CHECK(*b->GetParameters() == *fresh->GetParameters());

  auto has = [](const Status& s, const std::string& part) {
    INFO(s.message());
    return !s.ok() && s.message().find(part) != std::string::npos;
  };
  // Bad files: each named.
  CHECK(has(ParseFullWeights("").status(), "model.safetensors"));
  CHECK(has(ParseFullWeights(*SerializeSafetensors({})).status(), "holds no tensor"));
  std::vector<float> nan_values = params;
  nan_values[3] = std::nanf("");
  CHECK(has(ParseFullWeights(*EncodeAdapterSafetensors(a->TrainableParameters(), nan_values))
                .status(),
            "non-finite"));
  // A file with the tensors out of order, or one short, is refused by the model.
  auto layout = a->TrainableParameters();
  std::vector<ParameterInfo> swapped = layout;
  std::swap(swapped[0], swapped[1]);
  REQUIRE(WriteFileAtomic(path, *EncodeAdapterSafetensors(swapped, params)).ok());
  CHECK(has(make(5)->LoadFullWeights(path), "tensor 0 is " + layout[1].name));
  std::vector<ParameterInfo> short_layout(layout.begin(), layout.end() - 1);
  REQUIRE(WriteFileAtomic(path, *EncodeAdapterSafetensors(short_layout, params)).ok());
  CHECK(has(make(5)->LoadFullWeights(path), "missing tensor " + layout.back().name));
  // LoRA first: full weights are refused.
  auto lora = Trained(be.get(), {"q_proj"}, 8);
  REQUIRE(WriteFileAtomic(path, bytes).ok());
  CHECK(lora->LoadFullWeights(path).code() == StatusCode::kFailedPrecondition);
}

TEST_CASE("LoadAdapter refuses an adapter of another model's shape", "[adapter_io]") {
  auto be = Cpu();
  auto model = Trained(be.get(), {"q_proj"}, 8);
  const auto params = *model->GetParameters();
  const std::string cfg = EncodeAdapterConfig(model->lora_config(), "base");
  TempDir dir;
  REQUIRE(WriteFileAtomic((dir.path / "adapter_config.json").string(), cfg).ok());
  auto load_error = [&](std::vector<ParameterInfo> layout, std::vector<float> flat) {
    REQUIRE(WriteFileAtomic((dir.path / "adapter_model.safetensors").string(),
                            *EncodeAdapterSafetensors(layout, flat))
                .ok());
    auto fresh = Trained(be.get(), {"k_proj"}, 8);
    Status s = fresh->LoadAdapter(dir.path.string());
    CHECK(fresh->lora_config().target_modules == std::vector<std::string>{"k_proj"});
    return s.message();
  };
  auto has = [](const std::string& s, const std::string& part) {
    INFO(s);
    return s.find(part) != std::string::npos;
  };
  auto layout = model->TrainableParameters();
  // One layer only: layer 1 is missing.
  std::vector<ParameterInfo> one_layer(layout.begin(), layout.begin() + 2);
  CHECK(has(load_error(one_layer, std::vector<float>(params.begin(),
                                                     params.begin() + one_layer[1].offset +
                                                         one_layer[1].numel)),
            "missing tensor base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"));
  // A third layer the model does not have.
  std::vector<ParameterInfo> three = layout;
  std::vector<float> flat3 = params;
  for (size_t i = 0; i < 2; ++i) {
    ParameterInfo p = layout[i];
    p.name.replace(p.name.find("layers.0."), 9, "layers.2.");
    p.offset = int64_t(flat3.size());
    flat3.insert(flat3.end(), params.begin() + layout[i].offset,
                 params.begin() + layout[i].offset + layout[i].numel);
    three.push_back(p);
  }
  CHECK(has(load_error(three, flat3),
            "unexpected tensor base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight "
            "(the model has 2 layers)"));
  // An input size other than the model's.
  std::vector<ParameterInfo> wide = layout;
  std::vector<float> flat_wide;
  int64_t offset = 0;
  for (ParameterInfo& p : wide) {
    if (p.name.find("lora_A") != std::string::npos) p.shape[1] = 8;
    p.numel = p.shape[0] * p.shape[1];
    p.offset = offset;
    offset += p.numel;
  }
  flat_wide.assign(size_t(offset), 0.25f);
  CHECK(has(load_error(wide, flat_wide), "lora_A.weight has shape [4,8], expected [4,16]"));
  // And the good one loads.
  auto fresh = Trained(be.get(), {"k_proj"}, 8);
  REQUIRE(WriteFileAtomic((dir.path / "adapter_model.safetensors").string(),
                          *EncodeAdapterSafetensors(layout, params))
              .ok());
  REQUIRE(fresh->LoadAdapter(dir.path.string()).ok());
  CHECK(*fresh->GetParameters() == params);
}

}  // namespace
}  // namespace pcfarm
