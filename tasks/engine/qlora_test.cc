// QLoRA: LoRA adapters trained over projections quantized at load time
// (LlamaOptions::quantize). The quantized base is a fixed function, so the
// adapters' gradients are checked two ways: against central differences of
// the double reference (engine_test_util.h) run on the dequantized weights,
// and against central differences of the engine's own loss.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <random>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/engine/engine_test_util.h"
#include "tasks/engine/llama.h"

namespace pcfarm {
namespace {

using testing::RefModel;
using testing::WeightMap;

// TinyConfig with every projection's input a whole number of 32-blocks:
// hidden 32, 2 layers, 4 heads of 8, 2 kv heads, ffn 64, vocab 40.
ModelConfig QuantTinyConfig() {
  ModelConfig c = testing::TinyConfig();
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.head_dim = 8;
  return c;
}

std::unique_ptr<Backend> Cpu() {
  auto b = CreateCpuBackend({.cpu_threads = 2});
  REQUIRE(b.ok());
  return std::move(b).value();
}

bool IsProjection(const std::string& name) {
  return name.find("_proj.weight") != std::string::npos;
}

// The projections of `w` quantized and dequantized, as the model holds them.
WeightMap Dequantized(WeightMap w, StorageType type) {
  const uint32_t g = StorageGgmlType(type);
  for (auto& [name, v] : w) {
    const int64_t bv = StorageBlockValues(type);
    if (!IsProjection(name) || int64_t(v.size()) % bv != 0) continue;
    std::vector<float> f(v.begin(), v.end());
    std::vector<uint8_t> q(StorageBytes(type, int64_t(f.size())));
    REQUIRE(QuantizeBlocks(g, f.data(), int64_t(f.size()), q.data()).ok());
    DequantizeBlocks(g, q.data(), int64_t(f.size()) / bv, f.data());
    v.assign(f.begin(), f.end());
  }
  return w;
}

std::vector<TokenSequence> Batch() {
  return {{{1, 5, 9, 13, 7, 22, 39}, {}},
          {{1, 30, 2, 17, 4}, {0, 0, 1, 2, 1}}};
}

TEST_CASE("QLoRA: adapter gradients over a quantized base match finite differences",
          "[qlora]") {
  auto be = Cpu();
  const ModelConfig c = QuantTinyConfig();
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 21));
  for (StorageType type : {StorageType::kQ8_0, StorageType::kQ4_0}) {
    INFO(StorageTypeName(type));
    LlamaOptions opts;
    opts.quantize = type;
    auto model = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
    REQUIRE(model.ok());
    LlamaModel& m = **model;
    const WeightMap wq = Dequantized(w, type);

    // The model computes the dequantized weights' function, not the f32 one.
    auto base_loss = m.Loss(Batch());
    REQUIRE(base_loss.ok());
    const double ref_q = testing::RefLoss(RefModel{c, wq}, Batch());
    const double ref_f = testing::RefLoss(RefModel{c, w}, Batch());
    std::printf("%s: loss %.6f, reference on dequantized weights %.6f, on f32 weights %.6f\n",
                StorageTypeName(type), base_loss->mean(), ref_q, ref_f);
    CHECK(base_loss->mean() == Approx(ref_q).margin(1e-5));
    CHECK(std::abs(ref_q - ref_f) > 1e-5);

    LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 8;
    lora.target_modules = LoraTargetOrder();
    lora.seed = 7;
    REQUIRE(m.EnableLora(lora).ok());
    const auto& layout = m.TrainableParameters();
    auto init = m.GetParameters();
    REQUIRE(init.ok());
    std::vector<double> flat(init->begin(), init->end());
    std::mt19937_64 rng(4);
    std::normal_distribution<double> nd(0, 0.2);
    for (size_t i = 1; i < layout.size(); i += 2)  // B non-zero: every gradient counts
      for (int64_t j = 0; j < layout[i].numel; ++j)
        flat[size_t(layout[i].offset + j)] = double(float(nd(rng)));
    REQUIRE(m.SetParameters(std::vector<float>(flat.begin(), flat.end())).ok());

    REQUIRE(m.AccumulateGradients(Batch()).ok());
    auto grad = m.ExportGradients();
    REQUIRE(grad.ok());

    // (1) Every 7th entry against the double reference on the dequantized
    // base, h = 1e-5.
    const double scale = 8.0 / 4.0;
    auto ref_loss = [&](const std::vector<double>& f) {
      return testing::RefLoss(RefModel{c, testing::MergeLora(wq, layout, f, scale)}, Batch());
    };
    double num = 0, den = 0, worst = 0, gmax = 0;
    std::vector<std::pair<double, double>> pairs;
    for (size_t i = 0; i < flat.size(); i += 7) {
      const double x0 = flat[i], h = 1e-5;
      flat[i] = x0 + h;
      const double lp = ref_loss(flat);
      flat[i] = x0 - h;
      const double lm = ref_loss(flat);
      flat[i] = x0;
      pairs.push_back({(lp - lm) / (2 * h), (*grad)[i]});
      gmax = std::max(gmax, std::abs(pairs.back().first));
    }
    for (auto [fd, g] : pairs) {
      num += (g - fd) * (g - fd);
      den += fd * fd;
      worst = std::max(worst, std::abs(g - fd) / gmax);
    }
    std::printf("%s vs double reference: %zu entries, relative L2 error %.3g, worst %.3g of "
                "max|g| %.3g\n",
                StorageTypeName(type), pairs.size(), std::sqrt(num / den), worst, gmax);
    CHECK(std::sqrt(num / den) < 5e-5);
    CHECK(worst < 5e-5);

    // (2) A few entries of A and B in different layers and projections
    // against the engine's own f32 loss, h = 1e-2 (f32 rounding of a loss
    // near 4 is ~5e-7, so the difference quotient is good to ~1e-4).
    for (size_t p : {size_t(0), size_t(5), size_t(12), size_t(17), size_t(27)}) {
      const ParameterInfo& info = layout[p];
      const size_t i = size_t(info.offset + info.numel / 3);
      const double x0 = flat[i], h = 1e-2;
      auto engine_loss = [&](double x) {
        std::vector<float> f(flat.begin(), flat.end());
        f[i] = float(x);
        REQUIRE(m.SetParameters(f).ok());
        auto l = m.Loss(Batch());
        REQUIRE(l.ok());
        return l->mean();
      };
      const double fd = (engine_loss(x0 + h) - engine_loss(x0 - h)) / (2 * h);
      INFO(info.name << "[" << info.numel / 3 << "]: finite difference " << fd << ", gradient "
                     << (*grad)[i]);
      CHECK(std::abs(fd - (*grad)[i]) <= 2e-3 * gmax + 1e-2 * std::abs(fd));
    }
  }
}

