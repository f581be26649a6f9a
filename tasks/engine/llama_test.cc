// LlamaModel against a plain double-precision reference (engine_test_util.h):
// logits, masked loss, and gradients (full and LoRA) against central finite
// differences of the reference loss in double.
#include "tasks/engine/llama.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/engine/engine_test_util.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

using testing::RefModel;
using testing::TinyConfig;
using testing::WeightMap;

std::unique_ptr<Backend> Cpu() {
  BackendOptions o;
  o.cpu_threads = 2;
  auto b = CreateCpuBackend(o);
  REQUIRE(b.ok());
  return std::move(b).value();
}

std::unique_ptr<LlamaModel> MakeModel(Backend* be, const ModelConfig& c, const WeightMap& w) {
  auto m = LlamaModel::Create(c, testing::ToModelWeights(w, c), be);
  REQUIRE(m.ok());
  return std::move(m).value();
}

// Two sequences of different lengths; the second masks its "prompt" and
// weights one token double.
std::vector<TokenSequence> Batch() {
  return {{{1, 5, 9, 13, 7, 22, 39}, {}},
          {{1, 30, 2, 17, 4}, {0, 0, 1, 2, 1}}};
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Central differences of RefLoss over every entry of every tensor in `names`
// (in that order), h = 1e-5: truncation error ~h²·f''' ≈ 1e-10.
std::vector<double> FdGradient(RefModel m, const std::vector<std::string>& names,
                               const std::vector<TokenSequence>& batch) {
  std::vector<double> g;
  const double h = 1e-5;
  for (const std::string& name : names) {
    std::vector<double>& w = m.w.at(name);
    for (double& x : w) {
      const double x0 = x;
      x = x0 + h;
      const double lp = testing::RefLoss(m, batch);
      x = x0 - h;
      const double lm = testing::RefLoss(m, batch);
      x = x0;
      g.push_back((lp - lm) / (2 * h));
    }
  }
  return g;
}

// Relative L2 error and the worst element error relative to max |ref|.
void CompareGradients(const std::vector<float>& got, const std::vector<double>& ref,
                      double rel_l2_tol, double elem_tol, const char* what) {
  REQUIRE(got.size() == ref.size());
  double num = 0, den = 0, worst = 0;
  const double scale = MaxAbs(ref);
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
    worst = std::max(worst, std::abs(got[i] - ref[i]) / scale);
  }
  const double rel = std::sqrt(num / den);
  std::printf("%s: %zu values, relative L2 error %.3g, worst element error %.3g of max|g|=%.3g\n",
              what, ref.size(), rel, worst, scale);
  CHECK(rel < rel_l2_tol);
  CHECK(worst < elem_tol);
}

struct Variant {
  bool tied, bias;
  const char* name;
};
const Variant kVariants[] = {{false, false, "llama untied"},
                             {true, false, "llama tied"},
                             {false, true, "qwen2 biases"}};

TEST_CASE("logits and masked loss match the double reference", "[llama]") {
  auto be = Cpu();
  for (const Variant& var : kVariants) {
    INFO(var.name);
    const ModelConfig c = TinyConfig(var.tied, var.bias);
    const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 7));
    auto model = MakeModel(be.get(), c, w);
    const RefModel ref{c, w};
    auto batch = Batch();
    std::vector<std::vector<int32_t>> seqs = {batch[0].tokens, batch[1].tokens};
    auto got = model->BatchLogits(seqs);
    REQUIRE(got.ok());
    const std::vector<double> want = testing::RefLogits(ref, seqs);
    REQUIRE(got->size() == want.size());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::abs(double((*got)[i]) - want[i]));
    // f32 through 2 layers of width 16: errors are ~1e-6; 1e-4 absolute on
    // logits of magnitude ~1.
    CHECK(worst < 1e-4);

    // last_only gives each sequence's last row.
    auto last = model->BatchLogits(seqs, true);
    REQUIRE(last.ok());
    REQUIRE(last->size() == 2 * 40u);
    for (int v = 0; v < 40; ++v) {
      CHECK((*last)[v] == Approx((*got)[6 * 40 + v]).margin(1e-6));
      CHECK((*last)[40 + v] == Approx((*got)[11 * 40 + v]).margin(1e-6));
    }
    // One sequence alone gives the same rows as packed with another.
    auto single = model->Logits(seqs[1]);
    REQUIRE(single.ok());
    for (size_t i = 0; i < single->size(); ++i)
      CHECK((*single)[i] == Approx((*got)[7 * 40 + i]).margin(1e-5));

    auto loss = model->Loss(batch);
    REQUIRE(loss.ok());
    CHECK(loss->counted == 6 + 3);
    CHECK(loss->weight == Approx(6 + 4));
    CHECK(loss->mean() == Approx(testing::RefLoss(ref, batch)).margin(1e-5));
  }
}

