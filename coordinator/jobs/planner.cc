#include "coordinator/jobs/planner.h"

#include <nlohmann/json.hpp>

#include "coordinator/job_summary.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {
namespace {

// `bench`: the CLI sends every shard's params (each its own seed); the
// output is the summary.
class BenchPlanner final : public JobPlanner {
 public:
  std::string_view kind() const override { return "bench"; }

  Result<JobPlan> Plan(const wire::SubmitRequest& request,
                       const BlobStore&) const override {
    const TaskKind* kind = TaskKindRegistry::Builtin().Find("bench");
    if (!kind) return Internal("this coordinator has no bench task kind");
    if (request.shard_params_size() == 0) {
      return InvalidArgument("a job needs at least one shard");
    }
    JobPlan plan;
    plan.params = request.params().empty() ? "{}" : request.params();
    for (int i = 0; i < request.shard_params_size(); ++i) {
      Status v = kind->ValidateParams(request.shard_params(i));
      if (!v.ok()) return v.WithContext("shard " + std::to_string(i));
      plan.shards.push_back(ShardSpec{request.shard_params(i), "", 0});
    }
    return plan;
  }

  std::vector<std::string> ShardBlobs(std::string_view) const override { return {}; }

  std::string Fold(std::string_view summary, int64_t index,
                   std::string_view output) const override {
    return FoldAcceptedResult("bench", summary, index, output);
  }

  std::string Output(const std::vector<FetchedShard>&) const override { return ""; }

  std::string OutputTail(const JobInfo& job) const override {
    nlohmann::json s = nlohmann::json::parse(job.summary, nullptr, false);
    if (!s.is_object()) s = nlohmann::json::object();
    return s.dump(2) + "\n";
  }
};

const std::vector<std::unique_ptr<JobPlanner>>& Planners() {
  static const auto* planners = [] {
    auto* v = new std::vector<std::unique_ptr<JobPlanner>>;
    v->push_back(std::make_unique<BenchPlanner>());
    v->push_back(MakeInferPlanner());
    return v;
  }();
  return *planners;
}

}  // namespace

std::unique_ptr<JobPlanner> MakeBenchPlanner() { return std::make_unique<BenchPlanner>(); }

const JobPlanner* FindPlanner(std::string_view kind) {
  for (const auto& p : Planners()) {
    if (p->kind() == kind) return p.get();
  }
  return nullptr;
}

std::string FoldWithPlanner(std::string_view kind, std::string_view summary,
                            int64_t index, std::string_view output) {
  if (const JobPlanner* p = FindPlanner(kind)) return p->Fold(summary, index, output);
  return FoldAcceptedResult(kind, summary, index, output);
}

}  // namespace pcfarm
