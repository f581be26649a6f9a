// Generation: KV-cache decode agrees with full forward passes, batching does
// not change the tokens, seeds make sampling reproducible.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "tasks/backend/cpu/cpu_backend.h"
#include "tasks/engine/engine_test_util.h"
#include "tasks/engine/llama.h"

namespace pcfarm {
namespace {

struct Fixture {
  std::unique_ptr<Backend> be;
  std::unique_ptr<LlamaModel> model;
  explicit Fixture(bool tied = false, bool bias = false) {
    BackendOptions o;
    o.cpu_threads = 2;
    be = std::move(CreateCpuBackend(o)).value();
    const ModelConfig c = testing::TinyConfig(tied, bias);
    // A larger scale gives peaked distributions, so greedy ties are unlikely.
    auto m = LlamaModel::Create(c, testing::ToModelWeights(testing::RandomWeights(c, 31, 0.6), c),
                                be.get());
    REQUIRE(m.ok());
    model = std::move(m).value();
  }
};

const std::vector<std::vector<int32_t>> kPrompts = {
    {1, 7, 9}, {1, 20, 21, 22, 23, 24, 25, 26}, {5}, {1, 3, 3, 3, 11}};

std::vector<GenerationRequest> Requests(uint64_t seed0) {
  std::vector<GenerationRequest> r;
  for (size_t i = 0; i < kPrompts.size(); ++i) r.push_back({kPrompts[i], seed0 + i});
  return r;
}

TEST_CASE("decoding with the KV cache matches full forward passes", "[generate]") {
  for (bool bias : {false, true}) {
    Fixture f(false, bias);
    GenerationConfig gc;
    gc.max_new_tokens = 12;
    gc.stop_ids = {-1};  // never stop early
    auto gen = f.model->Generate(Requests(0), gc);
    REQUIRE(gen.ok());
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      const Generation& g = (*gen)[i];
      REQUIRE(g.tokens.size() == 12);
      CHECK(g.finish == FinishReason::kLength);
      // Teacher-force prompt + generated tokens through the cache-free path.
      std::vector<int32_t> all = kPrompts[i];
      all.insert(all.end(), g.tokens.begin(), g.tokens.end());
      auto logits = f.model->Logits(all);
      REQUIRE(logits.ok());
      const size_t V = 40;
      for (size_t t = 0; t < g.tokens.size(); ++t) {
        std::span<const float> row(logits->data() + (kPrompts[i].size() - 1 + t) * V, V);
        // Greedy picked the full forward's argmax, with the same log-prob.
        CHECK(g.tokens[t] == SampleToken(row, {}, 0));
        CHECK(g.logprobs[t] == Approx(LogSoftmaxAt(row, g.tokens[t])).margin(1e-5));
      }
    }
  }
}

TEST_CASE("batched generation equals one-at-a-time generation", "[generate]") {
  Fixture f(true);
  for (double temperature : {0.0, 1.3}) {
    GenerationConfig gc;
    gc.max_new_tokens = 10;
    gc.sampling.temperature = temperature;
    gc.sampling.top_k = 20;
    gc.sampling.top_p = 0.95;
    gc.stop_ids = {2};
    auto batched = f.model->Generate(Requests(100), gc);
    REQUIRE(batched.ok());
    auto reqs = Requests(100);
    for (size_t i = 0; i < reqs.size(); ++i) {
      auto one = f.model->Generate({reqs[i]}, gc);
      REQUIRE(one.ok());
      CHECK((*one)[0].tokens == (*batched)[i].tokens);
      CHECK((*one)[0].finish == (*batched)[i].finish);
      REQUIRE((*one)[0].logprobs.size() == (*batched)[i].logprobs.size());
      for (size_t t = 0; t < (*one)[0].logprobs.size(); ++t)
        CHECK((*one)[0].logprobs[t] == Approx((*batched)[i].logprobs[t]).margin(1e-5));
    }
  }
}

TEST_CASE("the same seed gives the same tokens, another seed others", "[generate]") {
  Fixture f;
  GenerationConfig gc;
  gc.max_new_tokens = 24;
  gc.sampling.temperature = 2.0;  // flat enough that seeds matter
  gc.stop_ids = {-1};
  auto a = f.model->Generate(Requests(7), gc);
  auto b = f.model->Generate(Requests(7), gc);
  auto c = f.model->Generate(Requests(8), gc);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(c.ok());
  int differing = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    CHECK((*a)[i].tokens == (*b)[i].tokens);
    CHECK((*a)[i].logprobs == (*b)[i].logprobs);
    differing += (*a)[i].tokens != (*c)[i].tokens;
  }
  // Requests(8) gives prompt i the seed prompt i+1 had, so compare content.
  CHECK(differing >= 3);
  // Every sampled token's logprob is a real log-probability.
  for (const Generation& g : *a)
    for (float lp : g.logprobs) {
      CHECK(lp <= 0);
      CHECK(std::isfinite(lp));
    }
}

TEST_CASE("the check point runs before each decode step; waiting there changes nothing",
          "[generate]") {
  Fixture f;
  GenerationConfig gc;
  gc.max_new_tokens = 12;
  gc.sampling.temperature = 1.0;
  gc.stop_ids = {-1};
  auto plain = f.model->Generate(Requests(3), gc);
  REQUIRE(plain.ok());
  int calls = 0;
  gc.check_point = [&] {
    ++calls;
    // A pause: the caller waits here (as RunContext::CheckPoint does).
    if (calls == 5) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return false;
  };
  auto waited = f.model->Generate(Requests(3), gc);
  REQUIRE(waited.ok());
  CHECK(calls >= 12);
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    CHECK((*waited)[i].tokens == (*plain)[i].tokens);
    CHECK((*waited)[i].logprobs == (*plain)[i].logprobs);
  }
  calls = 0;
  gc.check_point = [&] { return ++calls == 3; };
  auto cancelled = f.model->Generate(Requests(3), gc);
  CHECK(cancelled.status().code() == StatusCode::kCancelled);
  CHECK(calls == 3);
}