TEST_CASE("full-parameter gradients match finite differences of the reference", "[llama]") {
  auto be = Cpu();
  for (const Variant& var : kVariants) {
    INFO(var.name);
    const ModelConfig c = TinyConfig(var.tied, var.bias);
    const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 11));
    auto model = MakeModel(be.get(), c, w);
    REQUIRE(model->EnableFullTraining().ok());
    REQUIRE(model->train_mode() == TrainMode::kFull);
    auto batch = Batch();
    auto sums = model->AccumulateGradients(batch);
    REQUIRE(sums.ok());
    auto grad = model->ExportGradients();
    REQUIRE(grad.ok());
    std::vector<std::string> names;
    for (const ParameterInfo& p : model->TrainableParameters()) names.push_back(p.name);
    std::vector<std::string> expected;
    for (const ExpectedTensor& e : ExpectedTensors(c)) expected.push_back(e.name);
    CHECK(names == expected);
    const std::vector<double> fd = FdGradient(RefModel{c, w}, names, batch);
    // f32 forward/backward vs a double reference (measured ~1e-6): relative
    // L2 error 2e-5, every element within 2e-5 of the largest gradient.
    CompareGradients(*grad, fd, 2e-5, 2e-5, var.name);
  }
}

TEST_CASE("LoRA gradients on every target match finite differences", "[llama]") {
  auto be = Cpu();
  const ModelConfig c = TinyConfig(false, true);
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 13));
  auto model = MakeModel(be.get(), c, w);
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.target_modules = {"down_proj", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                         "up_proj"};
  lora.seed = 5;
  REQUIRE(model->EnableLora(lora).ok());
  const auto& layout = model->TrainableParameters();
  REQUIRE(layout.size() == 2 * 7 * 2u);
  CHECK(layout[0].name == "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(layout[0].shape == std::vector<int64_t>{4, 16});
  CHECK(layout[1].name == "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  CHECK(layout[1].shape == std::vector<int64_t>{16, 4});
  CHECK(layout[13].name == "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  CHECK(layout[13].shape == std::vector<int64_t>{16, 4});
  CHECK(layout[12].shape == std::vector<int64_t>{4, 32});

  // Fresh adapters: A in [−1/√in, 1/√in), B zero, so logits are unchanged.
  auto init = model->GetParameters();
  REQUIRE(init.ok());
  for (const ParameterInfo& p : layout) {
    const bool is_a = p.name.find("lora_A") != std::string::npos;
    const double bound = 1.0 / std::sqrt(double(p.shape[1]));
    for (int64_t j = 0; j < p.numel; ++j) {
      const float x = (*init)[p.offset + j];
      if (is_a) {
        CHECK(std::abs(x) <= bound);
      } else {
        CHECK(x == 0.0f);
      }
    }
  }

  // Give B random values so every gradient is non-trivial.
  std::mt19937_64 rng(3);
  std::normal_distribution<double> nd(0, 0.2);
  std::vector<double> flat(init->begin(), init->end());
  for (size_t i = 1; i < layout.size(); i += 2)
    for (int64_t j = 0; j < layout[i].numel; ++j)
      flat[layout[i].offset + j] = double(float(nd(rng)));
  REQUIRE(model->SetParameters(std::vector<float>(flat.begin(), flat.end())).ok());

  auto batch = Batch();
  const double scale = 8.0 / 4.0;
  auto loss = model->Loss(batch);
  REQUIRE(loss.ok());
  CHECK(loss->mean() ==
        Approx(testing::RefLoss(RefModel{c, testing::MergeLora(w, layout, flat, scale)}, batch))
            .margin(1e-5));

  REQUIRE(model->AccumulateGradients(batch).ok());
  auto grad = model->ExportGradients();
  REQUIRE(grad.ok());
  std::vector<double> fd;
  const double h = 1e-5;
  for (size_t i = 0; i < flat.size(); ++i) {
    const double x0 = flat[i];
    flat[i] = x0 + h;
    const double lp = testing::RefLoss(RefModel{c, testing::MergeLora(w, layout, flat, scale)}, batch);
    flat[i] = x0 - h;
    const double lm = testing::RefLoss(RefModel{c, testing::MergeLora(w, layout, flat, scale)}, batch);
    flat[i] = x0;
    fd.push_back((lp - lm) / (2 * h));
  }
  CompareGradients(*grad, fd, 2e-5, 2e-5, "lora");
}

TEST_CASE("half-precision weights are used as stored", "[llama]") {
  auto be = Cpu();
  const ModelConfig c = TinyConfig();
  WeightMap w = testing::RandomWeights(c, 17);
  // Round every value to bf16 so the f32 model holds the same numbers.
  std::map<std::string, HostTensor> bf16;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    auto& v = w.at(e.name);
    auto buf = std::make_shared<std::vector<uint16_t>>();
    for (double& x : v) {
      buf->push_back(F32ToBF16(float(x)));
      x = BF16ToF32(buf->back());
    }
    HostTensor t;
    t.dtype = DType::kBF16;
    t.shape = e.shape;
    t.data = buf->data();
    t.owner = buf;
    bf16[e.name] = t;
  }
  auto half_weights = ModelWeights::FromTensors(bf16, c, "bf16");
  REQUIRE(half_weights.ok());
  auto half = LlamaModel::Create(c, *half_weights, be.get());
  REQUIRE(half.ok());
  auto full = MakeModel(be.get(), c, w);
  std::vector<int32_t> toks = {3, 1, 4, 1, 5, 9, 2, 6};
  auto a = (*half)->Logits(toks);
  auto b = full->Logits(toks);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  for (size_t i = 0; i < a->size(); ++i) CHECK((*a)[i] == Approx((*b)[i]).margin(1e-5));
  // Full training converts them to f32 and still trains.
  REQUIRE((*half)->EnableFullTraining().ok());
  REQUIRE((*half)->AccumulateGradients({{toks, {}}}).ok());
  REQUIRE((*half)->Step({}).ok());
}

TEST_CASE("micro-batch accumulation gives the mean over all counted tokens", "[llama]") {
  auto be = Cpu();
  const ModelConfig c = TinyConfig();
  const WeightMap w = testing::RandomWeights(c, 19);
  auto model = MakeModel(be.get(), c, w);
  REQUIRE(model->EnableFullTraining().ok());
  auto batch = Batch();
  REQUIRE(model->AccumulateGradients(batch).ok());
  auto together = model->ExportGradients();
  REQUIRE(together.ok());
  REQUIRE(model->ZeroGradients().ok());
  CHECK(model->accumulated_weight() == 0);
  REQUIRE(model->AccumulateGradients({batch[0]}).ok());
  REQUIRE(model->AccumulateGradients({batch[1]}).ok());
  CHECK(model->accumulated_weight() == Approx(10));
  auto split = model->ExportGradients();
  REQUIRE(split.ok());
  for (size_t i = 0; i < split->size(); ++i)
    CHECK((*split)[i] == Approx((*together)[i]).margin(1e-6));
}

TEST_CASE("flat gradients applied on another model copy equal a local step", "[llama]") {
  auto be = Cpu();
  const ModelConfig c = TinyConfig(true, false);
  const WeightMap w = testing::RandomWeights(c, 23);
  OptimizerConfig opt;
  opt.lr = 1e-2f;
  opt.weight_decay = 0.1f;
  opt.max_grad_norm = 0.5f;  // small enough to clip
  for (bool lora : {true, false}) {
    INFO((lora ? "lora" : "full"));
    auto local = MakeModel(be.get(), c, w);
    auto remote = MakeModel(be.get(), c, w);
    if (lora) {
      REQUIRE(local->EnableLora({}).ok());
      REQUIRE(remote->EnableLora({}).ok());
    } else {
      REQUIRE(local->EnableFullTraining().ok());
      REQUIRE(remote->EnableFullTraining().ok());
    }
    auto batch = Batch();
    for (int step = 1; step <= 3; ++step) {
      REQUIRE(local->AccumulateGradients({batch[0]}).ok());
      REQUIRE(local->AccumulateGradients({batch[1]}).ok());
      auto g = local->ExportGradients();
      REQUIRE(g.ok());
      auto s1 = local->Step(opt);
      REQUIRE(s1.ok());
      auto s2 = remote->ApplyGradients(*g, opt);
      REQUIRE(s2.ok());
      CHECK(s1->step == step);
      CHECK(s2->step == step);
      CHECK(s1->grad_norm == Approx(s2->grad_norm).epsilon(1e-6));
      if (step == 1) CHECK(s1->clip_scale < 1);
      auto p1 = local->GetParameters();
      auto p2 = remote->GetParameters();
      REQUIRE(p1.ok());
      REQUIRE(p2.ok());
      CHECK(*p1 == *p2);  // the same float operations on the same inputs
      // The remote model's own logits follow.
      auto l1 = local->Loss(batch);
      auto l2 = remote->Loss(batch);
      CHECK(l1->mean() == l2->mean());
    }
    // SetParameters round-trips.
    auto p = local->GetParameters();
    REQUIRE(p.ok());
    std::vector<float> q = *p;
    for (float& x : q) x *= 0.5f;
    REQUIRE(local->SetParameters(q).ok());
    CHECK(*local->GetParameters() == q);
  }
}

TEST_CASE("bad calls are rejected with clear errors", "[llama]") {
  auto be = Cpu();
  const ModelConfig c = TinyConfig();
  auto model = MakeModel(be.get(), c, testing::RandomWeights(c, 29));
  CHECK(model->Loss({{{1, 40}, {}}}).status().message().find("outside [0, 40)") !=
        std::string::npos);
  CHECK(model->Loss({{{1, -1}, {}}}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->Loss({{{}, {}}}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->Loss({}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->Loss({{{1, 2, 3}, {1, 1}}}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->Loss({{{1, 2, 3}, {0, -1, 1}}}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->Loss({{{1, 2, 3}, {0, NAN, 1}}}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->AccumulateGradients({{{1, 2}, {}}}).status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(model->ExportGradients().status().code() == StatusCode::kFailedPrecondition);

  LoraConfig bad;
  bad.target_modules = {"qkv_proj"};
  CHECK(model->EnableLora(bad).code() == StatusCode::kInvalidArgument);
  bad.target_modules = {"q_proj", "q_proj"};
  CHECK(model->EnableLora(bad).code() == StatusCode::kInvalidArgument);
  bad.target_modules = {"q_proj"};
  bad.rank = 0;
  CHECK(model->EnableLora(bad).code() == StatusCode::kInvalidArgument);
  CHECK(model->train_mode() == TrainMode::kNone);

  REQUIRE(model->EnableLora({}).ok());
  CHECK(model->EnableFullTraining().code() == StatusCode::kFailedPrecondition);
  CHECK(model->Step({}).status().code() == StatusCode::kFailedPrecondition);
  std::vector<float> wrong(size_t(model->TrainableCount() - 1));
  CHECK(model->ApplyGradients(wrong, {}).status().code() == StatusCode::kInvalidArgument);
  CHECK(model->SetParameters(wrong).code() == StatusCode::kInvalidArgument);
  std::vector<float> nan(size_t(model->TrainableCount()), 0.0f);
  nan[5] = INFINITY;
  CHECK(model->ApplyGradients(nan, {}).status().code() == StatusCode::kInvalidArgument);
  // A batch whose every token is masked counts nothing and changes nothing.
  auto none = model->AccumulateGradients({{{1, 2, 3}, {0, 0, 0}}});
  REQUIRE(none.ok());
  CHECK(none->counted == 0);
  CHECK(model->accumulated_weight() == 0);

  ModelConfig broken = c;
  broken.num_key_value_heads = 3;
  CHECK(LlamaModel::Create(broken, testing::ToModelWeights(testing::RandomWeights(c, 1), c),
                           be.get())
            .status()
            .code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

TEST_CASE("Load reads a Hugging Face directory written by WriteHfModel", "[llama]") {
  auto be = Cpu();
  ModelConfig c = TinyConfig(false, true);
  c.vocab_size = 256 + 8 + 2;  // MakeByteLevelTokenizerJson's bytes, merges, specials
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 37));
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    const auto& v = w.at(e.name);
    tensors.push_back({e.name, HostTensor::FromF32(e.shape, std::vector<float>(v.begin(), v.end()))});
  }
  const std::string dir = "/tmp/engine_llama_test_" + std::to_string(::getpid());
  REQUIRE(WriteHfModel(dir, c, tensors, MakeByteLevelTokenizerJson("tiny text, tiny test", 8)).ok());
  auto loaded = LlamaModel::Load(dir, be.get());
  std::filesystem::remove_all(dir);
  REQUIRE(loaded.ok());
  CHECK((*loaded)->config().attention_bias);
  std::vector<int32_t> toks = {3, 100, 265, 0, 42};
  auto a = (*loaded)->Logits(toks);
  REQUIRE(a.ok());
  const std::vector<double> want = testing::RefLogits(RefModel{c, w}, {toks});
  REQUIRE(a->size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) CHECK((*a)[i] == Approx(want[i]).margin(1e-4));
  CHECK(!LlamaModel::Load(dir + "/missing", be.get()).ok());
}

}  // namespace
}  // namespace pcfarm
