// The body shared by the four frame fuzz targets: decode arbitrary bytes;
// when they decode, the frame must re-encode and decode to the same frame.
#pragma once

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/wire.h"
#include "tests/fuzz/samples.h"

namespace pcfarm::fuzz {

template <typename Frame, typename DecodeFn>
void FuzzFrame(const uint8_t* data, size_t size, DecodeFn decode) {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is normal here
    return true;
  }();
  (void)quiet;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto decoded = decode(bytes, WireLimits{});
  if (!decoded.ok()) {
    FuzzCheck(!decoded.message().empty(), "a wire error has a message");
    FuzzCheck(!decoded.status().ok(), "a wire error is a non-OK status");
    return;
  }
  FuzzCheck(decoded->version() == kProtocolVersion, "decoded version");
  Frame copy = *decoded;
  std::string again = EncodeFrame(&copy);
  // Re-encoding is canonical and may differ in size from the input (unknown
  // fields, packed repeats); allow room so only a real bug fails here.
  WireLimits roomy;
  roomy.control_frame_bytes = roomy.hello_frame_bytes = 2 * size + 1024;
  roomy.blob_chunk_bytes = 2 * size + 1024;
  roomy.envelope_body_bytes = 2 * size + 1024;
  roomy.client_request_bytes = roomy.client_reply_bytes = 2 * size + 1024;
  auto round = decode(again, roomy);
  FuzzCheck(round.ok(), "a decoded frame re-encodes to a decodable frame");
  // A float field may hold a NaN (any bit pattern decodes): NaN equals NaN
  // here, as the bytes do.
  google::protobuf::util::DefaultFieldComparator floats;
  floats.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer differ;
  differ.set_field_comparator(&floats);
  FuzzCheck(differ.Compare(*round, *decoded),
            "re-encoded frame decodes to the same frame");
}

}  // namespace pcfarm::fuzz
