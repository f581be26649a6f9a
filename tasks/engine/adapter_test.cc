// Fine-tuning with LoRA, PEFT adapter save/load, and bad adapter files.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/engine/engine_test_util.h"
#include "tasks/engine/llama.h"
#include "tasks/model/safetensors.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/engine_adapter_test.XXXXXX";
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

std::unique_ptr<LlamaModel> Tiny(Backend* be, uint64_t seed = 41) {
  const ModelConfig c = testing::TinyConfig();
  auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, seed), c), be);
  REQUIRE(m.ok());
  return std::move(m).value();
}

// A small text, repeated: a fixed cycle of tokens, prompt masked.
std::vector<TokenSequence> Text() {
  std::vector<int32_t> cycle = {1, 12, 30, 7, 7, 19, 25, 3, 38, 14};
  TokenSequence a, b;
  for (int r = 0; r < 3; ++r) a.tokens.insert(a.tokens.end(), cycle.begin(), cycle.end());
  b.tokens.assign(cycle.begin() + 3, cycle.end());
  b.tokens.insert(b.tokens.end(), cycle.begin(), cycle.end());
  b.weights.assign(b.tokens.size(), 1.0f);
  for (int i = 0; i < 3; ++i) b.weights[i] = 0;
  return {a, b};
}

TEST_CASE("LoRA fine-tuning lowers the loss and the saved adapter reloads", "[adapter]") {
  auto be = Cpu();
  auto model = Tiny(be.get());
  LoraConfig lora;  // rank 16, alpha 32, q/k/v/o
  lora.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj"};
  lora.seed = 9;
  REQUIRE(model->EnableLora(lora).ok());
  const auto text = Text();
  auto first = model->Loss(text);
  REQUIRE(first.ok());
  OptimizerConfig opt;
  opt.lr = 1e-2f;
  double last = 0;
  for (int step = 0; step < 30; ++step) {
    auto sums = model->AccumulateGradients(text);
    REQUIRE(sums.ok());
    last = sums->mean();
    REQUIRE(model->Step(opt).ok());
  }
  auto trained = model->Loss(text);
  REQUIRE(trained.ok());
  std::printf("LoRA fine-tuning: loss %.4f -> %.4f after 30 steps (last batch %.4f)\n",
              first->mean(), trained->mean(), last);
  CHECK(trained->mean() < 0.5 * first->mean());

  TempDir dir;
  REQUIRE(model->SaveAdapter(dir.path.string(), "tiny-test-model").ok());
  auto cfg_text = ReadFile((dir.path / "adapter_config.json").string());
  REQUIRE(cfg_text.ok());
  auto cfg = nlohmann::json::parse(*cfg_text);
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["task_type"] == "CAUSAL_LM");
  CHECK(cfg["r"] == 16);
  CHECK(cfg["lora_alpha"] == 32);
  CHECK(cfg["lora_dropout"] == 0.0);
  CHECK(cfg["bias"] == "none");
  CHECK(cfg["use_rslora"] == false);
  CHECK(cfg["base_model_name_or_path"] == "tiny-test-model");
  CHECK(cfg["target_modules"].size() == 7);
  auto st = SafetensorsFile::Open((dir.path / "adapter_model.safetensors").string());
  REQUIRE(st.ok());
  CHECK(st->entries().size() == 2 * 7 * 2u);
  const SafetensorsEntry* a = st->Find("base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight");
  REQUIRE(a != nullptr);
  CHECK(a->shape == std::vector<int64_t>{16, 16});
  const SafetensorsEntry* b = st->Find("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight");
  REQUIRE(b != nullptr);
  CHECK(b->shape == std::vector<int64_t>{8, 16});
  const SafetensorsEntry* d = st->Find("base_model.model.model.layers.0.mlp.down_proj.lora_A.weight");
  REQUIRE(d != nullptr);
  CHECK(d->shape == std::vector<int64_t>{16, 32});

  // A fresh copy of the base model with the adapter loaded gives the same loss.
  auto fresh = Tiny(be.get());
  auto base_loss = fresh->Loss(text);
  REQUIRE(base_loss.ok());
  CHECK(base_loss->mean() == Approx(first->mean()).margin(1e-6));
  REQUIRE(fresh->LoadAdapter(dir.path.string()).ok());
  CHECK(fresh->train_mode() == TrainMode::kLora);
  CHECK(fresh->lora_config().rank == 16);
  auto reloaded = fresh->Loss(text);
  REQUIRE(reloaded.ok());
  CHECK(reloaded->mean() == Approx(trained->mean()).margin(1e-6));
  CHECK(*fresh->GetParameters() == *model->GetParameters());
}

