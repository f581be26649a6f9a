#include "tasks/aggregate/outer_optimizer.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace pcfarm {

// memcpy of host integers and floats is the little-endian state format.
static_assert(std::endian::native == std::endian::little);

namespace {

constexpr char kMagic[4] = {'P', 'O', 'M', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 24;

template <typename T>
void Put(std::string* out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out->append(b, sizeof(T));
}

template <typename T>
T Get(std::string_view bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

Status Bad(const std::string& what) { return InvalidArgument("outer optimizer state: " + what); }

}  // namespace

Status CheckOuterOptimizerConfig(const OuterOptimizerConfig& config) {
  if (!(config.lr > 0 && config.lr <= 10)) {
    return InvalidArgument("outer lr must be in (0, 10], not " + std::to_string(config.lr));
  }
  if (!(config.momentum >= 0 && config.momentum < 1)) {
    return InvalidArgument("outer momentum must be in [0, 1), not " +
                           std::to_string(config.momentum));
  }
  return Status::Ok();
}

Status OuterNesterovStep(std::span<float> params, std::span<const float> outer_gradient,
                         const OuterOptimizerConfig& config, OuterOptimizerState* state) {
  PCFARM_RETURN_IF_ERROR(CheckOuterOptimizerConfig(config));
  if (outer_gradient.size() != params.size()) {
    return InvalidArgument("outer gradient has " + std::to_string(outer_gradient.size()) +
                           " values, the parameters " + std::to_string(params.size()));
  }
  if (!state->momentum.empty() && state->momentum.size() != params.size()) {
    return InvalidArgument("outer momentum buffer has " + std::to_string(state->momentum.size()) +
                           " values, the parameters " + std::to_string(params.size()));
  }
  for (size_t i = 0; i < outer_gradient.size(); ++i) {
    if (!std::isfinite(outer_gradient[i])) {
      return InvalidArgument("outer gradient value " + std::to_string(i) + " is not finite");
    }
  }
  if (state->momentum.empty()) state->momentum.assign(params.size(), 0.0f);
  const float mu = config.momentum, lr = config.lr;
  for (size_t i = 0; i < params.size(); ++i) {
    const float g = outer_gradient[i];
    const float b = mu * state->momentum[i] + g;
    state->momentum[i] = b;
    const float d = g + mu * b;
    params[i] = params[i] - lr * d;
  }
  ++state->step;
  return Status::Ok();
}

std::string EncodeOuterOptimizerState(const OuterOptimizerState& state) {
  std::string out(kMagic, sizeof kMagic);
  Put<uint32_t>(&out, kVersion);
  Put<int64_t>(&out, state.step);
  Put<int64_t>(&out, int64_t(state.momentum.size()));
  const size_t at = out.size();
  out.resize(at + state.momentum.size() * sizeof(float));
  if (!state.momentum.empty()) {
    std::memcpy(out.data() + at, state.momentum.data(), state.momentum.size() * sizeof(float));
  }
  return out;
}

Result<OuterOptimizerState> DecodeOuterOptimizerState(std::string_view bytes,
                                                      int64_t expected_count) {
  if (bytes.size() < kHeaderBytes) {
    return Bad(std::to_string(bytes.size()) + " bytes, shorter than its " +
               std::to_string(kHeaderBytes) + "-byte header");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) return Bad("bad magic");
  const uint32_t version = Get<uint32_t>(bytes, 4);
  if (version != kVersion) return Bad("version " + std::to_string(version) + ", not 1");
  OuterOptimizerState s;
  s.step = Get<int64_t>(bytes, 8);
  if (s.step < 0) return Bad("step " + std::to_string(s.step) + " is negative");
  const int64_t count = Get<int64_t>(bytes, 16);
  if (count != expected_count) {
    return Bad("count " + std::to_string(count) + ", the parameters have " +
               std::to_string(expected_count));
  }
  if (count < 0 || uint64_t(count) > (bytes.size() - kHeaderBytes) / sizeof(float) ||
      bytes.size() != kHeaderBytes + size_t(count) * sizeof(float)) {
    return Bad(std::to_string(bytes.size()) + " bytes for " + std::to_string(count) +
               " values; expected " + std::to_string(kHeaderBytes) + " + 4 per value");
  }
  s.momentum.resize(size_t(count));
  if (count > 0) {
    std::memcpy(s.momentum.data(), bytes.data() + kHeaderBytes, size_t(count) * sizeof(float));
  }
  for (size_t i = 0; i < s.momentum.size(); ++i) {
    if (!std::isfinite(s.momentum[i])) {
      return Bad("momentum value " + std::to_string(i) + " is not finite");
    }
  }
  return s;
}

}  // namespace pcfarm
