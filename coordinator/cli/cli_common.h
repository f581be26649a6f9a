// What the `pcfarm` commands that talk to a coordinator share: global
// flags, the connection, one-line failures, riding out a coordinator that
// does not answer for a while, and how jobs are printed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/cli/client.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

struct Globals {
  std::string profile_path;
  double timeout_s = 10;
  bool json = false;
};

// Text from the coordinator may carry what a worker sent (names, errors):
// it reaches the terminal escaped (base/peer_text.h), never raw.
std::string Safe(const std::string& text);
// Prints "pcfarm: WHAT" on stderr; returns 1 (the exit code).
int Fail(const std::string& what);
int Fail(const Status& s);
std::string FormatTime(int64_t ms);
// The JSON `pcfarm ... --json` prints for a job and a worker; the status
// page's API (coordinator/http/) answers with the same.
nlohmann::json JobJson(const wire::JobInfo& j);
nlohmann::json WorkerJson(const wire::WorkerInfo& w);
void PrintJobDetails(const wire::JobInfo& j);
bool Terminal(const wire::JobInfo& j);

// The profile (--profile or $PCFARM_PROFILE) and a connection to its
// coordinator with the --timeout.
Result<std::unique_ptr<CoordinatorClient>> OpenClient(const Globals& g);
Result<wire::JobInfo> FetchJob(CoordinatorClient* client, uint64_t job);

// ---- a coordinator that does not answer for a while (a restart) ----

// True iff sending the request again may fix `s`: the coordinator did not
// answer in time or could not be reached (Unavailable, Timeout). Its
// refusals (not_found, permission_denied, invalid_argument, ...) are final.
bool Retryable(const Status& s);

// Capped exponential backoff with jitter: delays start at `first_s` and
// double up to `cap_s`, each drawn uniformly from [d/2, d] so that clients
// cut off together do not all come back at once.
class RetryBackoff {
 public:
  // REQUIRES: 0 < first_s <= cap_s.
  RetryBackoff(double first_s, double cap_s);
  // The pause before the next try; the one after it is longer.
  double NextDelayS();
  // After an answer: the next pause is short again.
  void Reset() { next_s_ = first_s_; }

 private:
  double first_s_, cap_s_, next_s_;
  std::mt19937_64 rng_;
};

// Reads that ride out a coordinator that stops answering for a while (a
// restart): a request that gets no answer (Retryable) is sent again after a
// RetryBackoff(0.5 s, 10 s) pause, until it is answered or `give_up_at`
// passes. A person is told once per outage, on stderr, that the coordinator
// is unreachable and since when, and again when it answers. A refusal is
// returned at once. Only for requests that may be sent twice.
//
// Thread-safety: one thread.
class PatientCaller {
 public:
  using Clock = std::chrono::steady_clock;

  // `doing` ends the notices, e.g. "still waiting for job 7".
  // REQUIRES: `client` outlives this object.
  PatientCaller(CoordinatorClient* client, std::string doing);

  // Runs before each notice is printed (e.g. to end a progress line).
  void set_before_notice(std::function<void()> f) {
    before_notice_ = std::move(f);
  }

  // The reply to `request`, or its refusal; Unavailable naming when the
  // coordinator last answered once a try fails after `give_up_at`.
  Result<wire::ClientReply> Call(
      const wire::ClientRequest& request,
      Clock::time_point give_up_at = Clock::time_point::max());

 private:
  void Notice(const std::string& line);

  CoordinatorClient* client_;
  std::string doing_;
  std::function<void()> before_notice_;
  RetryBackoff backoff_{0.5, 10};
  int64_t down_since_ms_ = 0;  // wall clock; 0 while it answers
};

// How often a submit is sent at most while the coordinator does not answer
// (each try waits the --timeout; pauses of 0.5-1 s and 1-2 s between them).
inline constexpr int kSubmitTries = 3;

// Submits a job (bench or infer) so that a lost reply never makes two jobs:
// `request` (a SubmitRequest) gets a fresh request key unless it has one,
// and is sent up to kSubmitTries times while the coordinator does not
// answer, always with that key; the coordinator answers a key it has seen
// from this client with that job. Returns the job id.
Result<uint64_t> SubmitJob(CoordinatorClient* client,
                           wire::ClientRequest request);

// 128 random bits as 32 lowercase hex digits (a SubmitRequest.request_key).
std::string NewRequestKey();

// An infer job's progress from its summary: prompts done of the job's
// total, tokens generated, and tokens per second since it was submitted
// (until its last update once it ended).
struct InferProgress {
  int64_t prompts_done = 0;
  int64_t prompts_total = 0;
  int64_t tokens = 0;
  double tokens_per_s = 0;
};
InferProgress InferProgressOf(const wire::JobInfo& j);

// A finetune job's progress from its summary: steps applied of its total,
// the last step's loss and the losses of the last steps (oldest first).
struct FinetuneProgress {
  int64_t step = 0;
  int64_t steps = 0;
  double loss = 0;
  std::vector<double> trend;
  int64_t bytes_up = 0, bytes_down = 0;  // so far
  int64_t examples = 0;                  // trained on so far
};
FinetuneProgress FinetuneProgressOf(const wire::JobInfo& j);

// `--verify` as the submit commands check it: "" (the coordinator's
// default) or a policy name (coordinator/verify_policy.h), and not a policy
// other than redundant beside --redundancy > 1. The one-line error
// otherwise.
Status CheckVerifyFlag(const std::string& verify, uint32_t redundancy);
inline constexpr char kVerifyFlagHelp[] =
    "how results are checked: auto (adaptive spot checks by independent workers, the "
    "default), redundant (--redundancy copies of every shard), spot (10% checked) or none";

}  // namespace pcfarm
