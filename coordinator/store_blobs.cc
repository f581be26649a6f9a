// The Store's blob records and their links to jobs (the bytes live in
// BlobStore).
#include <set>
#include <string>
#include <vector>

#include "coordinator/store.h"
#include "coordinator/store_internal.h"

namespace pcfarm {

// ---- blobs ----

Status Store::RecordBlob(const std::string& hash_hex, int64_t size, bool collectable) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    return db_->Q("INSERT INTO blobs(hash,size,created_ms,collectable) VALUES(?1,?2,?3,?4) "
                  "ON CONFLICT(hash) DO UPDATE SET created_ms=MAX(created_ms,excluded.created_ms),"
                  "collectable=MIN(collectable,excluded.collectable)")
        .Bind(hash_hex, size, now, int64_t(collectable))
        .Run();
  });
}

Result<bool> Store::HasBlob(const std::string& hash_hex) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT COUNT(*) FROM blobs WHERE hash=?1");
  PCFARM_ASSIGN_OR_RETURN(int64_t n, q.Bind(hash_hex).OneInt());
  return n > 0;
}

Result<bool> Store::OwnerHasJobBlob(int64_t owner_client_id, const std::string& hash_hex) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT COUNT(*) FROM job_blobs b JOIN jobs j ON j.id=b.job_id "
                  "WHERE b.hash=?1 AND j.owner_client_id=?2");
  PCFARM_ASSIGN_OR_RETURN(int64_t n, q.Bind(hash_hex, owner_client_id).OneInt());
  return n > 0;
}

Status Store::LinkJobBlob(int64_t job_id, const std::string& hash_hex) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    Status st = db_->Q("INSERT OR IGNORE INTO job_blobs(job_id,hash) "
                       "VALUES(?1,?2)")
                    .Bind(job_id, hash_hex)
                    .Run();
    if (st.code() == StatusCode::kAlreadyExists) {  // a foreign key failed
      return NotFound("job " + std::to_string(job_id) + " or blob " +
                      hash_hex + " is not recorded");
    }
    return st;
  });
}

Result<std::vector<std::string>> Store::JobBlobs(int64_t job_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT hash FROM job_blobs WHERE job_id=?1 ORDER BY hash");
  q.Bind(job_id);
  std::vector<std::string> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(q.Str(0));
  }
}

Result<std::vector<int64_t>> Store::ActiveJobsOfBlob(const std::string& hash_hex) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT b.job_id FROM job_blobs b JOIN jobs j ON j.id=b.job_id "
                  "WHERE b.hash=?1 AND j.state IN ('queued','running') ORDER BY b.job_id");
  q.Bind(hash_hex);
  std::vector<int64_t> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back(q.Int(0));
  }
  return out;
}

Result<int64_t> Store::ReleaseJobBlobs(int64_t job_id, const std::vector<std::string>& keep) {
  std::lock_guard l(mu_);
  const std::set<std::string> kept(keep.begin(), keep.end());
  return db_->Tx([&]() -> Result<int64_t> {
    auto j = db_->Q("SELECT state FROM jobs WHERE id=?1");
    j.Bind(job_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, j.Step());
    if (!row) return NotFound("no job " + std::to_string(job_id));
    const std::string state = j.Str(0);
    PCFARM_RETURN_IF_ERROR(j.Run());
    if (state != "succeeded" && state != "failed" && state != "cancelled") {
      return FailedPrecondition("job " + std::to_string(job_id) + " is " + state);
    }
    std::vector<std::string> go;
    {
      auto q = db_->Q("SELECT hash FROM job_blobs WHERE job_id=?1");
      q.Bind(job_id);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool more, q.Step());
        if (!more) break;
        if (!kept.count(q.Str(0))) go.push_back(q.Str(0));
      }
    }
    for (const std::string& h : go) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("DELETE FROM job_blobs WHERE job_id=?1 AND hash=?2").Bind(job_id, h).Run());
    }
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE jobs SET blobs_collected=1 WHERE id=?1").Bind(job_id).Run());
    return int64_t(go.size());
  });
}

