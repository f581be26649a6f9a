// What the `pcfarm` commands that talk to a coordinator share: global
// flags, the connection, one-line failures, and how jobs are printed.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

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
nlohmann::json JobJson(const wire::JobInfo& j);
void PrintJobDetails(const wire::JobInfo& j);
bool Terminal(const wire::JobInfo& j);

// The profile (--profile or $PCFARM_PROFILE) and a connection to its
// coordinator with the --timeout.
Result<std::unique_ptr<CoordinatorClient>> OpenClient(const Globals& g);
Result<wire::JobInfo> FetchJob(CoordinatorClient* client, uint64_t job);

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

}  // namespace pcfarm
