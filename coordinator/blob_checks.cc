// Blobs a worker could not fetch whole. The coordinator serves its blob
// files as they are on its disk (BlobStore::ReadChunk does not re-hash);
// the worker hashes what arrives and, after BlobFetcher::kMaxTries broken
// transfers, fails the attempt with a signed RESULT naming the blob
// (ResultBody.unfetched_blob). Its word is not trusted: the coordinator
// re-hashes its own copy, on a thread of its own (a model's weights take
// seconds), at most once per kBlobRecheckMs a blob while it is found whole,
// and only for a blob linked to the attempt's job. A damaged copy is set
// aside (DIR/damaged/<hex>) and every queued or running job that needs it
// fails, naming the blob: without its bytes no worker can run its shards,
// and each worker would otherwise fail every shard in turn. So does a
// missing file (a worker told REJECT_NOT_FOUND for it fails its shards the
// same way). A whole copy leaves the failed attempt as it is (one failure
// of that shard and that worker, like any other).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "coordinator/server_internal.h"
#include "crypto/hash.h"

namespace pcfarm {

namespace {

// A blob found whole is re-hashed again on a claim only after this long.
constexpr int64_t kBlobRecheckMs = 10 * 60'000;
// Re-hashes running at once; claims past it wait for a later failure.
constexpr size_t kMaxBlobChecks = 2;

}  // namespace

void CoordinatorServer::Impl::CheckServedBlob(Peer& peer, int64_t job_id,
                                              const std::string& hash_bytes) {
  auto hash = HashFromBytes(hash_bytes);
  if (!hash.ok()) return;
  const std::string hex = HashToHex(*hash);
  if (blob_checks.count(hex) || blob_checks.size() >= kMaxBlobChecks) return;
  const int64_t now = clock->MonotonicMs();
  if (auto w = blob_found_whole_ms.find(hex);
      w != blob_found_whole_ms.end() && now - w->second < kBlobRecheckMs) {
    return;
  }
  auto linked = store->JobBlobs(job_id);
  if (!linked.ok() || std::find(linked->begin(), linked->end(), hex) == linked->end()) {
    spdlog::warn("worker {} says it could not fetch blob {}, which job {} does not use",
                 peer.name, hex, job_id);
    return;
  }
  spdlog::warn("worker {} could not fetch blob {} whole: re-hashing our copy", peer.name,
               hex);
  BlobStore* store_of_blobs = blobs.get();
  blob_checks.emplace(hex, std::async(std::launch::async, [store_of_blobs, hex] {
                        return store_of_blobs->Verify(hex);
                      }));
}

void CoordinatorServer::Impl::FinishBlobChecks() {
  const int64_t now = clock->MonotonicMs();
  for (auto it = blob_checks.begin(); it != blob_checks.end();) {
    if (it->second.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      ++it;
      continue;
    }
    const std::string hex = it->first;
    const Status verdict = it->second.get();
    it = blob_checks.erase(it);
    if (verdict.ok()) {
      spdlog::info("blob {} is whole here: the worker's transfer broke, not our copy", hex);
      if (blob_found_whole_ms.size() > 10'000) blob_found_whole_ms.clear();
      blob_found_whole_ms[hex] = now;
      continue;
    }
    std::string what;
    const char* event = "blob_damaged";
    if (verdict.code() == StatusCode::kNotFound) {
      event = "blob_missing";
      what = "is missing from the coordinator's disk";
      spdlog::error("blob {} is missing from this coordinator's disk", hex);
    } else if (verdict.code() == StatusCode::kCorruption) {
      auto aside = blobs->SetAside(hex);
      const std::string where = aside.ok() ? "moved to " + *aside
                                           : "could not be moved: " + aside.status().message();
      what = "is damaged on the coordinator's disk (its bytes no longer hash to its name; " +
             where + ")";
      spdlog::error("blob {} is damaged on this coordinator's disk ({}); {}", hex,
                    verdict.message(), where);
    } else {
      spdlog::warn("cannot re-hash blob {}: {}", hex, verdict.ToString());
      continue;
    }
    auto jobs = store->ActiveJobsOfBlob(hex);
    if (!jobs.ok()) {
      spdlog::warn("cannot list the jobs of blob {}: {}", hex, jobs.status().ToString());
      continue;
    }
    const std::string reason =
        "blob " + hex + " " + what + ": submit the job again to upload it afresh";
    store->AddEvent(event, 0, 0,
                    "blob " + hex + " " + what + "; jobs failed: " + std::to_string(jobs->size()))
        .IgnoreError();
    for (int64_t job : *jobs) {
      auto report = store->FailJob(job, reason);
      if (report.ok()) {
        ActOn(*report);
      } else {
        spdlog::warn("cannot fail job {}: {}", job, report.status().ToString());
      }
    }
  }
}

}  // namespace pcfarm