Result<Store::RoundTrim> Store::TrimRoundStarts(int64_t job_id, int64_t keep_bytes,
                                                const std::vector<std::string>& keep) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Result<RoundTrim> {
    RoundTrim out;
    std::string summary;
    {
      auto q = db_->Q("SELECT summary FROM jobs WHERE id=?1 AND open_ended=1 AND "
                      "state IN ('queued','running')");
      q.Bind(job_id);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      summary = q.Str(0);
      PCFARM_RETURN_IF_ERROR(q.Run());
    }
    struct Start {
      int64_t first, round;
      std::string summary;
    };
    std::vector<Start> starts;
    {
      auto q = db_->Q("SELECT first_shard, round, summary FROM job_round_starts WHERE "
                      "job_id=?1 ORDER BY first_shard DESC");
      q.Bind(job_id);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        starts.push_back({q.Int(0), q.Int(1), q.Str(2)});
      }
    }
    if (starts.size() < 2) return out;
    // The job's linked blobs a summary names (any string of 64 hex digits
    // in it), with their sizes.
    auto named = [&](const std::string& s) -> Result<std::vector<std::pair<std::string, int64_t>>> {
      auto q = db_->Q(
          "SELECT b.hash, b.size FROM job_blobs j JOIN blobs b ON b.hash=j.hash WHERE "
          "j.job_id=?2 AND j.hash IN (SELECT value FROM json_tree(CASE WHEN json_valid(?1) "
          "THEN ?1 ELSE '{}' END) WHERE type='text' AND length(value)=64)");
      q.Bind(s, job_id);
      std::vector<std::pair<std::string, int64_t>> hashes;
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) return hashes;
        hashes.emplace_back(q.Str(0), q.Int(1));
      }
    };
    std::set<std::string> kept(keep.begin(), keep.end());
    for (const std::string* s : {&summary, &starts[0].summary}) {
      PCFARM_ASSIGN_OR_RETURN(auto hashes, named(*s));
      for (const auto& h : hashes) kept.insert(h.first);
    }
    size_t cut = starts.size();
    int64_t used = 0;
    for (size_t i = 1; i < starts.size(); ++i) {
      PCFARM_ASSIGN_OR_RETURN(auto hashes, named(starts[i].summary));
      int64_t bytes = 0;
      for (const auto& [h, size] : hashes) bytes += kept.count(h) ? 0 : size;
      if (used + bytes > keep_bytes) {
        cut = i;
        break;
      }
      used += bytes;
      for (const auto& h : hashes) kept.insert(h.first);
    }
    if (cut == starts.size()) return out;
    const Start& oldest = starts[cut - 1];
    int64_t began = 0;
    {
      auto q = db_->Q("SELECT created_ms FROM job_rounds WHERE job_id=?1 AND round=?2");
      q.Bind(job_id, oldest.round - 1);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;  // not known when it began: keep everything
      began = q.Int(0);
      PCFARM_RETURN_IF_ERROR(q.Run());
    }
    {
      auto q = db_->Q("DELETE FROM job_round_starts WHERE job_id=?1 AND first_shard<?2 "
                      "RETURNING round");
      q.Bind(job_id, oldest.first);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        ++out.starts;
      }
    }
    out.oldest_round = oldest.round;
    std::vector<std::pair<std::string, int64_t>> go;
    {
      auto q = db_->Q("SELECT j.hash, b.size FROM job_blobs j JOIN blobs b ON b.hash=j.hash "
                      "WHERE j.job_id=?1 AND b.created_ms<?2");
      q.Bind(job_id, began);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        if (!kept.count(q.Str(0))) go.emplace_back(q.Str(0), q.Int(1));
      }
    }
    for (const auto& [h, size] : go) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("DELETE FROM job_blobs WHERE job_id=?1 AND hash=?2").Bind(job_id, h).Run());
      ++out.blobs;
      out.bytes += size;
    }
    return out;
  });
}

Result<std::vector<std::string>> Store::DropUnlinkedBlobs(int64_t before_ms, int limit) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Result<std::vector<std::string>> {
    auto q = db_->Q("DELETE FROM blobs WHERE hash IN (SELECT b.hash FROM blobs b WHERE "
                    "b.created_ms<?1 AND b.collectable=1 AND NOT EXISTS (SELECT 1 FROM job_blobs j WHERE "
                    "j.hash=b.hash) LIMIT ?2) RETURNING hash");
    q.Bind(before_ms, int64_t(limit));
    std::vector<std::string> out;
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return out;
      out.push_back(q.Str(0));
    }
  });
}

}  // namespace pcfarm
