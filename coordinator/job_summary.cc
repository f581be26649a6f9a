#include "coordinator/job_summary.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "base/hex.h"
#include "crypto/hash.h"

namespace pcfarm {

std::string SummarizeJob(const std::string& kind,
                         const std::vector<AcceptedResult>& results) {
  nlohmann::json out = {{"shards", results.size()}};
  if (kind != "bench") return out.dump();
  double sum = 0, lo = 0, hi = 0;
  int measured = 0;
  Blake2bHasher combined;
  for (const auto& r : results) {
    try {
      auto j = nlohmann::json::parse(r.body);
      double g = j.at("gflops").get<double>();
      sum += g;
      lo = measured ? std::min(lo, g) : g;
      hi = measured ? std::max(hi, g) : g;
      ++measured;
      combined.Update(j.at("checksum").get<std::string>());
    } catch (const nlohmann::json::exception&) {
      // A malformed body cannot have been accepted by bench's Agree(); skip.
    }
  }
  if (measured > 0) {
    out["gflops_mean"] = sum / measured;
    out["gflops_min"] = lo;
    out["gflops_max"] = hi;
    out["checksum"] = HashToHex(combined.Final()).substr(0, 16);
  }
  return out.dump();
}

}  // namespace pcfarm
