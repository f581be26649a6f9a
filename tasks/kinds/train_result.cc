#include "tasks/kinds/train_result.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace pcfarm {
namespace {

using nlohmann::json;

bool Finite(const json& v) { return v.is_number() && std::isfinite(v.get<double>()); }

// The header line and where the message starts, or InvalidArgument.
Result<std::pair<TrainResult, int64_t>> ParseHeader(std::string_view bytes, size_t* body_at) {
  const size_t nl = bytes.find('\n');
  if (nl == std::string_view::npos || nl > kTrainHeaderMaxBytes) {
    return InvalidArgument("train result: no header line of at most " +
                           std::to_string(kTrainHeaderMaxBytes) + " bytes");
  }
  json h = json::parse(bytes.substr(0, nl), nullptr, /*allow_exceptions=*/false);
  if (!h.is_object()) return InvalidArgument("train result: the header is not a JSON object");
  TrainResult r;
  auto loss = h.find("loss"), weight = h.find("weight"), tokens = h.find("tokens"),
       count = h.find("count"), codec = h.find("codec");
  if (loss == h.end() || !Finite(*loss)) {
    return InvalidArgument("train result: 'loss' must be a finite number");
  }
  if (weight == h.end() || !Finite(*weight) || weight->get<double>() < 0) {
    return InvalidArgument("train result: 'weight' must be a finite number >= 0");
  }
  if (tokens == h.end() || !tokens->is_number_integer() || tokens->get<int64_t>() < 0) {
    return InvalidArgument("train result: 'tokens' must be an integer >= 0");
  }
  if (count == h.end() || !count->is_number_integer() || count->get<int64_t>() < 1) {
    return InvalidArgument("train result: 'count' must be an integer >= 1");
  }
  if (codec == h.end() || !codec->is_string()) {
    return InvalidArgument("train result: 'codec' must be none, fp16 or int8");
  }
  auto parsed = ParseGradientCodec(codec->get<std::string>());
  if (!parsed.ok()) return parsed.status().WithContext("train result: 'codec'");
  r.loss = loss->get<double>();
  r.weight = weight->get<double>();
  r.tokens = tokens->get<int64_t>();
  r.codec = *parsed;
  if (auto l = h.find("layout"); l != h.end() && l->is_string()) r.layout = l->get<std::string>();
  if (auto b = h.find("backend"); b != h.end() && b->is_string()) r.backend = b->get<std::string>();
  *body_at = nl + 1;
  return std::make_pair(std::move(r), count->get<int64_t>());
}

}  // namespace

TrainAgreement TrainAgreementFor(GradientCodec codec) {
  switch (codec) {
    case GradientCodec::kNone:
      return {1e-3, 0.999};
    case GradientCodec::kFp16:
      return {3e-3, 0.999};
    case GradientCodec::kInt8:
      // A block's rounding is up to s/2 a value (s = max|x|/127), and each
      // side's residual adds as much again: a few percent of the norm at
      // worst on a gradient with heavy blocks.
      return {0.05, 0.995};
  }
  return {1e-3, 0.999};
}

Result<std::string> EncodeTrainResult(const TrainResult& r, ErrorFeedback* feedback) {
  if (feedback && (feedback->codec() != r.codec || feedback->size() != r.values.size())) {
    return InvalidArgument("train result: the error feedback is for another stream");
  }
  if (!std::isfinite(r.loss)) return InvalidArgument("train result: the loss is not finite");
  if (!std::isfinite(r.weight) || r.weight < 0) {
    return InvalidArgument("train result: the weight must be finite and >= 0");
  }
  if (r.tokens < 0) return InvalidArgument("train result: negative token count");
  if (r.values.empty()) return InvalidArgument("train result: no values");
  json h = {{"loss", r.loss},
            {"weight", r.weight},
            {"tokens", r.tokens},
            {"count", r.values.size()},
            {"codec", GradientCodecName(r.codec)},
            {"layout", r.layout},
            {"backend", r.backend}};
  std::string out = h.dump(-1, ' ', false, json::error_handler_t::replace);
  if (out.size() > kTrainHeaderMaxBytes) return InvalidArgument("train result: header too long");
  out += '\n';
  PCFARM_ASSIGN_OR_RETURN(std::string message, feedback ? feedback->Encode(r.values)
                                                         : EncodeGradient(r.codec, r.values,
                                                                         WirePacking(r.codec)));
  out += message;
  return out;
}

Result<TrainResult> DecodeTrainResult(std::string_view bytes, int64_t max_values) {
  size_t at = 0;
  PCFARM_ASSIGN_OR_RETURN(auto header, ParseHeader(bytes, &at));
  auto& [r, count] = header;
  if (max_values > 0 && count > max_values) {
    return InvalidArgument("train result: " + std::to_string(count) + " values, more than " +
                           std::to_string(max_values));
  }
  const std::string_view message = bytes.substr(at);
  if (message.size() < kGradientHeaderBytes || uint8_t(message[4]) != uint8_t(r.codec)) {
    return InvalidArgument("train result: the values are not a " +
                           std::string(GradientCodecName(r.codec)) + " gradient message");
  }
  // A packed message's length says nothing; DecodeGradient checks its frame.
  if (!IsPackedGradient(message) &&
      message.size() != EncodedGradientSize(r.codec, uint64_t(count))) {
    return InvalidArgument("train result: the values take " + std::to_string(message.size()) +
                           " bytes; " + std::to_string(count) + " " +
                           GradientCodecName(r.codec) + " values take " +
                           std::to_string(EncodedGradientSize(r.codec, uint64_t(count))));
  }
  auto values = DecodeGradient(message, uint64_t(count));
  if (!values.ok()) {
    return InvalidArgument("train result: " + values.status().message());
  }
  if (int64_t(values->size()) != count) {
    return InvalidArgument("train result: the message holds " + std::to_string(values->size()) +
                           " values, the header says " + std::to_string(count));
  }
  r.values = std::move(*values);
  return std::move(r);
}

Result<TrainResult> DecodeTrainResultHeader(std::string_view bytes) {
  size_t at = 0;
  PCFARM_ASSIGN_OR_RETURN(auto header, ParseHeader(bytes, &at));
  return std::move(header.first);
}

}  // namespace pcfarm
