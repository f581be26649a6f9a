#include <algorithm>

#include "tasks/kinds/bench.h"
#include "tasks/kinds/llm_kinds.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

TaskKindRegistry::TaskKindRegistry(std::vector<std::unique_ptr<TaskKind>> kinds)
    : kinds_(std::move(kinds)) {
  for (size_t i = 0; i < kinds_.size(); ++i) {
    assert(kinds_[i] != nullptr);
    for (size_t k = 0; k < i; ++k) {
      assert(kinds_[k]->name() != kinds_[i]->name() && "duplicate task kind");
    }
  }
}

const TaskKindRegistry& TaskKindRegistry::Builtin() {
  static const TaskKindRegistry* registry = [] {
    std::vector<std::unique_ptr<TaskKind>> kinds;
    kinds.push_back(std::make_unique<BenchKind>());
    kinds.push_back(MakeInferKind());
    kinds.push_back(MakeTrainKind());
    return new TaskKindRegistry(std::move(kinds));
  }();
  return *registry;
}

const TaskKind* TaskKindRegistry::Find(std::string_view name) const {
  for (const auto& kind : kinds_) {
    if (kind->name() == name) return kind.get();
  }
  return nullptr;
}

std::vector<std::string> TaskKindRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& kind : kinds_) names.emplace_back(kind->name());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace pcfarm
