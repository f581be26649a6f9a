// A small RAII layer over SQLite: one connection (SqliteDb), its cached
// prepared statements (Stmt), transactions and savepoints (SqliteDb::Tx,
// BeginBatch/CommitBatch) and the mapping of SQLite's result codes to a
// Status (SqlError). The Store's files (coordinator/store*.cc) share it.
//
// Thread-safety: none. The connection is opened with SQLITE_OPEN_NOMUTEX:
// its owner serializes every use of a SqliteDb and of its Stmts (Store
// holds its mutex around each call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/status.h"

struct sqlite3;
struct sqlite3_stmt;
struct sqlite3_context;
struct sqlite3_value;

namespace pcfarm {

// The Status for SQLite result code `rc` on connection `h`: `what`, then
// SQLite's message. A constraint failure is AlreadyExists; a corrupt file
// or one that is not a database, Corruption; an I/O error, a full disk or
// a file that cannot be opened, IoError; busy or locked, Unavailable;
// anything else, Internal.
Status SqlError(sqlite3* h, int rc, std::string_view what);

// Binds its bytes as a BLOB (strings bind as TEXT).
struct BlobArg {
  std::string_view bytes;
};

// A cached prepared statement, reset and unbound when the Stmt goes away.
// Made by SqliteDb::Q. An error in preparing or binding is kept and
// returned by the first Step/Run/OneInt.
class Stmt {
 public:
  Stmt(sqlite3* h, std::map<const char*, sqlite3_stmt*>& cache,
       const char* sql);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  // Binds its arguments to ?1, ?2, ... in order: int, int64_t, double,
  // nullptr (NULL), strings (TEXT) and BlobArg (BLOB).
  template <typename... A>
  Stmt& Bind(const A&... args) {
    int i = 1;
    (One(i++, args), ...);
    return *this;
  }

  // True when a row is ready, false when the statement is done.
  Result<bool> Step();
  // Steps until the statement is done.
  Status Run();
  // The single integer the query yields; NotFound when there is no row.
  Result<int64_t> OneInt();

  // Column `c` of the current row. REQUIRES: the last Step returned true.
  int64_t Int(int c);
  double Real(int c);
  bool IsNull(int c);
  std::string Str(int c);  // TEXT or BLOB bytes; "" for NULL

 private:
  void Check(int rc);
  void One(int i, int v);
  void One(int i, int64_t v);
  void One(int i, double v);
  void One(int i, std::nullptr_t);
  void One(int i, std::string_view v);
  void One(int i, const std::string& v);
  void One(int i, const char* v);
  void One(int i, BlobArg v);

  sqlite3* h_;
  sqlite3_stmt* s_ = nullptr;
  Status st_;
};

// One connection and its statement cache.
class SqliteDb {
 public:
  SqliteDb() = default;
  // Finalizes the cached statements and closes the connection.
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Opens or creates the database file at `path`, read-write, with a busy
  // timeout of 5 s (read-only, and never created, when `read_only`).
  // IoError naming `path` when it cannot. REQUIRES: called once, before
  // anything else.
  Status Open(const std::string& path, bool read_only = false);

  // The prepared statement for `sql`, made once and cached by the address
  // of its text. REQUIRES: `sql` outlives this SqliteDb (a literal or a
  // static string).
  Stmt Q(const char* sql) { return Stmt(h_, cache_, sql); }
  // Runs one or more statements without caching them (DDL, pragmas).
  Status Exec(const char* sql);
  // Rows changed by the last INSERT, UPDATE or DELETE.
  int64_t Changes() const;
  // Makes the deterministic scalar SQL function `name` of `nargs`
  // arguments (sqlite3_create_function_v2 with SQLITE_DETERMINISTIC):
  // fn(context, argc, argv) sets the result with sqlite3_result_*.
  Status CreateFunction(const char* name, int nargs,
                        void (*fn)(sqlite3_context*, int, sqlite3_value**));

  // Runs f() inside BEGIN IMMEDIATE ... COMMIT; rolls back when f fails.
  // Inside a batch (BeginBatch) it is a SAVEPOINT instead: the transition
  // stays atomic, and becomes durable with the batch's COMMIT.
  template <typename F>
  auto Tx(F&& f) -> decltype(f()) {
    if (batch_) {
      // Prepared once (Q's cache): a turn runs several per shard.
      Status st = Q("SAVEPOINT tx").Run();
      if (!st.ok()) return st;
      auto r = f();
      if (r.ok()) {
        st = Q("RELEASE tx").Run();
        if (st.ok()) return r;
      }
      Q("ROLLBACK TO tx").Run().IgnoreError();
      Q("RELEASE tx").Run().IgnoreError();
      if (!r.ok()) return r;
      return st;
    }
    Status st = Exec("BEGIN IMMEDIATE");
    if (!st.ok()) return st;
    auto r = f();
    if (r.ok()) {
      st = Exec("COMMIT");
      if (st.ok()) return r;
    }
    Exec("ROLLBACK").IgnoreError();
    if (!r.ok()) return r;
    return st;
  }

  // Group commit: BeginBatch opens a transaction that every Tx joins as a
  // savepoint until CommitBatch commits it (or, when the COMMIT fails,
  // rolls it back). FailedPrecondition when a batch is already open / not
  // open.
  Status BeginBatch();
  Status CommitBatch();
  // True between BeginBatch and CommitBatch.
  bool in_batch() const { return batch_; }

 private:
  sqlite3* h_ = nullptr;
  std::map<const char*, sqlite3_stmt*> cache_;
  bool batch_ = false;
};

}  // namespace pcfarm
