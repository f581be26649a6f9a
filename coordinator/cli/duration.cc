#include "coordinator/cli/duration.h"

#include <cctype>
#include <string>

namespace pcfarm {

Result<int64_t> ParseDurationMs(std::string_view text) {
  std::string t(text);
  size_t i = 0;
  int64_t value = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) {
    if (value > (int64_t(1) << 40)) {
      return InvalidArgument("duration '" + t + "' is too long");
    }
    value = value * 10 + (t[i] - '0');
    ++i;
  }
  if (i == 0) {
    return InvalidArgument("duration '" + t +
                           "' must start with a number (e.g. 30m, 24h, 7d)");
  }
  std::string unit = t.substr(i);
  int64_t scale;
  if (unit.empty() || unit == "s") scale = 1000;
  else if (unit == "ms") scale = 1;
  else if (unit == "m") scale = 60'000;
  else if (unit == "h") scale = 3'600'000;
  else if (unit == "d") scale = 86'400'000;
  else return InvalidArgument("duration '" + t + "' has unknown unit '" + unit +
                              "' (use ms, s, m, h or d)");
  if (value == 0) return InvalidArgument("duration '" + t + "' must be positive");
  return value * scale;
}

}  // namespace pcfarm
