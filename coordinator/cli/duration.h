// Parsing of human durations on command lines: "90s", "30m", "24h", "7d",
// "500ms", or a bare number of seconds.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

// Returns milliseconds; InvalidArgument for empty, negative, zero, unknown
// unit or overflowing input.
Result<int64_t> ParseDurationMs(std::string_view text);

}  // namespace pcfarm
