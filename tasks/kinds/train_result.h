// The `train` kind's result in binary: its figures as one line of JSON,
// then its values (a gradient sum, or a DiLoCo parameter difference) as a
// gradient message of tasks/aggregate/compress.h, so 4 bytes a value travel
// (f32) instead of ~20 characters of JSON text, and nothing is printed or
// parsed as decimal.
//
// Bytes:
//   a JSON object on one line (no '\n' inside; at most kTrainHeaderMaxBytes):
//     {"loss": mean CE (finite), "weight": Σ w (finite, >= 0),
//      "tokens": counted (integer >= 0), "count": values (integer >= 1),
//      "codec": "none" | "fp16" | "int8", "layout": "lora", "backend": NAME}
//     (other keys are allowed and kept out of the way)
//   '\n'
//   EncodeGradient(codec, values, WirePacking(codec)): "PCG1" ..., exactly
//   `count` values (fp16 and int8 packed with zstd where that is smaller)
// Nothing follows.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/aggregate/compress.h"

namespace pcfarm {

inline constexpr size_t kTrainHeaderMaxBytes = 4096;

struct TrainResult {
  double loss = 0;
  double weight = 0;
  int64_t tokens = 0;
  GradientCodec codec = GradientCodec::kNone;
  std::string layout = "lora";
  std::string backend;
  std::vector<float> values;
};

// The bytes above for `r` (r.values encoded with r.codec; with `feedback`,
// whose codec must be r.codec and size r.values.size(), through its
// residual: error feedback). InvalidArgument when loss or weight is not
// finite, weight or tokens is negative, there is no value, the feedback
// does not fit, or the codec refuses a value (not finite; fp16: too large).
Result<std::string> EncodeTrainResult(const TrainResult& r, ErrorFeedback* feedback = nullptr);

// What Agree tolerates between two honest results in `codec`: the relative
// L2 distance of their values at most `max_relative_l2`, their cosine at
// least `min_cosine`. Compressed results of two workers differ by up to
// their codecs' rounding plus their error-feedback residuals (each worker
// carries its own), so the bounds widen with the codec.
struct TrainAgreement {
  double max_relative_l2;
  double min_cosine;
};
TrainAgreement TrainAgreementFor(GradientCodec codec);

// Parses and checks the bytes above. InvalidArgument naming what is wrong:
// no header line, a header that is not such an object, a message that does
// not decode (compress.h's checks) or holds other than `count` values, or a
// codec other than the header says. `max_values` > 0 bounds `count` before
// anything is decoded.
Result<TrainResult> DecodeTrainResult(std::string_view bytes, int64_t max_values = 0);

// Reads only the header line (loss, weight, tokens, codec, layout,
// backend; `values` stays empty): what a summary needs, cheaply.
Result<TrainResult> DecodeTrainResultHeader(std::string_view bytes);

}  // namespace pcfarm
