// Verifier: decides whether the results of one shard agree.
//
// A ResultComparator says whether two result bodies of one task kind are the
// same answer (byte equality by default; tolerant comparisons for kinds whose
// results carry floating point). Judge() groups a shard's results by that
// comparator and says whether one group reached the shard's redundancy.
//
// Thread-safety: register every comparator before the Verifier is shared;
// after that, const methods may be called from any thread (comparators must
// be thread-safe themselves).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

// True iff `a` and `b` are the same answer. Must be symmetric.
using ResultComparator =
    std::function<bool(std::string_view a, std::string_view b)>;

// The verdict of a check result (a shard of a job's check kind, e.g.
// `infer_check` for `infer` jobs, that judges another worker's result
// instead of computing it again): true iff the checked result holds.
// InvalidArgument for a body that is no verdict.
using CheckVerdict = std::function<Result<bool>(std::string_view check_output)>;

class Verifier {
 public:
  Verifier();
  // Sets the comparator for `kind`, replacing any earlier one.
  void Register(const std::string& kind, ResultComparator comparator);
  // The comparator for `kind`; byte equality when none was registered.
  const ResultComparator& For(std::string_view kind) const;

  // Jobs of `job_kind` are checked by check shards whose results `verdict`
  // reads (JobPlanner::check_kind); others by a second full run.
  void RegisterCheck(const std::string& job_kind, CheckVerdict verdict);
  // The verdict reader of `job_kind`'s checks; nullptr when it has none.
  const CheckVerdict* CheckFor(std::string_view job_kind) const;

 private:
  ResultComparator default_;
  std::map<std::string, ResultComparator, std::less<>> by_kind_;
  std::map<std::string, CheckVerdict, std::less<>> checks_;
};

struct Judgement {
  // group[i] is the group of bodies[i]; groups are numbered in order of
  // their first member. A body joins the first group whose first member
  // compares equal to it.
  std::vector<int> group;
  int best_group = -1;      // the largest group (earliest on ties); -1 if none
  int best_group_size = 0;
  bool accepted = false;    // best_group_size >= redundancy
};

// REQUIRES: redundancy >= 1.
Judgement Judge(const std::vector<std::string_view>& bodies, int redundancy,
                const ResultComparator& comparator);

// A check result's vote on one full result of the same shard.
struct CheckVote {
  size_t target = 0;  // index into the full results
  bool holds = false; // the verdict: the target's answer holds
};

struct CheckedJudgement {
  Judgement full;                 // over the full results (group, best, accepted)
  std::vector<bool> check_agreed; // [i]: vote i sided with the accepted group
};

// Judges a shard's full results together with check votes on them:
//   * a group's score is its size plus the votes that it holds; the group
//     of highest score (earliest on ties) is accepted when its score
//     reaches `redundancy`;
//   * else, when some group was refuted by a vote and exactly one group
//     was not, that one is accepted if its size plus one (the refutation:
//     its rival is wrong) reaches `redundancy`. So a refuted result and
//     one independent re-run that differs from it settle the shard, the
//     checker siding with the re-run.
// A vote agreed when it said "holds" of the accepted group or "fails" of
// another; before acceptance every vote counts as not agreed.
// REQUIRES: redundancy >= 1; every vote's target < bodies.size().
CheckedJudgement JudgeWithChecks(const std::vector<std::string_view>& bodies,
                                 const std::vector<CheckVote>& votes, int redundancy,
                                 const ResultComparator& comparator);

}  // namespace pcfarm
