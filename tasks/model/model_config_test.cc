#include "tasks/model/model_config.h"

#include <catch2/catch.hpp>
#include <cmath>

namespace pcfarm {

namespace {
const char* kLlama = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
  "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "vocab_size": 300,
  "max_position_embeddings": 4096, "tie_word_embeddings": true,
  "bos_token_id": 1, "eos_token_id": [2, 3],
  "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16}})";
}

TEST_CASE("config.json of a llama", "[config]") {
  auto c = ParseHfConfig(kLlama, "config.json");
  REQUIRE(c.ok());
  CHECK(c->hidden_size == 64);
  CHECK(c->head_dim == 16);
  CHECK(c->num_key_value_heads == 2);
  CHECK(c->tie_word_embeddings);
  CHECK_FALSE(c->attention_bias);
  CHECK(c->bos_token_id == 1);
  CHECK(c->eos_token_ids == std::vector<int64_t>{2, 3});
  CHECK(c->rope_scaling.type == "llama3");
  CHECK(c->rope_scaling.original_max_position_embeddings == 16);

  // llama3 scaling, by hand: head_dim 16 -> 8 frequencies theta^(-i/8).
  // old_ctx 16: low wavelen 16, high wavelen 4.
  auto inv = RopeInverseFrequencies(*c);
  REQUIRE(inv.size() == 8);
  for (int i = 0; i < 8; ++i) {
    double base = std::pow(500000.0, -i / 8.0);
    double wavelen = 2 * M_PI / base, expect = base;
    if (wavelen > 16) expect = base / 8;
    else if (wavelen >= 4) {
      double s = (16 / wavelen - 1) / 3;
      expect = (1 - s) * base / 8 + s * base;
    }
    CHECK(inv[i] == Approx(expect).epsilon(1e-6));
  }
  CHECK(inv[0] == Approx((1 - (16 / (2 * M_PI) - 1) / 3) / 8 + (16 / (2 * M_PI) - 1) / 3));
}

TEST_CASE("config.json: explicit head_dim, Qwen2 bias, generation config", "[config]") {
  auto c = ParseHfConfig(R"({"architectures":["Qwen2ForCausalLM"],"hidden_size":64,
      "intermediate_size":96,"num_hidden_layers":1,"num_attention_heads":2,
      "head_dim":48,"vocab_size":10,"eos_token_id":5})", "q/config.json");
  REQUIRE(c.ok());
  CHECK(c->head_dim == 48);
  CHECK(c->num_key_value_heads == 2);
  CHECK(c->attention_bias);
  CHECK(c->eos_token_ids == std::vector<int64_t>{5});
  REQUIRE(MergeGenerationConfig(R"({"eos_token_id":[7,8],"temperature":0.6,"top_p":0.9})",
                                "generation_config.json", &*c).ok());
  CHECK(c->eos_token_ids == std::vector<int64_t>{7, 8});
  CHECK(c->default_temperature == Approx(0.6));
  // Round trip through the writer.
  auto again = ParseHfConfig(ToHfConfigJson(*c), "written");
  REQUIRE(again.ok());
  CHECK(again->head_dim == 48);
  CHECK(again->attention_bias);
  CHECK(again->architecture == "Qwen2ForCausalLM");
}

TEST_CASE("config.json errors name the file and field", "[config]") {
  auto err = [](const std::string& text) {
    auto c = ParseHfConfig(text, "m/config.json");
    REQUIRE_FALSE(c.ok());
    CHECK(c.status().message().rfind("m/config.json: ", 0) == 0);
    return c.status().message();
  };
  CHECK(err(R"({"architectures":["GPT2LMHeadModel"]})").find("GPT2LMHeadModel is not supported") != std::string::npos);
  CHECK(err(R"({"architectures":["LlamaForCausalLM"],"hidden_size":8})").find("intermediate_size") != std::string::npos);
  CHECK(err(R"({"architectures":["LlamaForCausalLM"],"hidden_size":"8"})").find("hidden_size is not an integer") != std::string::npos);
  err("{not json");
  err("[]");
  err(R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":3,"num_key_value_heads":2,"vocab_size":4})");
  err(R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":8,
          "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":4,
          "rope_scaling":{"rope_type":"yarn","factor":2}})");
  err(R"({"architectures":["LlamaForCausalLM"],"hidden_size":8,"intermediate_size":-8,
          "num_hidden_layers":1,"num_attention_heads":2,"vocab_size":4})");
}

}  // namespace pcfarm
