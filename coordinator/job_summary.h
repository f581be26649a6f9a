// SummarizeJob: one JSON object that says what a job's accepted results
// add up to, for `pcfarm status` and the demo. For `bench` jobs: how many
// shards were measured and the GFLOP/s they reported (mean, min, max) and a
// combined checksum of every shard's checksum, in shard order.
#pragma once

#include <string>
#include <vector>

#include "coordinator/store.h"

namespace pcfarm {

std::string SummarizeJob(const std::string& kind,
                         const std::vector<AcceptedResult>& results);

}  // namespace pcfarm
