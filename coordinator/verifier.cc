#include "coordinator/verifier.h"

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

}  // namespace pcfarm
