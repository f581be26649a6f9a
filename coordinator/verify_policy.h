// Verification policy (DESIGN.md §8): how many copies of a shard must agree,
// and how often a single result is checked by an independent worker.
//
// Per job (`pcfarm submit … --verify`):
//   redundant  every shard runs on --redundancy R workers and R agreeing
//              results accept it (what every job did before policies).
//   none       one result accepts a shard; nothing is checked.
//   spot       every result is checked with probability kSpotRate.
//   auto       adaptive replication (BOINC's, with our parameters): a result
//              is checked with probability CheckProbability(streak), where
//              the worker's streak is its accepted results since it was last
//              caught disagreeing. Below kStreakBeforeSpotChecks every result
//              is checked (a new identity earns trust slowly); then the rate
//              falls as kStreakBeforeSpotChecks / streak and never below
//              kMinCheckRate.
// A check is a second copy of the shard run by a worker independent of the
// first (another enrollment token and public network, scheduler.h) and
// connected (seen within the last minute: otherwise the result is accepted
// unchecked, as a farm of one owner's PCs on one token has nobody to check
// them); the
// shard is accepted only when the two agree (a disagreement brings a third
// copy, and the odd one out is caught). The die is cast when the first
// result arrives, so its worker cannot know whether it will be checked.
//
// Consequences: a worker caught disagreeing gets a strike and its streak
// starts again at 0 (every result of it is checked again). kStrikesToQuarantine
// strikes quarantine it (Store::BanWorker: no more work; its unverified
// results in running jobs are run again elsewhere); kStreakForgivesStrike
// agreeing results in a row take one strike away (a PC with a rare hardware
// fault is not quarantined for good by it).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

enum class VerifyPolicy { kAuto, kRedundant, kSpot, kNone };

// "auto" | "redundant" | "spot" | "none".
const char* VerifyPolicyName(VerifyPolicy policy);
// InvalidArgument naming the allowed values for anything else.
Result<VerifyPolicy> ParseVerifyPolicy(std::string_view name);

inline constexpr int64_t kStreakBeforeSpotChecks = 10;
inline constexpr double kMinCheckRate = 0.05;
inline constexpr double kSpotRate = 0.1;
inline constexpr int64_t kStrikesToQuarantine = 3;
inline constexpr int64_t kStreakForgivesStrike = 50;
// An untrusted worker (streak < kStreakBeforeSpotChecks) that has this many
// results waiting for their checks takes no new first copy of a shard
// (checks and deciding copies it still may) until one of them is decided
// (Store::LeaseShard). Without it, how much a cheater delivers before its
// third strike depended on how fast its checks came back: on a loaded
// machine it ran ahead of them (27 results once, the plain build's bound
// being 20). With it, a worker that lies in every result returns at most
// kMaxAwaitingCheck + kStrikesToQuarantine - 1 results before the third
// catch, plus the ones it holds leases for, however slow the checkers are.
// An honest new worker is held back only while its checks lag its work,
// which they must catch up with anyway before its shards are accepted.
inline constexpr int64_t kMaxAwaitingCheck = 4;

// The probability that a single result of a worker with `streak` accepted
// results since its last disagreement is checked, under `policy`: 1 or 0
// for redundant jobs (their copies are all run anyway: 0) and none (0).
double CheckProbability(VerifyPolicy policy, int64_t streak);

// A worker's standing after one of its results was judged.
struct WorkerStanding {
  int64_t streak = 0;   // accepted results since it was last caught
  int64_t strikes = 0;  // times caught, less the ones its streaks forgave
};
// After a result of it was accepted (`agreed`) or found disagreeing.
WorkerStanding NextStanding(WorkerStanding before, bool agreed);
// Collusion: an agreement lengthens a worker's streak only when a worker
// other than the one whose agreement lengthened it last agreed with it
// (Store: workers.streak_partner). Two identities of one person that
// check each other so never make each other trusted; an honest worker's
// checks come from many workers. The price: a worker whose checks can only
// ever come from one other worker (a farm of two owners) stays at a streak
// of 1 and is checked every time. Returns the partner that lengthens the
// streak now (the smallest of `partners` other than `last_partner`), or 0
// when none does.
int64_t StreakPartner(int64_t last_partner, const std::vector<int64_t>& partners);

// Whether a worker with this standing is quarantined.
inline bool Quarantined(const WorkerStanding& s) {
  return s.strikes >= kStrikesToQuarantine;
}

}  // namespace pcfarm
