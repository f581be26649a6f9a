// Hex encoding of byte strings (keys, hashes, ids in files and logs).
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

// Lowercase hex, two digits per byte.
std::string HexEncode(std::string_view bytes);
// Accepts upper or lower case. InvalidArgument on odd length or a non-hex
// digit; when `expected_bytes` is non-zero the decoded size must equal it.
Result<std::string> HexDecode(std::string_view hex, size_t expected_bytes = 0);

}  // namespace pcfarm
