// Gradient compression for home uplinks (DESIGN.md §9), and error feedback.
//
// Codecs and their size per value (plus one 20-byte header per message):
//   none  f32, 4 bytes: lossless.
//   fp16  IEEE binary16, 2 bytes: round to nearest even (tasks/backend/half.h);
//         relative error ≤ 2^-11 in the normal range, |x| ≤ 2^-25 becomes 0.
//   int8  blocks of kInt8BlockSize = 256 values, each with one f32 scale
//         s = max|x| / 127 over the block and values q = round(x / s) (nearest,
//         ties to even) clamped to [-127, 127]; decodes to q · s. 1 + 4/256 =
//         1.016 bytes per value before packing; error ≤ s/2 per value (plus
//         f32 rounding). A block keeps one large value from coarsening more
//         than its own 255 neighbours (with one scale per tensor, one large
//         entry would round every small entry of the tensor to zero); 256
//         rather than 64 because the scales then cost 1.6%, not 6%, and the
//         q of a wider block use fewer of the 255 levels, which packing
//         turns into bytes saved (bench/README.md, "Home links").
//
// Packing (GradientPacking): the payload may travel as one zstd frame.
// Gradients, pseudo-gradients and adapters in int8 are far from uniform
// over the levels (about 7.6 bits of entropy a value at 256 a block, measured on
// DiLoCo rounds), and
// zstd's Huffman stage brings the message close to that; fp16 gains on its
// exponent bits. `none` stays plain: it is the uncompressed, exact codec.
// A packed message is written only when it is smaller than the plain one.
//
// Byte format (all integers and floats little-endian):
//   offset size  field
//   0      4     magic "PCG1"
//   4      1     codec id: 0 none, 1 fp16, 2 int8
//   5      1     packing: 0 plain, 1 zstd (the payload below is one zstd
//                frame that states its content size, and that size is the
//                plain payload's length exactly)
//   6      2     reserved, zero
//   8      8     element count n (u64)
//   16     4     block size b (u32): 256 for int8 as written (Decode accepts
//                1..65536), 0 for none and fp16
//   20     ...   payload (plain, or what the zstd frame holds):
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

inline constexpr uint32_t kInt8BlockSize = 256;
inline constexpr size_t kGradientHeaderBytes = 20;
// DecodeGradient's default bound on a packed message's element count (a
// plain message is bounded by its own length): 2^32 values, 16 GiB as f32.
inline constexpr uint64_t kMaxPackedGradientCount = uint64_t(1) << 32;

enum class GradientPacking : uint8_t { kPlain = 0, kZstd = 1 };

// What a message of `codec` travels as: kZstd for fp16 and int8, kPlain
// for none.
GradientPacking WirePacking(GradientCodec codec);

// Returns the exact size in bytes of a plain EncodeGradient(codec, `count`
// values); a packed one is at most this.
uint64_t EncodedGradientSize(GradientCodec codec, uint64_t count);

// Encodes `values` in the format above: plain, or with kZstd packed when
// that is smaller (else plain).
// Returns InvalidArgument when a value is NaN or infinite, or (fp16) when
// its magnitude is too large for binary16 (it would round to infinity,
// above ~65504), or (int8) when a block's scale times 127 overflows (a
// value within a rounding of FLT_MAX).
Result<std::string> EncodeGradient(
    GradientCodec codec, std::span<const float> values,
    GradientPacking packing = GradientPacking::kPlain);

// True when `bytes` is at least a header whose packing byte says zstd.
bool IsPackedGradient(std::string_view bytes);

// Decodes a message written by EncodeGradient. Every value returned is
// finite. Returns Corruption, naming the field, when the bytes are shorter
// than the header, the magic or codec id is unknown, a reserved byte is not
// zero, the block size does not fit the codec, the length is not exactly
// what the header implies (truncated or trailing bytes), or a decoded value
// or int8 scale is NaN, infinite or (scale) negative, an int8 value is
// -128 (the encoder never writes it), or an int8 value times its finite
// scale overflows; for a packed message also when the
// packing id is unknown, the count exceeds `max_packed_count` (checked
// before anything is allocated), or the payload is not exactly one zstd
// frame whose content is the plain payload's length.
Result<std::vector<float>> DecodeGradient(
    std::string_view bytes, uint64_t max_packed_count = kMaxPackedGradientCount);

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

  // Encodes values + residual (packed as WirePacking(codec)) and updates
  // the residual.
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
