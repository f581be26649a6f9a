#include "coordinator/verify_policy.h"

#include <algorithm>

namespace pcfarm {

const char* VerifyPolicyName(VerifyPolicy policy) {
  switch (policy) {
    case VerifyPolicy::kAuto: return "auto";
    case VerifyPolicy::kRedundant: return "redundant";
    case VerifyPolicy::kSpot: return "spot";
    case VerifyPolicy::kNone: return "none";
  }
  return "auto";
}

Result<VerifyPolicy> ParseVerifyPolicy(std::string_view name) {
  for (VerifyPolicy p : {VerifyPolicy::kAuto, VerifyPolicy::kRedundant,
                         VerifyPolicy::kSpot, VerifyPolicy::kNone}) {
    if (name == VerifyPolicyName(p)) return p;
  }
  return InvalidArgument("unknown verification policy \"" + std::string(name) +
                         "\" (allowed: auto, redundant, spot, none)");
}

double CheckProbability(VerifyPolicy policy, int64_t streak) {
  switch (policy) {
    case VerifyPolicy::kRedundant:
    case VerifyPolicy::kNone:
      return 0;
    case VerifyPolicy::kSpot:
      return kSpotRate;
    case VerifyPolicy::kAuto:
      break;
  }
  if (streak < kStreakBeforeSpotChecks) return 1;
  return std::max(kMinCheckRate, double(kStreakBeforeSpotChecks) / double(streak));
}

WorkerStanding NextStanding(WorkerStanding before, bool agreed) {
  WorkerStanding s = before;
  if (!agreed) {
    s.streak = 0;
    ++s.strikes;
    return s;
  }
  ++s.streak;
  if (s.strikes > 0 && s.streak % kStreakForgivesStrike == 0) --s.strikes;
  return s;
}

int64_t StreakPartner(int64_t last_partner, const std::vector<int64_t>& partners) {
  int64_t best = 0;
  for (int64_t p : partners) {
    if (p != 0 && p != last_partner && (best == 0 || p < best)) best = p;
  }
  return best;
}

}  // namespace pcfarm
