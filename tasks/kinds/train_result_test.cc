#include "tasks/kinds/train_result.h"

#include <catch2/catch.hpp>
#include <cstring>

namespace pcfarm {
namespace {

TrainResult Sample(GradientCodec codec) {
  TrainResult r;
  r.loss = 2.5;
  r.weight = 12;
  r.tokens = 12;
  r.codec = codec;
  r.backend = "cpu";
  for (int i = 0; i < 150; ++i) r.values.push_back(float(i % 17) * 0.25f - 2.0f);
  return r;
}

TEST_CASE("a train result round-trips in each codec", "[train_result]") {
  for (GradientCodec c : {GradientCodec::kNone, GradientCodec::kFp16, GradientCodec::kInt8}) {
    TrainResult r = Sample(c);
    auto bytes = EncodeTrainResult(r);
    REQUIRE(bytes.ok());
    // One JSON line, then the gradient message.
    size_t nl = bytes->find('\n');
    REQUIRE(nl != std::string::npos);
    CHECK(bytes->substr(nl + 1, 4) == "PCG1");
    // f32 travels plain; fp16 and int8 are packed with zstd (these 17
    // repeated values pack well).
    if (c == GradientCodec::kNone) {
      CHECK(bytes->size() == nl + 1 + EncodedGradientSize(c, 150));
    } else {
      CHECK(IsPackedGradient(std::string_view(*bytes).substr(nl + 1)));
      CHECK(bytes->size() < nl + 1 + EncodedGradientSize(c, 150));
    }
    auto back = DecodeTrainResult(*bytes, 1000);
    REQUIRE(back.ok());
    CHECK(back->loss == 2.5);
    CHECK(back->weight == 12);
    CHECK(back->tokens == 12);
    CHECK(back->codec == c);
    CHECK(back->backend == "cpu");
    CHECK(back->layout == "lora");
    REQUIRE(back->values.size() == 150);
    // These values are exact in every codec (multiples of 1/4, |x| <= 2;
    // an int8 block has scale 2/127: only the f32 and fp16 are exact).
    if (c != GradientCodec::kInt8) CHECK(back->values == r.values);
    auto head = DecodeTrainResultHeader(*bytes);
    REQUIRE(head.ok());
    CHECK(head->values.empty());
    CHECK(head->loss == 2.5);
  }
}

TEST_CASE("a bad train result is refused with a reason", "[train_result]") {
  auto good = EncodeTrainResult(Sample(GradientCodec::kNone));
  REQUIRE(good.ok());
  const size_t nl = good->find('\n');
  const std::string body = good->substr(nl + 1);
  auto refused = [](const std::string& bytes, const char* says) {
    auto r = DecodeTrainResult(bytes, 1000);
    INFO(bytes.substr(0, 80) << " -> " << r.status().ToString());
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find(says) != std::string::npos);
  };
  refused("", "header line");
  refused("{\"loss\": 1}", "header line");
  refused("[1,2]\n" + body, "not a JSON object");
  refused(R"({"loss":"x","weight":1,"tokens":1,"count":150,"codec":"none"})" "\n" + body, "'loss'");
  refused(R"({"loss":1,"weight":-1,"tokens":1,"count":150,"codec":"none"})" "\n" + body, "'weight'");
  refused(R"({"loss":1,"weight":1,"tokens":-3,"count":150,"codec":"none"})" "\n" + body, "'tokens'");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":0,"codec":"none"})" "\n" + body, "'count'");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":150,"codec":"zip"})" "\n" + body, "'codec'");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":150,"codec":"int8"})" "\n" + body, "int8");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":151,"codec":"none"})" "\n" + body, "take");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":5000,"codec":"none"})" "\n" + body, "more than");
  refused(good->substr(0, good->size() - 1), "take");
  refused(*good + "x", "take");
  // A packed message: its own count must be the header's.
  auto packed = EncodeTrainResult(Sample(GradientCodec::kInt8));
  REQUIRE(packed.ok());
  const std::string packed_body = packed->substr(packed->find('\n') + 1);
  REQUIRE(IsPackedGradient(packed_body));
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":151,"codec":"int8"})" "\n" + packed_body,
          "the message holds 150 values, the header says 151");
  refused(R"({"loss":1,"weight":1,"tokens":1,"count":149,"codec":"int8"})" "\n" + packed_body,
          "over the limit of 149");
  refused(packed->substr(0, packed->size() - 1), "zstd frame");
  std::string nan = *good;
  const float bad = std::nanf("");
  std::memcpy(nan.data() + nl + 1 + kGradientHeaderBytes, &bad, 4);
  refused(nan, "train result");
  // Encoding refuses what it cannot write.
  TrainResult r = Sample(GradientCodec::kNone);
  r.values.clear();
  CHECK_FALSE(EncodeTrainResult(r).ok());
  r = Sample(GradientCodec::kNone);
  r.loss = INFINITY;
  CHECK_FALSE(EncodeTrainResult(r).ok());
  r = Sample(GradientCodec::kFp16);
  r.values[3] = 1e6f;
  CHECK_FALSE(EncodeTrainResult(r).ok());
}

}  // namespace
}  // namespace pcfarm
