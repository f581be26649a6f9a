#include "coordinator/cli/cli_common.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <thread>

#include "base/hex.h"
#include "base/peer_text.h"
#include "coordinator/verify_policy.h"
#include "crypto/keys.h"

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

json WorkerJson(const wire::WorkerInfo& w) {
  json devices = json::array();
  for (const auto& d : w.devices()) {
    devices.push_back({{"index", d.index()},
                       {"backend", d.backend()},
                       {"name", d.name()},
                       {"memory_bytes", d.memory_bytes()},
                       {"free_bytes", d.free_bytes()},
                       {"cores", d.cores()},
                       {"gflops", d.gflops()}});
  }
  return {{"worker_id", w.worker_id()}, {"name", w.name()},
          {"connected", w.connected()}, {"banned", w.banned()},
          {"trust", w.trust()},         {"agreed", w.agreed()},
          {"disagreed", w.disagreed()}, {"gflops", w.gflops()},
          {"running", w.running()},     {"last_seen_ms", w.last_seen_ms()},
          {"outdated", w.outdated()},   {"protocol_version", w.protocol_version()},
          {"paused", w.paused()},       {"paused_reason", w.paused_reason()},
          {"checks", w.checks()},       {"streak", w.streak()},
          {"strikes", w.strikes()},     {"devices", devices}};
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
              {"owner", j.owner()},
              {"verify", j.verify()}};
  if (j.has_verification()) {
    out["verification"] = {{"checked_shards", j.checked_shards()},
                           {"overhead", j.verification_overhead()}};
  }
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

// ---- a coordinator that does not answer for a while ----

namespace {

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void SleepS(double s) {
  std::this_thread::sleep_for(std::chrono::duration<double>(std::max(s, 0.0)));
}

}  // namespace

bool Retryable(const Status& s) {
  return s.code() == StatusCode::kUnavailable ||
         s.code() == StatusCode::kTimeout;
}

RetryBackoff::RetryBackoff(double first_s, double cap_s)
    : first_s_(first_s),
      cap_s_(cap_s),
      next_s_(first_s),
      rng_(std::random_device{}()) {}

double RetryBackoff::NextDelayS() {
  double d = next_s_;
  next_s_ = std::min(next_s_ * 2, cap_s_);
  return std::uniform_real_distribution<double>(d / 2, d)(rng_);
}

PatientCaller::PatientCaller(CoordinatorClient* client, std::string doing)
    : client_(client), doing_(std::move(doing)) {}

void PatientCaller::Notice(const std::string& line) {
  if (before_notice_) before_notice_();
  std::fprintf(stderr, "pcfarm: %s\n", Safe(line).c_str());
  std::fflush(stderr);
}

Result<wire::ClientReply> PatientCaller::Call(
    const wire::ClientRequest& request, Clock::time_point give_up_at) {
  while (true) {
    int64_t sent_ms = WallMs();
    auto reply = client_->Call(request);
    if (!reply.ok() && !Retryable(reply.status())) return reply;
    if (reply.ok()) {
      if (down_since_ms_ != 0) {
        Notice("the coordinator answers again after " +
               std::to_string((WallMs() - down_since_ms_ + 500) / 1000) +
               " s unreachable; " + doing_);
        down_since_ms_ = 0;
        backoff_.Reset();
      }
      return reply;
    }
    if (down_since_ms_ == 0) {
      down_since_ms_ = sent_ms;
      Notice("the coordinator at " + client_->endpoint() +
             " is unreachable since " + FormatTime(sent_ms) + "; " + doing_ +
             " (retrying until it answers)");
    }
    auto now = Clock::now();
    if (now >= give_up_at) {
      return Unavailable("the coordinator at " + client_->endpoint() +
                         " has not answered since " +
                         FormatTime(down_since_ms_) + "; last try: " +
                         reply.status().message());
    }
    SleepS(std::min(backoff_.NextDelayS(),
                    std::chrono::duration<double>(give_up_at - now).count()));
  }
}

std::string NewRequestKey() { return HexEncode(RandomBytes(16)); }

