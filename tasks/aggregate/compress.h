// Gradient compression for home uplinks (DESIGN.md §9), and error feedback.
//
// Codecs and their size per value (plus one 20-byte header per message):
//   none  f32, 4 bytes: lossless.
//   fp16  IEEE binary16, 2 bytes: round to nearest even (tasks/backend/half.h);
//         relative error ≤ 2^-11 in the normal range, |x| ≤ 2^-25 becomes 0.
//   int8  blocks of kInt8BlockSize = 64 values, each with one f32 scale
//         s = max|x| / 127 over the block and values q = round(x / s) (nearest,
//         ties to even) clamped to [-127, 127]; decodes to q · s. 1 + 4/64 =
//         1.0625 bytes per value; error ≤ s/2 per value (plus f32 rounding). 64
//         keeps the scale's overhead at 6% while one large value only coarsens
//         its own 63 neighbours (with one scale per tensor, one large entry
//         would round every small entry of the tensor to zero).
//
// Byte format (all integers and floats little-endian):
//   offset size  field
//   0      4     magic "PCG1"
//   4      1     codec id: 0 none, 1 fp16, 2 int8
//   5      3     reserved, zero
//   8      8     element count n (u64)
//   16     4     block size b (u32): 64 for int8 as written (Decode accepts
//                1..65536), 0 for none and fp16
//   20     ...   payload:
//                  none  n f32 values
//                  fp16  n binary16 values
//                  int8  ceil(n / b) f32 scales, then n int8 values
//                        (two's complement); value k is in block k / b
// The payload has exactly the length these fields imply; nothing follows it.
//
// Thread-safety: the free functions are pure; an ErrorFeedback is not
// thread-safe (one per outgoing stream).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

enum class GradientCodec : uint8_t { kNone = 0, kFp16 = 1, kInt8 = 2 };

// Returns "none", "fp16" or "int8".
const char* GradientCodecName(GradientCodec codec);
// Inverse of GradientCodecName; InvalidArgument naming the accepted names.
Result<GradientCodec> ParseGradientCodec(std::string_view name);

inline constexpr uint32_t kInt8BlockSize = 64;
inline constexpr size_t kGradientHeaderBytes = 20;

// Returns the exact size in bytes of EncodeGradient(codec, `count` values).
uint64_t EncodedGradientSize(GradientCodec codec, uint64_t count);

// Encodes `values` in the format above.
// Returns InvalidArgument when a value is NaN or infinite, or (fp16) when
// its magnitude is too large for binary16 (it would round to infinity,
// above ~65504).
Result<std::string> EncodeGradient(GradientCodec codec,
                                   std::span<const float> values);

// Decodes a message written by EncodeGradient. Every value returned is
// finite. Returns Corruption, naming the field, when the bytes are shorter
// than the header, the magic or codec id is unknown, a reserved byte is not
// zero, the block size does not fit the codec, the length is not exactly
// what the header implies (truncated or trailing bytes), or a decoded value
// or int8 scale is NaN, infinite or (scale) negative, or an int8 value is
// -128 (the encoder never writes it).
Result<std::vector<float>> DecodeGradient(std::string_view bytes);

// Error feedback (e.g. Karimireddy et al. 2019, "Error Feedback Fixes
// SignSGD"): what compression loses in one message is added to the next, so
// nothing is lost for good. It holds a residual e (size values, initially
// zero); Encode(x) sends C(x + e) and keeps e ← (x + e) − decode(C(x + e)).
// After T messages, Σ decoded = Σ x − e, up to the float rounding of the
// additions x + e (at most half an ulp of |x + e| per value per step), and
// |e| ≤ the codec's per-value error bound (int8: s/2 of the last block).
class ErrorFeedback {
 public:
  ErrorFeedback(GradientCodec codec, size_t size);

  // Encodes values + residual and updates the residual.
  // Returns InvalidArgument (and leaves the residual unchanged) when
  // values.size() != size() or EncodeGradient refuses the sum.
  Result<std::string> Encode(std::span<const float> values);

  GradientCodec codec() const { return codec_; }
  size_t size() const { return residual_.size(); }
  std::span<const float> residual() const { return residual_; }

 private:
  GradientCodec codec_;
  std::vector<float> residual_;
};

}  // namespace pcfarm
