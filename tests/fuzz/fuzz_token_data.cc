// libFuzzer target: DecodeTokenData on arbitrary bytes. A blob that decodes
// holds only ids >= 0 and finite weights >= 0, one per token, and encodes
// back to the same bytes; one that does not is InvalidArgument.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tasks/engine/token_data.h"
#include "tests/fuzz/samples.h"

using namespace pcfarm;
using pcfarm::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto seqs = DecodeTokenData(bytes, 0);
  if (!seqs.ok()) {
    FuzzCheck(seqs.status().code() == StatusCode::kInvalidArgument,
              "bad token data is InvalidArgument");
    return 0;
  }
  for (const TokenSequence& s : *seqs) {
    FuzzCheck(!s.tokens.empty() && s.weights.size() == s.tokens.size(),
              "a sequence has tokens and one weight each");
    for (int32_t id : s.tokens) FuzzCheck(id >= 0, "ids are >= 0");
    for (float w : s.weights) FuzzCheck(std::isfinite(w) && w >= 0, "weights are finite, >= 0");
  }
  FuzzCheck(EncodeTokenData(*seqs) == bytes, "token data round trips");
  // A vocabulary of 64: accepted iff every id is below it.
  bool small = true;
  for (const TokenSequence& s : *seqs)
    for (int32_t id : s.tokens) small &= id < 64;
  FuzzCheck(DecodeTokenData(bytes, 64).ok() == small, "the vocabulary check");
  return 0;
}
