#include "coordinator/sqlite.h"

#include <sqlite3.h>

#include <mutex>

namespace pcfarm {

Status SqlError(sqlite3* h, int rc, std::string_view what) {
  std::string m = std::string(what) + ": " + sqlite3_errmsg(h);
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return AlreadyExists(m);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Corruption(m);
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN: return IoError(m);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Unavailable(m);
    default: return Internal(m);
  }
}

// ---- Stmt ----

Stmt::Stmt(sqlite3* h, std::map<const char*, sqlite3_stmt*>& cache,
           const char* sql)
    : h_(h) {
  auto it = cache.find(sql);
  if (it != cache.end()) {
    s_ = it->second;
    return;
  }
  int rc = sqlite3_prepare_v3(h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_,
                              nullptr);
  if (rc != SQLITE_OK) {
    st_ = SqlError(h, rc, std::string("prepare '") + sql + "'");
    s_ = nullptr;
    return;
  }
  cache[sql] = s_;
}

Stmt::~Stmt() {
  if (s_) {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
}

Result<bool> Stmt::Step() {
  if (!st_.ok()) return st_;
  int rc = sqlite3_step(s_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqlError(h_, rc, std::string("run '") + sqlite3_sql(s_) + "'");
}

Status Stmt::Run() {
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return Status::Ok();
  }
}

Result<int64_t> Stmt::OneInt() {
  PCFARM_ASSIGN_OR_RETURN(bool row, Step());
  if (!row) return NotFound("no row");
  return Int(0);
}

int64_t Stmt::Int(int c) { return sqlite3_column_int64(s_, c); }
double Stmt::Real(int c) { return sqlite3_column_double(s_, c); }
bool Stmt::IsNull(int c) { return sqlite3_column_type(s_, c) == SQLITE_NULL; }
std::string Stmt::Str(int c) {
  const void* p = sqlite3_column_blob(s_, c);
  int n = sqlite3_column_bytes(s_, c);
  return p ? std::string(static_cast<const char*>(p), n) : std::string();
}

void Stmt::Check(int rc) {
  if (rc != SQLITE_OK && st_.ok()) st_ = SqlError(h_, rc, "bind");
}
void Stmt::One(int i, int v) { Check(sqlite3_bind_int64(s_, i, v)); }
void Stmt::One(int i, int64_t v) { Check(sqlite3_bind_int64(s_, i, v)); }
void Stmt::One(int i, double v) { Check(sqlite3_bind_double(s_, i, v)); }
void Stmt::One(int i, std::nullptr_t) { Check(sqlite3_bind_null(s_, i)); }
void Stmt::One(int i, std::string_view v) {
  Check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                          SQLITE_TRANSIENT));
}
void Stmt::One(int i, const std::string& v) { One(i, std::string_view(v)); }
void Stmt::One(int i, const char* v) { One(i, std::string_view(v)); }
void Stmt::One(int i, BlobArg v) {
  Check(sqlite3_bind_blob(s_, i, v.bytes.data(),
                          static_cast<int>(v.bytes.size()), SQLITE_TRANSIENT));
}

// ---- SqliteDb ----

SqliteDb::~SqliteDb() {
  for (auto& [sql, s] : cache_) sqlite3_finalize(s);
  sqlite3_close_v2(h_);
}

Status SqliteDb::Open(const std::string& path, bool read_only) {
  // Global counters of SQLite's allocator take a mutex on every malloc;
  // nothing here reads them. Only possible before SQLite initializes.
  static std::once_flag sqlite_config;
  std::call_once(sqlite_config, [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  });
  sqlite3* h = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &h,
                           (read_only ? SQLITE_OPEN_READONLY
                                      : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                               SQLITE_OPEN_NOMUTEX,  // the owner serializes
                           nullptr);
  if (rc != SQLITE_OK) {
    Status st = IoError("open database " + path + ": " +
                        (h ? sqlite3_errmsg(h) : sqlite3_errstr(rc)));
    sqlite3_close_v2(h);
    return st;
  }
  h_ = h;
  sqlite3_busy_timeout(h_, 5000);
  // A larger lookaside pool: a shard's transitions allocate many small
  // objects per statement (measured: sqlite3Malloc 8% of the coordinator).
  sqlite3_db_config(h_, SQLITE_DBCONFIG_LOOKASIDE, nullptr, 512, 2048);
  return Status::Ok();
}

Status SqliteDb::Exec(const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(h_, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return Status::Ok();
  std::string m = err ? err : sqlite3_errstr(rc);
  sqlite3_free(err);
  return SqlError(h_, rc, "exec: " + m);
}

int64_t SqliteDb::Changes() const { return sqlite3_changes(h_); }

Status SqliteDb::CreateFunction(const char* name, int nargs,
                                void (*fn)(sqlite3_context*, int, sqlite3_value**)) {
  int rc = sqlite3_create_function_v2(h_, name, nargs, SQLITE_UTF8 | SQLITE_DETERMINISTIC,
                                      nullptr, fn, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqlError(h_, rc, std::string("create function ") + name);
  return Status::Ok();
}

Status SqliteDb::BeginBatch() {
  if (batch_) return FailedPrecondition("a batch is already open");
  PCFARM_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  batch_ = true;
  return Status::Ok();
}

Status SqliteDb::CommitBatch() {
  if (!batch_) return FailedPrecondition("no batch is open");
  batch_ = false;
  Status st = Exec("COMMIT");
  if (!st.ok()) Exec("ROLLBACK").IgnoreError();
  return st;
}

}  // namespace pcfarm
