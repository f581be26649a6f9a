#include "tasks/aggregate/compress.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <zstd.h>

#include "tasks/backend/half.h"

namespace pcfarm {

// memcpy of host integers and floats is the little-endian wire format.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr char kMagic[4] = {'P', 'C', 'G', '1'};
constexpr uint32_t kMaxBlockSize = 65536;

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t NumBlocks(uint64_t count, uint32_t block) {
  return count / block + (count % block != 0);
}

std::string Num(float v) {
  if (std::isnan(v)) return "nan";  // printf may say "-nan"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", double(v));
  return buf;
}

Status Bad(const std::string& what) {
  return Corruption("gradient message: " + what);
}

// zstd's default level: about 3% from the best level's size on int8
// messages, at hundreds of MB/s.
constexpr int kZstdLevel = 3;

// `plain` (a whole plain message) with its payload as one zstd frame, or
// `plain` itself when that is not smaller.
std::string Pack(std::string plain) {
  const std::string_view payload =
      std::string_view(plain).substr(kGradientHeaderBytes);
  std::string out(kGradientHeaderBytes + ZSTD_compressBound(payload.size()),
                  '\0');
  const size_t n = ZSTD_compress(out.data() + kGradientHeaderBytes,
                                 out.size() - kGradientHeaderBytes,
                                 payload.data(), payload.size(), kZstdLevel);
  if (ZSTD_isError(n) || n >= payload.size()) return plain;
  std::memcpy(out.data(), plain.data(), kGradientHeaderBytes);
  out[5] = static_cast<char>(GradientPacking::kZstd);
  out.resize(kGradientHeaderBytes + n);
  return out;
}

}  // namespace

const char* GradientCodecName(GradientCodec codec) {
  switch (codec) {
    case GradientCodec::kNone:
      return "none";
    case GradientCodec::kFp16:
      return "fp16";
    case GradientCodec::kInt8:
      return "int8";
  }
  return "?";
}

Result<GradientCodec> ParseGradientCodec(std::string_view name) {
  for (GradientCodec c :
       {GradientCodec::kNone, GradientCodec::kFp16, GradientCodec::kInt8})
    if (name == GradientCodecName(c)) return c;
  return InvalidArgument("unknown gradient codec '" + std::string(name) +
                         "' (expected none, fp16 or int8)");
}

GradientPacking WirePacking(GradientCodec codec) {
  return codec == GradientCodec::kNone ? GradientPacking::kPlain
                                       : GradientPacking::kZstd;
}

bool IsPackedGradient(std::string_view bytes) {
  return bytes.size() >= kGradientHeaderBytes &&
         static_cast<uint8_t>(bytes[5]) ==
             static_cast<uint8_t>(GradientPacking::kZstd);
}

uint64_t EncodedGradientSize(GradientCodec codec, uint64_t count) {
  switch (codec) {
    case GradientCodec::kNone:
      return kGradientHeaderBytes + 4 * count;
    case GradientCodec::kFp16:
      return kGradientHeaderBytes + 2 * count;
    case GradientCodec::kInt8:
      return kGradientHeaderBytes + 4 * NumBlocks(count, kInt8BlockSize) +
             count;
  }
  return 0;
}

