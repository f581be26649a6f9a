#include "coordinator/cli/cli_common.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "base/peer_text.h"

namespace pcfarm {

using nlohmann::json;


// Text from the coordinator may carry what a worker sent (names, errors):
// it reaches the terminal escaped (base/peer_text.h), never raw.
std::string Safe(const std::string& text) { return EscapePeerText(text, 1 << 20); }

int Fail(const std::string& what) {
  std::fprintf(stderr, "pcfarm: %s\n", Safe(what).c_str());
  return 1;
}

int Fail(const Status& s) { return Fail(s.message()); }

std::string FormatTime(int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t t = ms / 1000;
  std::tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

json JobJson(const wire::JobInfo& j) {
  json out = {{"job_id", j.job_id()},
              {"kind", j.kind()},
              {"state", j.state()},
              {"priority", j.priority()},
              {"redundancy", j.redundancy()},
              {"shards_total", j.shards_total()},
              {"shards_accepted", j.shards_accepted()},
              {"reason", j.reason()},
              {"created_ms", j.created_ms()},
              {"updated_ms", j.updated_ms()},
              {"owner", j.owner()}};
  if (!j.summary().empty()) {
    try {
      out["summary"] = json::parse(j.summary());
    } catch (const json::exception&) {
      out["summary"] = j.summary();
    }
  }
  return out;
}

Result<std::unique_ptr<CoordinatorClient>> OpenClient(const Globals& g) {
  std::string path = g.profile_path;
  if (path.empty()) {
    const char* env = std::getenv("PCFARM_PROFILE");
    if (env) path = env;
  }
  if (path.empty()) {
    return InvalidArgument(
        "no profile: pass --profile FILE or set PCFARM_PROFILE (the admin's "
        "is DATA/admin.profile, written by pcfarm-coordinator init)");
  }
  PCFARM_ASSIGN_OR_RETURN(ClientProfile profile, LoadClientProfile(path));
  if (g.timeout_s <= 0) return InvalidArgument("--timeout must be positive");
  return std::make_unique<CoordinatorClient>(
      profile, static_cast<int>(g.timeout_s * 1000));
}

Result<wire::JobInfo> FetchJob(CoordinatorClient* client, uint64_t job) {
  wire::ClientRequest req;
  req.mutable_job_status()->set_job_id(job);
  PCFARM_ASSIGN_OR_RETURN(auto reply, client->Call(req));
  return reply.job_status().job();
}

void PrintJobDetails(const wire::JobInfo& j) {
  std::printf("job %llu (%s)\n", (unsigned long long)j.job_id(),
              j.kind().c_str());
  std::printf("  state:      %s\n", j.state().c_str());
  std::printf("  shards:     %u of %u accepted\n", j.shards_accepted(),
              j.shards_total());
  std::printf("  redundancy: %u   priority: %u\n", j.redundancy(), j.priority());
  std::printf("  created:    %s   updated: %s\n",
              FormatTime(j.created_ms()).c_str(),
              FormatTime(j.updated_ms()).c_str());
  if (!j.owner().empty()) std::printf("  owner:      %s\n", Safe(j.owner()).c_str());
  if (!j.reason().empty()) std::printf("  reason:     %s\n", Safe(j.reason()).c_str());
  if (j.kind() == "infer") {
    InferProgress p = InferProgressOf(j);
    std::printf("  prompts:    %lld of %lld done, %lld tokens generated, %.1f tokens/s\n",
                (long long)p.prompts_done, (long long)p.prompts_total, (long long)p.tokens,
                p.tokens_per_s);
  }
  if (!j.summary().empty()) {
    try {
      std::printf("  result:     %s\n",
                  Safe(json::parse(j.summary()).dump()).c_str());
    } catch (const json::exception&) {
      std::printf("  result:     %s\n", Safe(j.summary()).c_str());
    }
  }
}

bool Terminal(const wire::JobInfo& j) {
  return j.state() == "succeeded" || j.state() == "failed" ||
         j.state() == "cancelled";
}


InferProgress InferProgressOf(const wire::JobInfo& j) {
  InferProgress p;
  json s = json::parse(j.summary().empty() ? "{}" : j.summary(), nullptr, false);
  if (s.is_object()) {
    p.prompts_done = s.value("prompts", int64_t(0));
    p.tokens = s.value("tokens", int64_t(0));
    p.prompts_total = s.value("prompts_total", int64_t(0));
  }
  int64_t end_ms = Terminal(j) ? j.updated_ms()
                               : std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count();
  double secs = double(end_ms - j.created_ms()) / 1000.0;
  if (secs > 0) p.tokens_per_s = double(p.tokens) / secs;
  return p;
}

}  // namespace pcfarm
