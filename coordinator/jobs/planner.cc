#include "coordinator/jobs/planner.h"

#include <algorithm>
#include <cctype>
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

  // reps timed products of n x n matrices, and one untimed warm-up.
  double ShardFlops(std::string_view, std::string_view shard_params) const override {
    nlohmann::json p = nlohmann::json::parse(shard_params, nullptr, false);
    if (!p.is_object() || !p.contains("n") || !p["n"].is_number_integer()) return 0;
    const double n = p["n"].get<double>();
    const double reps = p.contains("reps") && p["reps"].is_number_integer()
                            ? p["reps"].get<double>()
                            : 3.0;
    return 2.0 * n * n * n * (reps + 1);
  }

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

}  // namespace

const std::vector<std::unique_ptr<JobPlanner>>& AllPlanners() {
  static const auto* planners = [] {
    auto* v = new std::vector<std::unique_ptr<JobPlanner>>;
    v->push_back(std::make_unique<BenchPlanner>());
    v->push_back(MakeInferPlanner());
    v->push_back(MakeFinetunePlanner());
    return v;
  }();
  return *planners;
}

std::string_view TaskKindOfJob(std::string_view job_kind) {
  const JobPlanner* p = FindPlanner(job_kind);
  return p ? p->task_kind() : job_kind;
}

bool IsBlobHashJson(const nlohmann::json& v) {
  if (!v.is_string() || v.get<std::string>().size() != 64) return false;
  for (char c : v.get<std::string>()) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

Result<std::vector<std::string>> FileHashes(const nlohmann::json& p, const char* field) {
  std::vector<std::string> out;
  auto it = p.find(field);
  if (it == p.end()) return out;
  if (!it->is_object() || it->empty()) {
    return InvalidArgument(std::string("'") + field + "' must map file names to blob hashes");
  }
  for (const auto& [name, hash] : it->items()) {
    if (!IsBlobHashJson(hash)) {
      return InvalidArgument(std::string("'") + field + "." + name + "' is not a blob hash");
    }
    out.push_back(hash.get<std::string>());
  }
  return out;
}

Result<std::string> ReadWholeBlob(const BlobStore& blobs, const std::string& hash,
                                  int64_t max_bytes, const std::string& what) {
  PCFARM_ASSIGN_OR_RETURN(int64_t size, blobs.Size(hash));
  if (size > max_bytes) {
    return InvalidArgument(what + " is over " + std::to_string(max_bytes >> 20) + " MiB");
  }
  std::string out;
  out.reserve(size_t(size));
  while (int64_t(out.size()) < size) {
    PCFARM_ASSIGN_OR_RETURN(
        std::string chunk,
        blobs.ReadChunk(hash, int64_t(out.size()),
                        std::min<int64_t>(kBlobMaxChunkBytes, size - int64_t(out.size()))));
    if (chunk.empty()) return Corruption("blob " + hash + " shrank while read");
    out += chunk;
  }
  return out;
}

std::unique_ptr<JobPlanner> MakeBenchPlanner() { return std::make_unique<BenchPlanner>(); }

const JobPlanner* FindPlanner(std::string_view kind) {
  for (const auto& p : AllPlanners()) {
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
