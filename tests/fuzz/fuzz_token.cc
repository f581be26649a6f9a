// libFuzzer target: DecodeEnrollmentToken on arbitrary text. A token that
// decodes must be valid, and encode back to a token that decodes the same.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "crypto/token.h"
#include "tests/fuzz/samples.h"

using namespace pcfarm;
using pcfarm::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto token = DecodeEnrollmentToken(text);
  if (!token.ok()) {
    FuzzCheck(token.status().code() == StatusCode::kInvalidArgument,
              "a bad token is InvalidArgument");
    return 0;
  }
  FuzzCheck(CheckEnrollmentToken(*token).ok(), "a decoded token is valid");
  auto again = DecodeEnrollmentToken(EncodeEnrollmentToken(*token));
  FuzzCheck(again.ok() && *again == *token, "a token round trips");
  return 0;
}
