// libFuzzer target: DecodeTrainResult on arbitrary bytes, as the
// coordinator decodes what an untrusted worker uploads (a JSON header line,
// then a gradient message, plain or zstd-packed). A result that decodes has
// exactly its header's count of finite values; one that does not is
// InvalidArgument. A packed message never allocates past the bound it is
// given, so a small input cannot claim gigabytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tasks/aggregate/compress.h"
#include "tasks/kinds/train_result.h"
#include "tests/fuzz/samples.h"

using namespace pcfarm;
using pcfarm::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  constexpr int64_t kMax = 1 << 16;
  auto r = DecodeTrainResult(bytes, kMax);
  if (!r.ok()) {
    FuzzCheck(r.status().code() == StatusCode::kInvalidArgument,
              "a bad train result is InvalidArgument");
  } else {
    FuzzCheck(!r->values.empty() && int64_t(r->values.size()) <= kMax,
              "a train result holds 1..max values");
    for (float v : r->values) FuzzCheck(std::isfinite(v), "values are finite");
    FuzzCheck(std::isfinite(r->loss) && std::isfinite(r->weight) && r->weight >= 0,
              "figures are finite");
  }
  // The message alone, as a worker decodes a version it downloaded.
  const size_t nl = bytes.find('\n');
  const std::string_view message = nl == std::string_view::npos ? bytes : bytes.substr(nl + 1);
  auto values = DecodeGradient(message, kMax);
  if (!values.ok()) {
    FuzzCheck(values.status().code() == StatusCode::kCorruption,
              "a bad gradient message is Corruption");
    return 0;
  }
  FuzzCheck(values->size() <= size_t(kMax) || !IsPackedGradient(message),
            "a packed message stays within its bound");
  for (float v : *values) FuzzCheck(std::isfinite(v), "decoded values are finite");
  // Decoded values encode again, plain and packed, to the same values.
  const auto codec = static_cast<GradientCodec>(static_cast<uint8_t>(message[4]));
  if (codec == GradientCodec::kNone) {
    auto again = EncodeGradient(codec, *values, GradientPacking::kZstd);
    FuzzCheck(again.ok(), "finite f32 values encode");
    auto back = DecodeGradient(*again);
    FuzzCheck(back.ok() && *back == *values, "f32 values round trip packed");
  }
  return 0;
}
