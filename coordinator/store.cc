// The Store object itself: batches, deferred durability and the
// consistency check. The tables' transitions are in the other store_*.cc
// files (store_internal.h lists them).
#include "coordinator/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "coordinator/store_internal.h"

namespace pcfarm {

Store::Store(std::unique_ptr<Db> db, const Clock* clock, std::string path)
    : db_(std::move(db)), clock_(clock), path_(std::move(path)) {}

Store::~Store() {
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

Status Store::BeginBatch() {
  std::lock_guard l(mu_);
  return db_->BeginBatch();
}

Status Store::CommitBatch() {
  std::lock_guard l(mu_);
  return db_->CommitBatch();
}

Status Store::EnableDeferredSync() {
  std::lock_guard l(mu_);
  if (db_->in_batch()) return FailedPrecondition("a batch is open");
  // The WAL exists while this connection is open: Open wrote to it.
  PCFARM_RETURN_IF_ERROR(db_->Exec("PRAGMA synchronous=NORMAL"));
  std::lock_guard w(wal_mu_);
  if (wal_fd_ >= 0) return Status::Ok();
  std::string wal = path_ + "-wal";
  int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    db_->Exec("PRAGMA synchronous=FULL").IgnoreError();
    return IoError(wal + ": open: " + std::strerror(errno));
  }
  wal_fd_ = fd;
  // The WAL's directory entry must be durable too, once.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

Status Store::SyncWal() {
  std::lock_guard w(wal_mu_);
  if (wal_fd_ < 0) return FailedPrecondition("deferred sync is not enabled");
  // SQLite keeps the WAL file (same inode) while a connection is open; if
  // something replaced it, sync the file that is there now.
  struct stat have{}, now{};
  std::string wal = path_ + "-wal";
  if (::fstat(wal_fd_, &have) == 0 && ::stat(wal.c_str(), &now) == 0 &&
      (have.st_ino != now.st_ino || have.st_dev != now.st_dev)) {
    int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoError(wal + ": open: " + std::strerror(errno));
    ::close(wal_fd_);
    wal_fd_ = fd;
  }
  if (::fdatasync(wal_fd_) != 0) {
    return IoError(wal + ": fdatasync: " + std::strerror(errno));
  }
  return Status::Ok();
}

Status Store::CheckConsistency() {
  std::lock_guard l(mu_);
  {
    auto q = db_->Q("PRAGMA integrity_check");
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row || q.Str(0) != "ok") {
      return Corruption("integrity_check: " + (row ? q.Str(0) : "no answer"));
    }
  }
  struct Check {
    const char* what;
    const char* sql;
  };
  static const Check kChecks[] = {
      {"foreign key broken", "SELECT rowid FROM pragma_foreign_key_check"},
      {"job counters differ from its shard rows",
       "SELECT id FROM jobs j WHERE shards_total != (SELECT COUNT(*) FROM "
       "shards WHERE job_id=j.id) OR shards_accepted != (SELECT COUNT(*) FROM "
       "shards WHERE job_id=j.id AND state='accepted') OR (j.state IN "
       "('queued','running','succeeded') AND shards_dropped != (SELECT COUNT(*) "
       "FROM shards WHERE job_id=j.id AND state='cancelled'))"},
      // (An open-ended job whose shards are all settled waits for its
      // planner's next round, running, and may be cancelled or fail there.)
      {"job succeeded iff every shard is accepted or dropped",
       "SELECT id FROM jobs WHERE (state='succeeded') != "
       "(shards_accepted+shards_dropped=shards_total) AND NOT (open_ended=1 AND "
       "state!='succeeded')"},
      {"accepted shard without one agreeing result set",
       "SELECT s.id FROM shards s JOIN jobs j ON j.id=s.job_id WHERE "
       "s.state='accepted' AND (NOT EXISTS (SELECT 1 FROM results r WHERE "
       "r.id=s.accepted_result_id AND r.shard_id=s.id AND r.outcome='agreed') "
       "OR (SELECT COUNT(*) FROM results r WHERE r.shard_id=s.id AND "
       "r.outcome='agreed') < MAX(j.redundancy, s.copies))"},
      {"shard not accepted has a verified result",
       "SELECT s.id FROM shards s WHERE s.state!='accepted' AND "
       "(s.accepted_result_id IS NOT NULL OR EXISTS (SELECT 1 FROM results r "
       "WHERE r.shard_id=s.id AND r.outcome IN ('agreed','disagreed')))"},
      {"attempt leased on a finished shard or job",
       "SELECT a.id FROM attempts a JOIN shards s ON s.id=a.shard_id JOIN jobs "
       "j ON j.id=s.job_id WHERE a.state='leased' AND (s.state NOT IN "
       "('pending','leased') OR j.state!='running')"},
      {"more live attempts than the redundancy",
       "SELECT s.id FROM shards s JOIN jobs j ON j.id=s.job_id WHERE "
       "(SELECT COUNT(*) FROM attempts a WHERE a.shard_id=s.id AND "
       "a.state='leased') > MAX(j.redundancy, s.copies)"},
      {"returned attempt without exactly one result, or a result of another",
       "SELECT a.id FROM attempts a WHERE (a.state='returned') != EXISTS "
       "(SELECT 1 FROM results r WHERE r.attempt_id=a.id AND "
       "r.worker_id=a.worker_id AND r.shard_id=a.shard_id)"},
      {"worker agreement counters differ from its results",
       "SELECT id FROM workers w WHERE agreed != (SELECT COUNT(*) FROM results "
       "WHERE worker_id=w.id AND outcome='agreed') OR disagreed != (SELECT "
       "COUNT(*) FROM results WHERE worker_id=w.id AND outcome='disagreed')"},
  };
  for (const Check& c : kChecks) {
    auto q = db_->Q(c.sql);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      return Corruption(std::string(c.what) + " (row " +
                        std::to_string(q.Int(0)) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace pcfarm