TEST_CASE("QLoRA: Q4_K and Q6_K bases are held as blocks and compute the dequantized loss",
          "[qlora]") {
  // Rows of whole 256-value super-blocks: hidden 256, ffn 512. The adapter
  // gradients take the same path as over Q8_0/Q4_0 (the converted tiles of
  // dy·W, whose K-quant conversion cpu_quant_test checks bit for bit).
  auto be = Cpu();
  ModelConfig c = QuantTinyConfig();
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.head_dim = 64;
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 23));
  for (StorageType type : {StorageType::kQ4_K, StorageType::kQ6_K}) {
    INFO(StorageTypeName(type));
    LlamaOptions opts;
    opts.quantize = type;
    auto model = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
    REQUIRE(model.ok());
    CHECK((*model)->UnquantizedProjections().empty());
    LlamaOptions plain;
    auto f32 = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), plain);
    REQUIRE(f32.ok());
    CHECK((*model)->WeightBytes() < (*f32)->WeightBytes() / 2);
    auto loss = (*model)->Loss(Batch());
    REQUIRE(loss.ok());
    const double ref_q = testing::RefLoss(RefModel{c, Dequantized(w, type)}, Batch());
    const double ref_f = testing::RefLoss(RefModel{c, w}, Batch());
    CHECK(loss->mean() == Approx(ref_q).margin(1e-5));
    CHECK(std::abs(ref_q - ref_f) > 1e-5);
    LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 8;
    lora.target_modules = LoraTargetOrder();
    REQUIRE((*model)->EnableLora(lora).ok());
    REQUIRE((*model)->AccumulateGradients(Batch()).ok());
    auto grad = (*model)->ExportGradients();
    REQUIRE(grad.ok());
    double norm = 0;
    for (float g : *grad) norm += double(g) * g;
    CHECK(std::isfinite(norm));
    CHECK(norm > 0);
  }
}

TEST_CASE("QLoRA: training steps lower the loss; the base stays frozen", "[qlora]") {
  auto be = Cpu();
  const ModelConfig c = QuantTinyConfig();
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 22));
  LlamaOptions opts;
  opts.quantize = StorageType::kQ4_0;
  auto model = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
  REQUIRE(model.ok());
  LlamaModel& m = **model;
  auto full = m.EnableFullTraining();
  CHECK(full.code() == StatusCode::kFailedPrecondition);
  CHECK(full.message().find("quantized") != std::string::npos);
  CHECK(full.message().find("LoRA") != std::string::npos);
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  REQUIRE(m.EnableLora(lora).ok());
  OptimizerConfig opt;
  opt.lr = 1e-2f;
  double first = 0, last = 0;
  for (int s = 0; s < 15; ++s) {
    auto sums = m.AccumulateGradients(Batch());
    REQUIRE(sums.ok());
    REQUIRE(m.Step(opt).ok());
    (s == 0 ? first : last) = sums->mean();
  }
  std::printf("QLoRA Q4_0 tiny: loss %.4f -> %.4f over 15 steps\n", first, last);
  CHECK(last < first - 0.3);
}