TEST_CASE("generation stops at a stop id and at max_new_tokens", "[generate]") {
  Fixture f;
  GenerationConfig gc;
  gc.max_new_tokens = 6;
  gc.stop_ids = {-1};
  auto free_run = f.model->Generate(Requests(0), gc);
  REQUIRE(free_run.ok());
  // Stop on prompt 1's third greedy token: it ends there, the others go on
  // unless they meet that token too.
  const int32_t stop = (*free_run)[1].tokens[2];
  gc.stop_ids = {stop};
  auto stopped = f.model->Generate(Requests(0), gc);
  REQUIRE(stopped.ok());
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const auto& full = (*free_run)[i].tokens;
    const auto& g = (*stopped)[i];
    auto it = std::find(full.begin(), full.end(), stop);
    if (it == full.end()) {
      CHECK(g.tokens == full);
      CHECK(g.finish == FinishReason::kLength);
    } else {
      CHECK(g.tokens == std::vector<int32_t>(full.begin(), it + 1));
      CHECK(g.finish == FinishReason::kStop);
    }
  }
  CHECK((*stopped)[1].tokens.size() <= 3);

  gc.max_new_tokens = 0;
  auto none = f.model->Generate(Requests(0), gc);
  REQUIRE(none.ok());
  for (const Generation& g : *none) CHECK(g.tokens.empty());
  gc.max_new_tokens = -1;
  CHECK(f.model->Generate(Requests(0), gc).status().code() == StatusCode::kInvalidArgument);
  gc.max_new_tokens = 3;
  CHECK(f.model->Generate({{{}, 0}}, gc).status().code() == StatusCode::kInvalidArgument);
  CHECK(f.model->Generate({{{1, 99}, 0}}, gc).status().code() == StatusCode::kInvalidArgument);
  CHECK(f.model->Generate({}, gc).status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("generation uses the config's eos ids by default", "[generate]") {
  Fixture f;
  GenerationConfig gc;
  gc.max_new_tokens = 40;
  gc.sampling.temperature = 1.0;
  auto out = f.model->Generate(Requests(3), gc);
  REQUIRE(out.ok());
  for (const Generation& g : *out) {
    // eos id 2 (TinyConfig) ends a sequence and is never followed by more.
    auto it = std::find(g.tokens.begin(), g.tokens.end(), 2);
    if (it != g.tokens.end()) {
      CHECK(it + 1 == g.tokens.end());
      CHECK(g.finish == FinishReason::kStop);
    } else {
      CHECK(g.tokens.size() == 40);
    }
  }
}

TEST_CASE("teacher forcing gives the logits each generated token was drawn from", "[generate]") {
  Fixture f;
  GenerationConfig gc;
  gc.max_new_tokens = 9;
  gc.sampling.temperature = 0.9;
  gc.sampling.top_k = 12;
  gc.stop_ids = {-1};
  auto gen = f.model->Generate(Requests(5), gc);
  REQUIRE(gen.ok());
  std::vector<std::vector<int32_t>> conts;
  for (const Generation& g : *gen) conts.push_back(g.tokens);
  conts[2].clear();  // a sequence with nothing to check is skipped
  std::vector<std::pair<size_t, size_t>> seen;
  auto st = f.model->TeacherForcedLogits(
      kPrompts, conts, [&](size_t s, size_t k, std::span<const float> row) -> Status {
        REQUIRE(row.size() == 40);
        const Generation& g = (*gen)[s];
        // The draw the generator made, replayed on these logits.
        CHECK(SampleToken(row, gc.sampling, CounterUniform(5 + s, k)) == g.tokens[k]);
        CHECK(g.logprobs[k] == Approx(LogSoftmaxAt(row, g.tokens[k])).margin(1e-5));
        seen.emplace_back(s, k);
        return Status::Ok();
      });
  REQUIRE(st.ok());
  std::vector<std::pair<size_t, size_t>> want;
  for (size_t s = 0; s < conts.size(); ++s)
    for (size_t k = 0; k < conts[s].size(); ++k) want.emplace_back(s, k);
  CHECK(seen == want);

  // The callback's status ends the pass; bad input is refused.
  int calls = 0;
  auto stop = f.model->TeacherForcedLogits(kPrompts, conts, [&](size_t, size_t, auto) {
    return ++calls == 3 ? Cancelled("enough") : Status::Ok();
  });
  CHECK(stop.code() == StatusCode::kCancelled);
  CHECK(calls == 3);
  auto none = [](size_t, size_t, std::span<const float>) { return Status::Ok(); };
  CHECK(f.model->TeacherForcedLogits({{1}}, {}, none).code() == StatusCode::kInvalidArgument);
  CHECK(f.model->TeacherForcedLogits({{}}, {{1}}, none).code() == StatusCode::kInvalidArgument);
  CHECK(f.model->TeacherForcedLogits({{1}}, {{3, 40}}, none).code() ==
        StatusCode::kInvalidArgument);
  CHECK(f.model->TeacherForcedLogits({{1}}, {{-1, 3}}, none).code() ==
        StatusCode::kInvalidArgument);
  CHECK(f.model->TeacherForcedLogits({{1}}, {{}}, none).ok());
}

}  // namespace
}  // namespace pcfarm