Result<uint64_t> SubmitJob(CoordinatorClient* client,
                           wire::ClientRequest request) {
  if (request.submit().request_key().empty()) {
    request.mutable_submit()->set_request_key(NewRequestKey());
  }
  RetryBackoff backoff(1, 4);  // 0.5-1 s, then 1-2 s
  auto start = std::chrono::steady_clock::now();
  for (int tries = 1;; ++tries) {
    auto reply = client->Call(request);
    if (reply.ok()) return reply->submit().job_id();
    if (!Retryable(reply.status())) return reply.status();
    if (tries == kSubmitTries) {
      double secs = std::chrono::duration<double>(
                        std::chrono::steady_clock::now() - start)
                        .count();
      return Status(reply.status().code(),
                    reply.status().message() + "; the submit was sent " +
                        std::to_string(tries) + " times over " +
                        std::to_string(int(secs + 0.5)) +
                        " s with one request key, so at most one job was made "
                        "(see `pcfarm jobs`)");
    }
    SleepS(backoff.NextDelayS());
  }
}

void PrintJobDetails(const wire::JobInfo& j) {
  std::printf("job %llu (%s)\n", (unsigned long long)j.job_id(),
              j.kind().c_str());
  std::printf("  state:      %s\n", j.state().c_str());
  std::printf("  shards:     %u of %u accepted\n", j.shards_accepted(),
              j.shards_total());
  std::printf("  redundancy: %u   priority: %u   verify: %s\n", j.redundancy(),
              j.priority(), j.verify().empty() ? "redundant" : Safe(j.verify()).c_str());
  if (j.has_verification()) {
    std::printf("  checked:    %llu shards, verification overhead %.1f%%\n",
                (unsigned long long)j.checked_shards(),
                100.0 * j.verification_overhead());
  }
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
  if (j.kind() == "finetune") {
    FinetuneProgress p = FinetuneProgressOf(j);
    std::printf("  step:       %lld of %lld\n", (long long)p.step, (long long)p.steps);
    if (p.step > 0) {
      std::string trend;
      const size_t from = p.trend.size() > 6 ? p.trend.size() - 6 : 0;
      for (size_t i = from; i < p.trend.size(); ++i) {
        char b[32];
        std::snprintf(b, sizeof b, "%s%.4f", trend.empty() ? "" : " ", p.trend[i]);
        trend += b;
      }
      std::printf("  loss:       %.6f (last steps: %s)\n", p.loss, trend.c_str());
      std::printf("  traffic:    %.1f MiB up, %.1f MiB down (%.1f KiB an example)\n",
                  double(p.bytes_up) / (1 << 20), double(p.bytes_down) / (1 << 20),
                  p.examples > 0 ? double(p.bytes_up + p.bytes_down) / 1024.0 / double(p.examples)
                                 : 0.0);
    }
    // The rest of its summary (adapter and optimizer blobs, every recent
    // loss) is for scripts: `status --json`.
    return;
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

FinetuneProgress FinetuneProgressOf(const wire::JobInfo& j) {
  FinetuneProgress p;
  json s = json::parse(j.summary().empty() ? "{}" : j.summary(), nullptr, false);
  if (!s.is_object()) return p;
  p.step = s.value("step", int64_t(0));
  p.steps = s.value("steps", int64_t(0));
  if (s.contains("loss") && s["loss"].is_number()) p.loss = s["loss"].get<double>();
  p.bytes_up = s.value("bytes_up", int64_t(0));
  p.bytes_down = s.value("bytes_down", int64_t(0));
  p.examples = s.value("examples", int64_t(0));
  if (s.contains("losses") && s["losses"].is_array()) {
    for (const auto& v : s["losses"]) {
      if (v.is_number()) p.trend.push_back(v.get<double>());
    }
  }
  return p;
}

Status CheckVerifyFlag(const std::string& verify, uint32_t redundancy) {
  if (verify.empty()) return Status::Ok();
  auto policy = ParseVerifyPolicy(verify);
  if (!policy.ok()) return policy.status().WithContext("--verify");
  if (*policy != VerifyPolicy::kRedundant && redundancy > 1) {
    return InvalidArgument("--redundancy " + std::to_string(redundancy) +
                           " needs --verify redundant (--verify " + verify +
                           " decides the copies itself)");
  }
  return Status::Ok();
}

}  // namespace pcfarm
