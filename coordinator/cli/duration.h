// Parsing of human durations and sizes on command lines: "90s", "30m",
// "24h", "7d", "500ms", or a bare number of seconds; "1GiB", "512MiB",
// "64KiB", "2G", "100M", or a bare number of bytes.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

// Returns milliseconds; InvalidArgument for empty, negative, zero, unknown
// unit or overflowing input.
Result<int64_t> ParseDurationMs(std::string_view text);

// Returns bytes (0 allowed). Units: B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB,
// all powers of 1024; a fraction is allowed ("1.5GiB"). InvalidArgument for
// empty, negative, unknown unit or overflowing input.
Result<int64_t> ParseByteSize(std::string_view text);

}  // namespace pcfarm
