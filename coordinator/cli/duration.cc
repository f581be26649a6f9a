#include "coordinator/cli/duration.h"

#include <cctype>
#include <stdexcept>
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

Result<int64_t> ParseByteSize(std::string_view text) {
  std::string t(text);
  size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || t[i] == '.')) ++i;
  if (i == 0 || i > 20) {
    return InvalidArgument("size '" + t + "' must start with a number (e.g. 512MiB, 1GiB)");
  }
  double value = 0;
  try {
    size_t used = 0;
    value = std::stod(t.substr(0, i), &used);
    if (used != i) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    return InvalidArgument("size '" + t + "' is not a number");
  }
  std::string unit = t.substr(i);
  for (auto& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  double scale;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 1024.0;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else return InvalidArgument("size '" + t + "' has unknown unit '" + t.substr(i) +
                              "' (use B, KiB, MiB, GiB or TiB)");
  double bytes = value * scale;
  if (!(bytes >= 0) || bytes > 9.0e18) return InvalidArgument("size '" + t + "' is too large");
  return static_cast<int64_t>(bytes);
}

}  // namespace pcfarm
