// FlatAdamW: the model's optimizer step without the model, its state file,
// and bad layouts, calls and state bytes.
#include "tasks/engine/optimizer.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/engine/engine_test_util.h"

namespace pcfarm {
namespace {

std::unique_ptr<Backend> Cpu() {
  BackendOptions o;
  o.cpu_threads = 2;
  auto b = CreateCpuBackend(o);
  REQUIRE(b.ok());
  return std::move(b).value();
}

std::unique_ptr<LlamaModel> LoraModel(Backend* be) {
  const ModelConfig c = testing::TinyConfig();
  auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, 31), c), be);
  REQUIRE(m.ok());
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  lora.target_modules = {"q_proj", "v_proj", "down_proj"};
  lora.seed = 5;
  REQUIRE((*m)->EnableLora(lora).ok());
  return std::move(m).value();
}

std::vector<TokenSequence> Batch() {
  return {{{1, 5, 9, 13, 7, 22, 39}, {}}, {{1, 30, 2, 17, 4}, {0, 0, 1, 2, 1}}};
}

OptimizerConfig Opt() {
  OptimizerConfig opt;
  opt.lr = 1e-2f;
  opt.weight_decay = 0.1f;
  opt.max_grad_norm = 0.5f;  // small enough to clip
  return opt;
}

// The mean gradient of `batch` at `params`, computed by `model` (whose own
// optimizer state is never used).
std::vector<float> GradientAt(LlamaModel* model, const std::vector<float>& params,
                              const std::vector<TokenSequence>& batch) {
  REQUIRE(model->SetParameters(params).ok());
  REQUIRE(model->AccumulateGradients(batch).ok());
  auto g = model->ExportGradients();
  REQUIRE(g.ok());
  REQUIRE(model->ZeroGradients().ok());
  return std::move(g).value();
}

TEST_CASE("FlatAdamW takes the model's steps from exported gradients", "[optimizer]") {
  auto be = Cpu();
  auto a = LoraModel(be.get());  // trains itself
  auto b = LoraModel(be.get());  // only computes gradients
  auto flat = FlatAdamW::Create(a->TrainableParameters(), be.get());
  REQUIRE(flat.ok());
  CHECK((*flat)->count() == a->TrainableCount());
  CHECK((*flat)->step() == 0);
  auto start = a->GetParameters();
  REQUIRE(start.ok());
  std::vector<float> params = *start;
  const auto batch = Batch();
  std::string state_after_2;
  std::vector<float> params_after_2;
  for (int step = 1; step <= 3; ++step) {
    INFO("step " << step);
    std::vector<float> g = GradientAt(b.get(), params, batch);
    REQUIRE(a->AccumulateGradients(batch).ok());
    auto sa = a->Step(Opt());
    REQUIRE(sa.ok());
    auto sf = (*flat)->Apply(&params, g, Opt());
    REQUIRE(sf.ok());
    CHECK(sf->step == step);
    CHECK((*flat)->step() == step);
    if (step == 1) CHECK(sf->clip_scale < 1);
    // Bit for bit, not within a tolerance: ExportGradients divides by Σw
    // with the same float multiply as Step's Scale, and both then run the
    // same CPU SumSquares (fixed blocks, fixed order) and AdamWStep kernels
    // on the same floats tensor by tensor, through ClipAndStepAdamW.
    CHECK(sf->grad_norm == sa->grad_norm);
    CHECK(sf->clip_scale == sa->clip_scale);
    CHECK(params == *a->GetParameters());
    if (step == 2) {
      state_after_2 = (*flat)->EncodeState();
      params_after_2 = params;
    }
  }
  CHECK(params != *start);

  // A fresh optimizer restored from the state after step 2 takes step 3 the
  // same way.
  auto again = FlatAdamW::Create(a->TrainableParameters(), be.get());
  REQUIRE(again.ok());
  REQUIRE((*again)->RestoreState(state_after_2).ok());
  CHECK((*again)->step() == 2);
  CHECK((*again)->EncodeState() == state_after_2);
  std::vector<float> p = params_after_2;
  auto s3 = (*again)->Apply(&p, GradientAt(b.get(), p, batch), Opt());
  REQUIRE(s3.ok());
  CHECK(s3->step == 3);
  CHECK(p == params);
  CHECK((*again)->EncodeState() == (*flat)->EncodeState());
}

TEST_CASE("FlatAdamW's state file has the documented layout", "[optimizer]") {
  auto be = Cpu();
  std::vector<ParameterInfo> layout = {{"a", {2, 3}, 0, 6}, {"b", {4}, 6, 4}};
  auto o = FlatAdamW::Create(layout, be.get());
  REQUIRE(o.ok());
  CHECK((*o)->count() == 10);
  std::vector<float> params(10, 1.0f), grad(10);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = 0.1f * float(i) - 0.3f;
  OptimizerConfig opt;
  opt.max_grad_norm = 0;  // no clipping
  auto s = (*o)->Apply(&params, grad, opt);
  REQUIRE(s.ok());
  CHECK(s->clip_scale == 1);
  const std::string st = (*o)->EncodeState();
  REQUIRE(st.size() == 24 + 8 * 10u);
  CHECK(st.substr(0, 4) == "PAW1");
  uint32_t version;
  int64_t step, count;
  std::memcpy(&version, st.data() + 4, 4);
  std::memcpy(&step, st.data() + 8, 8);
  std::memcpy(&count, st.data() + 16, 8);
  CHECK(version == 1);
  CHECK(step == 1);
  CHECK(count == 10);
  // After one step m = (1-β1)·g and v = (1-β2)·g², as AdamW's first update
  // (1-β computed in f32: 1e-4 relative).
  for (int i = 0; i < 10; ++i) {
    float m, v;
    std::memcpy(&m, st.data() + 24 + 4 * i, 4);
    std::memcpy(&v, st.data() + 24 + 40 + 4 * i, 4);
    CHECK(m == Approx(0.1 * grad[i]).epsilon(1e-4));
    CHECK(v == Approx(0.001 * grad[i] * grad[i]).epsilon(1e-4));
  }
}