Result<std::string> EncodeGradient(GradientCodec codec,
                                   std::span<const float> values,
                                   GradientPacking packing) {
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      return InvalidArgument("encode gradient: value " + std::to_string(i) +
                             " is " + Num(values[i]));
  std::string out;
  out.reserve(EncodedGradientSize(codec, values.size()));
  out.append(kMagic, 4);
  out.push_back(static_cast<char>(codec));
  out.append(3, '\0');
  Put<uint64_t>(&out, values.size());
  Put<uint32_t>(&out, codec == GradientCodec::kInt8 ? kInt8BlockSize : 0);
  switch (codec) {
    case GradientCodec::kNone:
      for (float v : values) Put<float>(&out, v);
      break;
    case GradientCodec::kFp16:
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t h = F32ToF16(values[i]);
        if ((h & 0x7fffu) == 0x7c00u)
          return InvalidArgument("encode gradient: value " + std::to_string(i) +
                                 " (" + Num(values[i]) +
                                 ") is outside the fp16 range");
        Put<uint16_t>(&out, h);
      }
      break;
    case GradientCodec::kInt8: {
      const size_t n = values.size();
      std::vector<float> scales;
      for (size_t b = 0; b < n; b += kInt8BlockSize) {
        float amax = 0;
        for (size_t i = b; i < std::min(n, b + kInt8BlockSize); ++i)
          amax = std::max(amax, std::fabs(values[i]));
        scales.push_back(amax / 127.0f);
        // The decoder multiplies back by up to 127: near FLT_MAX the
        // rounded scale times 127 overflows, which no decoder accepts.
        if (!std::isfinite(127.0f * scales.back()))
          return InvalidArgument("encode gradient: block " +
                                 std::to_string(b / kInt8BlockSize) +
                                 " (max |value| " + Num(amax) +
                                 ") is outside the int8 codec's range");
        Put<float>(&out, scales.back());
      }
      for (size_t i = 0; i < n; ++i) {
        const float s = scales[i / kInt8BlockSize];
        // A scale that underflowed to 0 (max|x| below ~1.2e-43) sends zeros.
        const float q =
            s > 0 ? std::clamp(std::nearbyint(values[i] / s), -127.0f, 127.0f)
                  : 0.0f;
        out.push_back(static_cast<char>(static_cast<int8_t>(q)));
      }
      break;
    }
    default:
      return InvalidArgument("encode gradient: unknown codec " +
                             std::to_string(static_cast<int>(codec)));
  }
  assert(out.size() == EncodedGradientSize(codec, values.size()));
  if (packing == GradientPacking::kZstd) return Pack(std::move(out));
  return out;
}

