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

namespace pcfarm {

// True iff `a` and `b` are the same answer. Must be symmetric.
using ResultComparator =
    std::function<bool(std::string_view a, std::string_view b)>;

class Verifier {
 public:
  Verifier();
  // Sets the comparator for `kind`, replacing any earlier one.
  void Register(const std::string& kind, ResultComparator comparator);
  // The comparator for `kind`; byte equality when none was registered.
  const ResultComparator& For(std::string_view kind) const;

 private:
  ResultComparator default_;
  std::map<std::string, ResultComparator, std::less<>> by_kind_;
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

}  // namespace pcfarm