TEST_CASE("full-parameter fine-tuning lowers the loss", "[adapter]") {
  auto be = Cpu();
  auto model = Tiny(be.get(), 43);
  REQUIRE(model->EnableFullTraining().ok());
  const auto text = Text();
  auto first = model->Loss(text);
  OptimizerConfig opt;
  opt.lr = 1e-2f;
  for (int step = 0; step < 20; ++step) {
    REQUIRE(model->AccumulateGradients(text).ok());
    REQUIRE(model->Step(opt).ok());
  }
  auto trained = model->Loss(text);
  std::printf("full fine-tuning: loss %.4f -> %.4f after 20 steps\n", first->mean(),
              trained->mean());
  CHECK(trained->mean() < 0.5 * first->mean());
  CHECK(model->SaveAdapter("/tmp/unused", "x").code() == StatusCode::kFailedPrecondition);
}

// Writes a valid adapter for Tiny() with default LoRA into dir; returns it.
void WriteGoodAdapter(Backend* be, const fs::path& dir) {
  auto model = Tiny(be);
  REQUIRE(model->EnableLora({}).ok());
  REQUIRE(model->SaveAdapter(dir.string(), "base").ok());
}

TEST_CASE("bad adapter directories are rejected and leave the model unchanged", "[adapter]") {
  auto be = Cpu();
  TempDir dir;
  WriteGoodAdapter(be.get(), dir.path);
  const std::string cfg_path = (dir.path / "adapter_config.json").string();
  const std::string st_path = (dir.path / "adapter_model.safetensors").string();
  const std::string good_cfg = *ReadFile(cfg_path);
  const std::string good_st = *ReadFile(st_path);
  auto model = Tiny(be.get());

  auto expect_error = [&](const std::string& cfg, const std::string& st, const char* needle) {
    REQUIRE(WriteFileAtomic(cfg_path, cfg).ok());
    REQUIRE(WriteFileAtomic(st_path, st).ok());
    Status s = model->LoadAdapter(dir.path.string());
    INFO(s.ToString());
    CHECK(!s.ok());
    CHECK(s.message().find(needle) != std::string::npos);
    CHECK(model->train_mode() == TrainMode::kNone);
  };
  auto with = [&](const char* key, nlohmann::json v) {
    auto j = nlohmann::json::parse(good_cfg);
    if (v.is_null())
      j.erase(key);
    else
      j[key] = v;
    return j.dump();
  };

  expect_error("{not json", good_st, "not valid JSON");
  expect_error("[1,2]", good_st, "not a JSON object");
  expect_error(with("peft_type", "PREFIX_TUNING"), good_st, "peft_type");
  expect_error(with("r", "16"), good_st, "r is");
  expect_error(with("r", 0), good_st, "r is");
  expect_error(with("r", nullptr), good_st, "r is");
  expect_error(with("lora_alpha", -1), good_st, "lora_alpha");
  expect_error(with("target_modules", "q_proj"), good_st, "target_modules");
  expect_error(with("target_modules", {"q_proj", 3}), good_st, "target_modules");
  expect_error(with("target_modules", {"qkv"}), good_st, "unknown target module");
  expect_error(with("use_rslora", true), good_st, "use_rslora");
  expect_error(with("bias", "all"), good_st, "bias");
  // Config and tensors disagree.
  expect_error(with("r", 8), good_st, "has shape [16,16], expected [8,16]");
  expect_error(with("target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj"}),
               good_st, "missing tensor base_model.model.model.layers.0.mlp.up_proj.lora_A");
  expect_error(with("target_modules", {"q_proj", "k_proj", "v_proj"}), good_st,
               "unexpected tensor");
  // Damaged safetensors.
  expect_error(good_cfg, good_st.substr(0, good_st.size() / 2), "adapter_model.safetensors");
  expect_error(good_cfg, "garbage", "adapter_model.safetensors");
  // Missing files.
  fs::remove(st_path);
  CHECK(model->LoadAdapter(dir.path.string()).code() != StatusCode::kOk);
  CHECK(model->LoadAdapter((dir.path / "nope").string()).code() == StatusCode::kNotFound);
  CHECK(model->train_mode() == TrainMode::kNone);

  // A NaN inside a tensor.
  REQUIRE(WriteFileAtomic(cfg_path, good_cfg).ok());
  auto parsed = SafetensorsFile::Parse(good_st, "good", nullptr);
  REQUIRE(parsed.ok());
  std::vector<NamedTensor> tensors;
  for (const SafetensorsEntry& e : parsed->entries()) {
    std::vector<float> v = parsed->Tensor(e.name)->ToF32();
    if (tensors.empty()) v[0] = NAN;
    tensors.push_back({e.name, HostTensor::FromF32(e.shape, v)});
  }
  REQUIRE(WriteSafetensors(st_path, tensors).ok());
  CHECK(model->LoadAdapter(dir.path.string()).message().find("non-finite") != std::string::npos);
}

}  // namespace
}  // namespace pcfarm
