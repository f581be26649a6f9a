// The Store's blob records and their links to jobs (the bytes live in
// BlobStore).
#include <string>
#include <vector>

#include "coordinator/store.h"
#include "coordinator/store_internal.h"

namespace pcfarm {

// ---- blobs ----

Status Store::RecordBlob(const std::string& hash_hex, int64_t size) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    return db_->Q("INSERT INTO blobs(hash,size,created_ms) VALUES(?1,?2,?3) "
                  "ON CONFLICT(hash) DO NOTHING")
        .Bind(hash_hex, size, now)
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

}  // namespace pcfarm
