// Token data blobs: the documented bytes, round trips, and every kind of bad
// blob.
#include "tasks/engine/token_data.h"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>

namespace pcfarm {
namespace {

std::string U32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string I32(int32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string F32(float v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

std::string Header(uint32_t count) { return "PTD1" + U32(1) + U32(count); }

// The error of decoding `bytes`; "" when it decodes.
std::string DecodeError(std::string_view bytes, int64_t vocab = 0) {
  auto r = DecodeTokenData(bytes, vocab);
  if (r.ok()) return "";
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  return r.status().message();
}

bool Contains(const std::string& s, const std::string& part) {
  INFO(s);
  return s.find(part) != std::string::npos;
}

TEST_CASE("EncodeTokenData writes the documented bytes", "[token_data]") {
  std::vector<TokenSequence> seqs = {{{7, 0, 39}, {0, 0.5f, 2}}, {{1, 2}, {}}};
  const std::string want = Header(2) + U32(3) + I32(7) + I32(0) + I32(39) + F32(0) + F32(0.5f) +
                           F32(2) + U32(2) + I32(1) + I32(2) + F32(0) + F32(1);
  CHECK(EncodeTokenData(seqs) == want);
  CHECK(EncodeTokenData({}) == Header(0));
}

TEST_CASE("DecodeTokenData gives back what was encoded", "[token_data]") {
  std::mt19937_64 rng(3);
  std::vector<TokenSequence> seqs;
  for (int s = 0; s < 50; ++s) {
    TokenSequence t;
    const size_t n = 1 + rng() % 40;
    for (size_t i = 0; i < n; ++i) t.tokens.push_back(int32_t(rng() % 1000));
    if (s % 3 != 0)
      for (size_t i = 0; i < n; ++i) t.weights.push_back(float(rng() % 4) * 0.5f);
    seqs.push_back(t);
  }
  const std::string blob = EncodeTokenData(seqs);
  auto back = DecodeTokenData(blob, 1000);
  REQUIRE(back.ok());
  REQUIRE(back->size() == seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) {
    INFO("sequence " << s);
    CHECK((*back)[s].tokens == seqs[s].tokens);
    if (seqs[s].weights.empty()) {
      // Stored as [0, 1, 1, ...]: what empty weights mean for training.
      std::vector<float> w(seqs[s].tokens.size(), 1.0f);
      w[0] = 0;
      CHECK((*back)[s].weights == w);
    } else {
      CHECK((*back)[s].weights == seqs[s].weights);
    }
  }
  // A decoded blob encodes to the same bytes.
  CHECK(EncodeTokenData(*back) == blob);
  // No vocabulary check with 0; a smaller vocabulary than the ids fails.
  CHECK(DecodeTokenData(blob, 0).ok());
  CHECK(Contains(DecodeError(blob, 500), "outside [0, 500)"));
  auto empty = DecodeTokenData(Header(0), 5);
  REQUIRE(empty.ok());
  CHECK(empty->empty());
}

TEST_CASE("DecodeTokenData names what is wrong with a bad blob", "[token_data]") {
  const std::string one = U32(2) + I32(1) + I32(2) + F32(0) + F32(1);
  const std::string good = Header(1) + one;
  REQUIRE(DecodeError(good) == "");

  CHECK(Contains(DecodeError(""), "0 bytes, shorter than the 12-byte header"));
  CHECK(Contains(DecodeError(good.substr(0, 11)), "shorter than the 12-byte header"));
  CHECK(Contains(DecodeError("PTD2" + good.substr(4)), "bad magic"));
  CHECK(Contains(DecodeError("PTD1" + U32(2) + good.substr(8)), "version 2, expected 1"));
  CHECK(Contains(DecodeError(good, -1), "vocab_size -1 is negative"));
  // Counts and lengths the bytes cannot hold: refused before allocating.
  CHECK(Contains(DecodeError(Header(0xffffffff) + one), "count 4294967295 sequences cannot fit"));
  CHECK(Contains(DecodeError(Header(2) + one), "count 2 sequences cannot fit"));
  CHECK(Contains(DecodeError(Header(1) + U32(0xffffffff) + I32(1) + I32(2) + F32(0)),
                 "sequence 0 (byte 12) has 4294967295 tokens, but only 12 bytes are left"));
  // Truncated anywhere in a sequence.
  for (size_t cut = 1; cut < one.size(); ++cut) {
    INFO("cut " << cut);
    CHECK_FALSE(DecodeError(good.substr(0, good.size() - cut)).empty());
  }
  const std::string two = Header(2) + one + one;
  CHECK(Contains(DecodeError(two.substr(0, two.size() - 1)), "sequence 1 (byte 32)"));
  CHECK(Contains(DecodeError(Header(2) + one + U32(0) + std::string(8, '\0')),
                 "sequence 1 (byte 32) is empty"));
  CHECK(Contains(DecodeError(good + "x"), "1 bytes after the last sequence (byte 32)"));
  // Bad tokens and weights, named by sequence and position.
  auto seq = [](int32_t t1, float w1) {
    return Header(2) + U32(1) + I32(0) + F32(0) + U32(2) + I32(1) + I32(t1) + F32(0) + F32(w1);
  };
  REQUIRE(DecodeError(seq(5, 1), 6) == "");
  CHECK(Contains(DecodeError(seq(-3, 1)), "sequence 1 token 1 is -3, outside [0, 2^31)"));
  CHECK(Contains(DecodeError(seq(6, 1), 6), "sequence 1 token 1 is 6, outside [0, 6)"));
  CHECK(Contains(DecodeError(seq(5, -1)), "sequence 1 weight 1 is -1"));
  CHECK(Contains(DecodeError(seq(5, NAN)), "sequence 1 weight 1 is nan"));
  CHECK(Contains(DecodeError(seq(5, INFINITY)), "sequence 1 weight 1 is inf"));
}

TEST_CASE("DecodeTokenData survives arbitrary damage", "[token_data]") {
  // Every single-byte change and every cut of a small blob is either a blob
  // that encodes back to itself or an InvalidArgument; nothing crashes
  // (ASan builds check the bounds).
  const std::string blob = EncodeTokenData({{{3, 1, 4}, {0, 1, 5}}, {{9}, {}}, {{2, 6}, {0, 1}}});
  for (size_t i = 0; i < blob.size(); ++i) {
    for (int v : {0x00, 0x01, 0x7f, 0x80, 0xff}) {
      std::string b = blob;
      b[i] = char(v);
      auto r = DecodeTokenData(b, 0);
      if (r.ok()) {
        CHECK(EncodeTokenData(*r) == b);
      } else {
        CHECK(r.status().code() == StatusCode::kInvalidArgument);
      }
    }
    CHECK_FALSE(DecodeTokenData(blob.substr(0, i), 0).ok());
  }
}

}  // namespace
}  // namespace pcfarm