Result<std::vector<float>> DecodeGradient(std::string_view bytes,
                                          uint64_t max_packed_count) {
  if (bytes.size() < kGradientHeaderBytes)
    return Bad(std::to_string(bytes.size()) + " bytes, shorter than the " +
               std::to_string(kGradientHeaderBytes) + "-byte header");
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, 4) != 0) return Bad("magic is not PCG1");
  const uint8_t id = static_cast<uint8_t>(p[4]);
  if (id > static_cast<uint8_t>(GradientCodec::kInt8))
    return Bad("unknown codec id " + std::to_string(id));
  const auto codec = static_cast<GradientCodec>(id);
  const uint8_t packing = static_cast<uint8_t>(p[5]);
  if (packing > static_cast<uint8_t>(GradientPacking::kZstd))
    return Bad("unknown packing id " + std::to_string(packing));
  if (p[6] != 0 || p[7] != 0) return Bad("reserved header bytes are not zero");
  const uint64_t count = Get<uint64_t>(p + 8);
  const uint32_t block = Get<uint32_t>(p + 16);
  if (codec == GradientCodec::kInt8 ? (block == 0 || block > kMaxBlockSize)
                                    : block != 0)
    return Bad("block size " + std::to_string(block) + " does not fit codec " +
               GradientCodecName(codec));

  const uint64_t min_per_value = codec == GradientCodec::kNone   ? 4
                                 : codec == GradientCodec::kFp16 ? 2
                                                                 : 1;
  // The plain payload's length, or 0 (and *fits false) when it would not
  // fit in `limit` bytes; checked before anything is multiplied, so a huge
  // count cannot overflow.
  auto plain_length = [&](uint64_t limit, bool* fits) -> uint64_t {
    *fits = count <= limit / min_per_value;
    if (!*fits) return 0;
    return codec == GradientCodec::kInt8 ? 4 * NumBlocks(count, block) + count
                                         : min_per_value * count;
  };
  const std::string_view stored = bytes.substr(kGradientHeaderBytes);
  std::string unpacked;
  std::string_view payload = stored;
  bool fits = false;
  if (packing == static_cast<uint8_t>(GradientPacking::kZstd)) {
    if (count > max_packed_count)
      return Bad("element count " + std::to_string(count) +
                 " is over the limit of " + std::to_string(max_packed_count));
    const uint64_t want = plain_length(~uint64_t(0) / 2, &fits);
    if (!fits) return Bad("element count " + std::to_string(count) + " is too large");
    const size_t frame = ZSTD_findFrameCompressedSize(stored.data(), stored.size());
    if (ZSTD_isError(frame) || frame != stored.size())
      return Bad("the packed payload is not one zstd frame");
    const unsigned long long content =
        ZSTD_getFrameContentSize(stored.data(), stored.size());
    if (content != want)
      return Bad("the zstd frame holds " +
                 (content == ZSTD_CONTENTSIZE_UNKNOWN ||
                          content == ZSTD_CONTENTSIZE_ERROR
                      ? std::string("an unstated size")
                      : std::to_string(content) + " bytes") +
                 "; element count " + std::to_string(count) + " takes " +
                 std::to_string(want));
    unpacked.resize(want);
    const size_t got =
        ZSTD_decompress(unpacked.data(), unpacked.size(), stored.data(), stored.size());
    if (ZSTD_isError(got) || got != want)
      return Bad(std::string("the zstd frame does not decompress: ") +
                 (ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short"));
    payload = unpacked;
  } else {
    const uint64_t want = plain_length(payload.size(), &fits);
    if (!fits || want != payload.size())
      return Bad("element count " + std::to_string(count) + " does not match " +
                 std::to_string(payload.size()) + " payload bytes");
  }

  const char* data = payload.data();
  std::vector<float> out(count);
  switch (codec) {
    case GradientCodec::kNone:
      for (uint64_t i = 0; i < count; ++i) {
        out[i] = Get<float>(data + 4 * i);
        if (!std::isfinite(out[i]))
          return Bad("value " + std::to_string(i) + " is " + Num(out[i]));
      }
      break;
    case GradientCodec::kFp16:
      for (uint64_t i = 0; i < count; ++i) {
        out[i] = F16ToF32(Get<uint16_t>(data + 2 * i));
        if (!std::isfinite(out[i]))
          return Bad("value " + std::to_string(i) + " is " + Num(out[i]));
      }
      break;
    case GradientCodec::kInt8: {
      const uint64_t blocks = NumBlocks(count, block);
      const char* qs = data + 4 * blocks;
      for (uint64_t b = 0; b < blocks; ++b) {
        const float s = Get<float>(data + 4 * b);
        if (!(std::isfinite(s) && s >= 0))
          return Bad("int8 scale " + std::to_string(b) + " is " + Num(s));
        for (uint64_t i = b * block; i < std::min(count, (b + 1) * block);
             ++i) {
          const int8_t q = static_cast<int8_t>(qs[i]);
          if (q == -128)
            return Bad("int8 value " + std::to_string(i) + " is -128");
          out[i] = float(q) * s;
          if (!std::isfinite(out[i]))
            return Bad("int8 value " + std::to_string(i) + " is " + Num(out[i]));
        }
      }
      break;
    }
  }
  return out;
}

ErrorFeedback::ErrorFeedback(GradientCodec codec, size_t size)
    : codec_(codec), residual_(size, 0.0f) {}

Result<std::string> ErrorFeedback::Encode(std::span<const float> values) {
  if (values.size() != residual_.size())
    return InvalidArgument("error feedback: " + std::to_string(values.size()) +
                           " values, expected " +
                           std::to_string(residual_.size()));
  std::vector<float> sum(values.size());
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = values[i] + residual_[i];
  PCFARM_ASSIGN_OR_RETURN(std::string bytes,
                          EncodeGradient(codec_, sum, WirePacking(codec_)));
  Result<std::vector<float>> sent = DecodeGradient(bytes);
  assert(sent.ok() && "DecodeGradient refused EncodeGradient's output");
  for (size_t i = 0; i < sum.size(); ++i) residual_[i] = sum[i] - (*sent)[i];
  return bytes;
}

}  // namespace pcfarm
