#include <algorithm>

#include "tasks/kinds/bench.h"
#include "tasks/kinds/infer_check.h"
#include "tasks/kinds/llm_kinds.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

namespace {

// A SAX pass that builds nothing and stops at the first container nested
// deeper than `max_depth`.
struct DepthCheck : nlohmann::json_sax<nlohmann::json> {
  explicit DepthCheck(int max_depth) : max_depth(max_depth) {}
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return Enter(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return --depth, true; }
  bool start_array(std::size_t) override { return Enter(); }
  bool end_array() override { return --depth, true; }
  bool parse_error(std::size_t pos, const std::string&,
                   const nlohmann::detail::exception&) override {
    error_at = pos;
    return false;
  }
  bool Enter() {
    if (++depth > max_depth) too_deep = true;
    return !too_deep;
  }
  int max_depth;
  int depth = 0;
  bool too_deep = false;
  size_t error_at = 0;
};

}  // namespace

Result<nlohmann::json> ParseBoundedJson(std::string_view text, int max_depth,
                                        std::string_view what) {
  DepthCheck check(max_depth);
  bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &check);
  if (check.too_deep) {
    return InvalidArgument(std::string(what) + ": JSON nested deeper than " +
                           std::to_string(max_depth) + " levels");
  }
  if (!ok) {
    return InvalidArgument(std::string(what) + ": not valid JSON (at byte " +
                           std::to_string(check.error_at) + ")");
  }
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr,
                                           /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgument(std::string(what) + ": not valid JSON");
  return j;
}

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
    kinds.push_back(MakeInferCheckKind());
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