TEST_CASE("QLoRA: bad quantize options are refused with a message", "[qlora]") {
  auto be = Cpu();
  CHECK(*ParseWeightQuantization("q8_0") == StorageType::kQ8_0);
  CHECK(*ParseWeightQuantization("Q4_0") == StorageType::kQ4_0);
  CHECK(*ParseWeightQuantization("none") == StorageType::kF32);
  CHECK(*ParseWeightQuantization("") == StorageType::kF32);
  CHECK(*ParseWeightQuantization("q4_k") == StorageType::kQ4_K);
  CHECK(*ParseWeightQuantization("Q6_K") == StorageType::kQ6_K);
  auto bad = ParseWeightQuantization("q5_k");
  CHECK(bad.status().code() == StatusCode::kInvalidArgument);
  CHECK(bad.status().message().find("q8_0, q4_0, q4_k or q6_k") != std::string::npos);

  {  // Rows that are not whole blocks stay f32: the ffn 48 of down_proj.
    ModelConfig c = QuantTinyConfig();
    c.intermediate_size = 48;
    const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 1));
    LlamaOptions opts;
    opts.quantize = StorageType::kQ8_0;
    auto m = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
    REQUIRE(m.ok());
    CHECK((*m)->UnquantizedProjections() ==
          std::vector<std::string>{"model.layers.0.mlp.down_proj.weight",
                                   "model.layers.1.mlp.down_proj.weight"});
    WeightMap wq = Dequantized(w, StorageType::kQ8_0);
    for (int l = 0; l < 2; ++l) {
      const std::string name = "model.layers." + std::to_string(l) + ".mlp.down_proj.weight";
      wq[name] = w.at(name);
    }
    auto loss = (*m)->Loss(Batch());
    REQUIRE(loss.ok());
    CHECK(loss->mean() == Approx(testing::RefLoss(RefModel{c, wq}, Batch())).margin(1e-5));
    CHECK((*m)->EnableFullTraining().code() == StatusCode::kFailedPrecondition);
  }
  const ModelConfig c = QuantTinyConfig();
  const WeightMap w = testing::RoundToF32(testing::RandomWeights(c, 2));
  {  // Only the block formats have a quantizer.
    LlamaOptions opts;
    opts.quantize = StorageType::kBF16;
    auto m = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().message().find("Q8_0, Q4_0, Q4_K and Q6_K") != std::string::npos);
  }
  {  // Rows of 32 and 64 values are not whole K-quant super-blocks: all stay f32.
    LlamaOptions opts;
    opts.quantize = StorageType::kQ4_K;
    auto m = LlamaModel::Create(c, testing::ToModelWeights(w, c), be.get(), opts);
    REQUIRE(m.ok());
    CHECK((*m)->UnquantizedProjections().size() == size_t(7 * c.num_hidden_layers));
  }
  {  // A weight whose Q8_0 scale would overflow f16.
    WeightMap huge = w;
    huge.at("model.layers.1.mlp.up_proj.weight")[40] = 1e7;
    LlamaOptions opts;
    opts.quantize = StorageType::kQ8_0;
    auto m = LlamaModel::Create(c, testing::ToModelWeights(huge, c), be.get(), opts);
    REQUIRE_FALSE(m.ok());
    CHECK(m.status().message().find("up_proj.weight row 1") != std::string::npos);
  }
  {  // Already quantized projections (as a quantized GGUF holds them).
    std::map<std::string, HostTensor> t;
    for (const ExpectedTensor& e : ExpectedTensors(c)) {
      const std::vector<double>& v = w.at(e.name);
      std::vector<float> f(v.begin(), v.end());
      t[e.name] = HostTensor::FromF32(e.shape, f);
      if (!IsProjection(e.name)) continue;
      auto q = std::make_shared<std::vector<uint8_t>>(StorageBytes(StorageType::kQ8_0,
                                                                   int64_t(f.size())));
      REQUIRE(QuantizeBlocks(kGgmlTypeQ8_0, f.data(), int64_t(f.size()), q->data()).ok());
      t[e.name].dtype = DType::kQ8_0;
      t[e.name].data = q->data();
      t[e.name].owner = q;
    }
    auto weights = ModelWeights::FromTensors(std::move(t), c, "test");
    REQUIRE(weights.ok());
    LlamaOptions opts;
    opts.quantize = StorageType::kQ4_0;
    auto again = LlamaModel::Create(c, *weights, be.get(), opts);
    REQUIRE_FALSE(again.ok());
    CHECK(again.status().message().find("already quantized (Q8_0)") != std::string::npos);
    auto as_is = LlamaModel::Create(c, *weights, be.get());
    REQUIRE(as_is.ok());
    CHECK((*as_is)->EnableFullTraining().code() == StatusCode::kFailedPrecondition);
    LoraConfig lora;
    lora.rank = 2;
    REQUIRE((*as_is)->EnableLora(lora).ok());
    CHECK((*as_is)->AccumulateGradients(Batch()).ok());
  }
}

}  // namespace
}  // namespace pcfarm
