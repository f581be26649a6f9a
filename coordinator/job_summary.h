// The summary of a job's accepted results that `pcfarm status` shows (JSON
// object text). It is kept in the job's row and folded with each result
// when its shard is accepted, so a status query only reads it: no query
// does work proportional to a job's output.
//
// Every kind: {"shards": accepted shards}. `bench` adds the GFLOP/s the
// shards measured (gflops_mean, gflops_min, gflops_max) and "checksum": the
// XOR over accepted shards of BLAKE2b-256(shard idx as 8 little-endian
// bytes || the shard's checksum text), 64 hex digits. XOR makes it
// independent of the order shards are accepted in, and anyone holding the
// shards' checksums can recompute it.
//
// Thread-safety: pure function.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace pcfarm {

// The summary of a job with no accepted result.
inline constexpr char kEmptyJobSummary[] = "{}";

// `summary` (a summary from this function, or kEmptyJobSummary) with the
// accepted result `body` of shard `shard_idx` of a `kind` job folded in.
// A result the kind's ValidateOutput refused cannot be accepted; should one
// be malformed anyway it counts as a shard and adds nothing else.
std::string FoldAcceptedResult(std::string_view kind, std::string_view summary,
                               int64_t shard_idx, std::string_view body);

}  // namespace pcfarm
