// Text encodings for binary keys, secrets and tokens.
//
// Z85 is ZeroMQ's encoding (RFC 32/Z85): CurveZMQ sockets accept a key as 32
// raw bytes or as its 40-character Z85 text. Base64url (RFC 4648 §5, no
// padding) is used where a person copies a value (enrollment tokens). Hex
// lives in base/hex.h (included here for the callers that used it from here).
//
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "base/hex.h"  // HexEncode / HexDecode live in base/
#include "base/status.h"

namespace pcfarm {

// REQUIRES: bytes.size() % 4 == 0 (a bug otherwise: callers encode keys).
std::string Z85Encode(std::string_view bytes);
// InvalidArgument unless `text` is a multiple of 5 characters, all from the
// Z85 alphabet, and every 5-character group fits in 32 bits.
Result<std::string> Z85Decode(std::string_view text);

std::string Base64UrlEncode(std::string_view bytes);
// InvalidArgument unless `text` is unpadded base64url.
Result<std::string> Base64UrlDecode(std::string_view text);

}  // namespace pcfarm
