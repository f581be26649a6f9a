#include "coordinator/admin_queries.h"

#include <nlohmann/json.hpp>

#include "coordinator/job_summary.h"
#include "coordinator/jobs/planner.h"

namespace pcfarm {

wire::WorkerInfo WorkerToWire(const WorkerInfo& w, const WorkerLiveState& live) {
  wire::WorkerInfo o;
  o.set_worker_id(static_cast<uint64_t>(w.id));
  o.set_name(w.name);
  o.set_connected(live.connected);
  if (live.outdated) {
    o.set_outdated(true);
    o.set_protocol_version(live.outdated_version);
  }
  if (live.connected) {
    o.set_running(live.running);
    o.set_paused(live.paused);
    o.set_paused_reason(live.paused_reason);
  }
  o.set_banned(w.banned);
  o.set_trust(w.trust);
  o.set_agreed(static_cast<uint64_t>(w.agreed));
  o.set_disagreed(static_cast<uint64_t>(w.disagreed));
  o.set_gflops(w.speed_gflops);
  o.set_last_seen_ms(w.last_seen_ms);
  o.set_checks(static_cast<uint64_t>(w.checks));
  o.set_streak(static_cast<uint64_t>(w.streak));
  o.set_strikes(static_cast<uint32_t>(w.strikes));
  try {
    for (const auto& d : nlohmann::json::parse(w.devices_json)) {
      auto* dev = o.add_devices();
      dev->set_index(d.value("index", 0u));
      dev->set_backend(d.value("backend", ""));
      dev->set_name(d.value("name", ""));
      dev->set_memory_bytes(d.value("memory_bytes", uint64_t(0)));
      dev->set_free_bytes(d.value("free_bytes", uint64_t(0)));
      dev->set_cores(d.value("cores", 0u));
      dev->set_gflops(d.value("gflops", 0.0));
    }
  } catch (const nlohmann::json::exception&) {
  }
  return o;
}

wire::JobInfo JobToWire(const JobInfo& job, const std::string& owner) {
  wire::JobInfo out;
  out.set_job_id(static_cast<uint64_t>(job.id));
  out.set_kind(job.kind);
  out.set_state(job.state);
  out.set_priority(static_cast<uint32_t>(job.priority));
  out.set_redundancy(static_cast<uint32_t>(job.redundancy));
  out.set_shards_total(static_cast<uint32_t>(job.shards_total));
  out.set_shards_accepted(static_cast<uint32_t>(job.shards_accepted));
  out.set_reason(job.reason);
  out.set_created_ms(job.created_ms);
  out.set_updated_ms(job.updated_ms);
  out.set_owner(owner);
  out.set_verify(VerifyPolicyName(job.verify));
  // Kept up to date as shards are accepted: a query never re-reads results.
  const JobPlanner* planner = FindPlanner(job.kind);
  std::string summary = planner ? planner->Summary(job) : job.summary;
  if (summary != kEmptyJobSummary) out.set_summary(std::move(summary));
  return out;
}

Status AddJobVerification(Store& store, int64_t job_id, wire::JobInfo* out) {
  PCFARM_ASSIGN_OR_RETURN(auto v, store.GetJobVerification(job_id));
  out->set_has_verification(true);
  out->set_checked_shards(static_cast<uint64_t>(v.checked_shards));
  out->set_verification_overhead(v.useful_ms > 0 ? double(v.extra_ms) / double(v.useful_ms)
                                                 : 0.0);
  return Status::Ok();
}

}  // namespace pcfarm
