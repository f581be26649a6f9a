#include "coordinator/jobs/memory_estimate.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

namespace pcfarm {
namespace {

ModelDims Small() {
  ModelDims d;
  d.hidden = 64;
  d.layers = 2;
  d.heads = 4;
  d.kv_heads = 2;
  d.head_dim = 16;
  d.intermediate = 128;
  d.vocab = 100;
  d.weight_bytes = 1000;
  return d;
}

TEST_CASE("infer shard memory: weights, KV cache, prefill activations, logits", "[memory]") {
  // KV: 2·2 layers·3 prompts·20 positions·(2·16)·4 = 30720; prefill:
  // 4·10 tokens·(6·64 + 2·64 + 2·32 + 3·128) = 38400; logits 4·3·100 = 1200.
  CHECK(InferShardMemoryBytes(Small(), 3, 10, 20) == 1000 + 30720 + 38400 + 1200);
  CHECK(InferShardMemoryBytes(Small(), 0, 0, 0) == 1000);
  // A 7B-class shape (hidden 4096, 32 layers, 32 heads, 8 kv heads of 128,
  // intermediate 14336, vocab 128256) in Q8_0 (~7.5 GB), 16 prompts of
  // 512 + 256: KV 2·32·16·768·1024·4 = 3 GiB.
  ModelDims big{4096, 32, 32, 8, 128, 14336, 128256, 7'500'000'000};
  const int64_t kv = int64_t(2) * 32 * 16 * 768 * 1024 * 4;
  CHECK(kv == int64_t(3) << 30);
  const int64_t acts = int64_t(4) * 16 * 512 * (6 * 4096 + 2 * 4096 + 2 * 1024 + 3 * 14336);
  CHECK(InferShardMemoryBytes(big, 16, 16 * 512, 768) ==
        7'500'000'000 + kv + acts + int64_t(4) * 16 * 128256);
}

TEST_CASE("train shard memory: weights, LoRA with AdamW, activations for backward",
          "[memory]") {
  // per layer 4·64 + 2·64 + 2·32 + 4 + 3·128 + 7·4 = 864; activations
  // 4·8 tokens·(3·864 + 64 + 2·100) = 91392; LoRA 16·500 = 8000.
  CHECK(TrainShardMemoryBytes(Small(), 500, 4, 8) == 1000 + 8000 + 91392);
  CHECK(TrainShardMemoryBytes(Small(), 0, 0, 0) == 1000);
}

TEST_CASE("model dims round-trip through JSON; bad fields are named", "[memory]") {
  ModelDims d = Small();
  nlohmann::json j = ModelDimsToJson(d);
  auto back = ModelDimsFromJson(j);
  REQUIRE(back.ok());
  CHECK(back->kv_heads == 2);
  CHECK(back->weight_bytes == 1000);
  j.erase("vocab");
  CHECK(ModelDimsFromJson(j).status().message().find("model_dims.vocab") != std::string::npos);
  j = ModelDimsToJson(d);
  j["layers"] = 0;
  CHECK(ModelDimsFromJson(j).status().code() == StatusCode::kInvalidArgument);
  j["layers"] = "2";
  CHECK_FALSE(ModelDimsFromJson(j).ok());
  CHECK_FALSE(ModelDimsFromJson(nlohmann::json::array()).ok());
}

}  // namespace
}  // namespace pcfarm