TEST_CASE("FlatAdamW rejects bad layouts, calls and state bytes", "[optimizer]") {
  auto be = Cpu();
  auto create_error = [&](std::vector<ParameterInfo> layout) {
    auto o = FlatAdamW::Create(std::move(layout), be.get());
    REQUIRE(!o.ok());
    CHECK(o.status().code() == StatusCode::kInvalidArgument);
    return o.status().message();
  };
  auto has = [](const std::string& s, const char* part) {
    INFO(s);
    return s.find(part) != std::string::npos;
  };
  CHECK(has(create_error({}), "no tensor"));
  CHECK(has(create_error({{"a", {2, 0}, 0, 0}}), "a) has shape [2,0]"));
  CHECK(has(create_error({{"a", {}, 0, 1}}), "0 dimensions"));
  CHECK(has(create_error({{"a", {1, 1, 1, 1, 1}, 0, 1}}), "5 dimensions"));
  CHECK(has(create_error({{"a", {2, 3}, 0, 5}}), "numel 5"));
  CHECK(has(create_error({{"a", {2}, 0, 2}, {"b", {2}, 3, 2}}), "b) is at offset 3, expected 2"));
  CHECK(has(create_error({{"a", {2}, 1, 2}}), "offset 1, expected 0"));
  CHECK(has(create_error({{"a", {int64_t(1) << 30, int64_t(1) << 30}, 0, 0}}), "has shape"));

  auto o = FlatAdamW::Create({{"a", {3}, 0, 3}}, be.get());
  REQUIRE(o.ok());
  std::vector<float> params = {1, 2, 3};
  auto apply_error = [&](std::vector<float> p, std::vector<float> g) {
    const std::vector<float> before = p;
    auto s = (*o)->Apply(&p, g, OptimizerConfig{});
    CHECK(s.status().code() == StatusCode::kInvalidArgument);
    CHECK(p == before);
    CHECK((*o)->step() == 0);
    return s.status().message();
  };
  CHECK(has(apply_error({1, 2}, {1, 2, 3}), "2 parameters and 3 gradient values, expected 3"));
  CHECK(has(apply_error({1, 2, 3}, {1, 2}), "3 parameters and 2 gradient values"));
  CHECK(has(apply_error({1, 2, 3}, {1, NAN, 3}), "gradient value 1 is not finite"));
  CHECK(has(apply_error({1, 2, 3}, {1, 2, INFINITY}), "gradient value 2"));

  // A good state to damage: one step taken.
  REQUIRE((*o)->Apply(&params, std::vector<float>{0.5f, -1, 2}, OptimizerConfig{}).ok());
  const std::string good = (*o)->EncodeState();
  auto restore_error = [&](const std::string& bytes) {
    Status s = (*o)->RestoreState(bytes);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK((*o)->EncodeState() == good);  // unchanged
    return s.message();
  };
  auto patched = [&](size_t at, const void* v, size_t n) {
    std::string s = good;
    std::memcpy(s.data() + at, v, n);
    return s;
  };
  CHECK(has(restore_error(""), "0 bytes, shorter than the 24-byte header"));
  CHECK(has(restore_error(good.substr(0, 23)), "shorter than the 24-byte header"));
  CHECK(has(restore_error(good.substr(0, good.size() - 1)), "(truncated)"));
  CHECK(has(restore_error(good + "x"), "bytes, expected 48"));
  CHECK(has(restore_error(patched(0, "PAW2", 4)), "bad magic"));
  const uint32_t v2 = 2;
  CHECK(has(restore_error(patched(4, &v2, 4)), "version 2, expected 1"));
  const int64_t neg = -1, four = 4, huge = int64_t(1) << 62;
  CHECK(has(restore_error(patched(8, &neg, 8)), "step -1 is negative"));
  CHECK(has(restore_error(patched(16, &four, 8)), "count 4, this optimizer has 3"));
  CHECK(has(restore_error(patched(16, &huge, 8)), "count 4611686018427387904"));
  const float nan = NAN, minus = -1;
  CHECK(has(restore_error(patched(24 + 4, &nan, 4)), "m[1] is not finite"));
  CHECK(has(restore_error(patched(24 + 12 + 8, &minus, 4)), "v[2] is -1"));
  CHECK(has(restore_error(patched(24 + 12, &nan, 4)), "v[0] is nan"));
  REQUIRE((*o)->RestoreState(good).ok());
  CHECK((*o)->step() == 1);
}

}  // namespace
}  // namespace pcfarm
