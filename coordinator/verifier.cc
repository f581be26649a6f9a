#include "coordinator/verifier.h"

#include <algorithm>
#include <cassert>

namespace pcfarm {

Verifier::Verifier()
    : default_([](std::string_view a, std::string_view b) { return a == b; }) {}

void Verifier::Register(const std::string& kind, ResultComparator comparator) {
  assert(comparator);
  by_kind_[kind] = std::move(comparator);
}

const ResultComparator& Verifier::For(std::string_view kind) const {
  auto it = by_kind_.find(kind);
  return it == by_kind_.end() ? default_ : it->second;
}

void Verifier::RegisterCheck(const std::string& job_kind, CheckVerdict verdict) {
  assert(verdict);
  checks_[job_kind] = std::move(verdict);
}

const CheckVerdict* Verifier::CheckFor(std::string_view job_kind) const {
  auto it = checks_.find(job_kind);
  return it == checks_.end() ? nullptr : &it->second;
}

Judgement Judge(const std::vector<std::string_view>& bodies, int redundancy,
                const ResultComparator& comparator) {
  assert(redundancy >= 1);
  Judgement j;
  std::vector<size_t> first;  // index of each group's first member
  std::vector<int> size;
  for (size_t i = 0; i < bodies.size(); ++i) {
    int g = -1;
    for (size_t k = 0; k < first.size() && g < 0; ++k) {
      if (comparator(bodies[first[k]], bodies[i])) g = static_cast<int>(k);
    }
    if (g < 0) {
      g = static_cast<int>(first.size());
      first.push_back(i);
      size.push_back(0);
    }
    ++size[g];
    j.group.push_back(g);
  }
  for (size_t k = 0; k < size.size(); ++k) {
    if (size[k] > j.best_group_size) {
      j.best_group_size = size[k];
      j.best_group = static_cast<int>(k);
    }
  }
  j.accepted = j.best_group_size >= redundancy;
  return j;
}

CheckedJudgement JudgeWithChecks(const std::vector<std::string_view>& bodies,
                                 const std::vector<CheckVote>& votes, int redundancy,
                                 const ResultComparator& comparator) {
  CheckedJudgement c;
  c.full = Judge(bodies, redundancy, comparator);
  Judgement& j = c.full;
  const int groups = bodies.empty() ? 0 : *std::max_element(j.group.begin(), j.group.end()) + 1;
  std::vector<int> score(groups, 0);
  std::vector<bool> refuted(groups, false);
  for (int g : j.group) ++score[g];
  for (const CheckVote& v : votes) {
    assert(v.target < bodies.size());
    const int g = j.group[v.target];
    if (v.holds) {
      ++score[g];
    } else {
      refuted[g] = true;
    }
  }
  int best = -1;
  for (int g = 0; g < groups; ++g) {
    if (best < 0 || score[g] > score[best]) best = g;
  }
  int winner = -1;
  if (best >= 0 && score[best] >= redundancy) {
    winner = best;
  } else {
    int unrefuted = -1, count = 0;
    bool any_refuted = false;
    for (int g = 0; g < groups; ++g) {
      if (refuted[g]) {
        any_refuted = true;
      } else {
        unrefuted = g;
        ++count;
      }
    }
    if (any_refuted && count == 1) {
      int size = 0;
      for (int g : j.group) size += g == unrefuted;
      if (size + 1 >= redundancy) winner = unrefuted;
    }
  }
  if (winner >= 0) {
    j.accepted = true;
    j.best_group = winner;
    j.best_group_size = 0;
    for (int g : j.group) j.best_group_size += g == winner;
  } else {
    j.accepted = false;
  }
  for (const CheckVote& v : votes) {
    const bool on_winner = winner >= 0 && j.group[v.target] == winner;
    c.check_agreed.push_back(winner >= 0 && v.holds == on_winner);
  }
  return c;
}

}  // namespace pcfarm
