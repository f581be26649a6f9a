// MiniCluster: real pcfarm processes on loopback for integration tests, in
// the manner of Kudu's MiniCluster.
//
// A MiniCluster owns a fresh temporary directory holding the coordinator's
// data directory, one data directory per worker and every process's log. It
// runs the real binaries from $PCFARM_BIN_DIR (set by pcfarm_add_test; the
// test program's own directory otherwise):
//   pcfarm-coordinator init/serve, pcfarm-worker enroll/run, pcfarm.
// It can start, stop (SIGTERM), kill -9 and restart the coordinator on the
// same ports, enroll and start/kill workers, run CLI commands and capture
// what they print, and read the coordinator's SQLite database directly
// (read-only) to check invariants.
//
// Every wait has a deadline and polls (no fixed sleeps). Children get
// PR_SET_PDEATHSIG so that they die with the test, and the destructor kills
// whatever is still running; it removes the temporary directory unless
// $PCFARM_KEEP_TEST_DIR is set.
//
// Thread-safety: none; one test thread uses a MiniCluster.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace pcfarm {

struct MiniClusterOptions {
  // Coordinator and worker heartbeat interval, and intervals of silence
  // after which the coordinator drops a worker.
  int heartbeat_interval_ms = 200;
  int heartbeat_liveness = 3;
  // The workers' own intervals of silence before they drop the connection
  // and reconnect (`pcfarm-worker run --heartbeat-liveness`); 0: theirs by
  // default (3).
  int worker_heartbeat_liveness = 0;
  // How long a worker holds a shard before the coordinator leases it again.
  int64_t lease_ms = 15'000;
  // Failed attempts after which a shard fails its job.
  int max_attempts = 5;
  // Worker slots (shards run at once per worker).
  int worker_slots = 1;
  // --log-level of every daemon.
  std::string log_level = "debug";
  // More `pcfarm-coordinator serve` flags (e.g. {"--min-free-disk", "0"}).
  std::vector<std::string> coordinator_args;
};

// What a finished command did.
struct CommandResult {
  int exit_code = -1;      // -1 when killed by a signal or the deadline
  bool timed_out = false;
  double seconds = 0;      // wall time
  std::string out;         // stdout
  std::string err;         // stderr
  std::string command;     // for messages

  // The last non-empty line of stdout, without the newline.
  std::string LastLine() const;
  // "`cmd` exited 1 after 0.2 s; stderr: ..."
  std::string Describe() const;
};

// A child process started by the cluster, its stdout and stderr appended to
// `log_path`.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // kills it (SIGKILL) if still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  Status Start(const std::vector<std::string>& argv,
               const std::string& log_path);
  bool running();  // reaps it when it has exited
  pid_t pid() const { return pid_; }
  // The exit status of the last run (-1 when it died of a signal).
  int exit_code() const { return exit_code_; }
  // Sends `sig`, then waits up to timeout_ms for the exit. Timeout when it
  // is still running.
  Status Signal(int sig, int timeout_ms);
  // Waits up to timeout_ms for it to exit by itself.
  Status Wait(int timeout_ms);

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// Read-only view of the coordinator's database. Each query opens the file
// read-only, runs, and closes, so no lock is held between queries (the
// coordinator may be killed and restarted meanwhile).
class DbView {
 public:
  explicit DbView(std::string path) : path_(std::move(path)) {}
  // Every column as bytes (integers as their decimal text; NULL as "").
  using Row = std::vector<std::string>;
  Result<std::vector<Row>> Query(const std::string& sql) const;
  // The first column of the first row as an integer; NotFound when there
  // are no rows.
  Result<int64_t> QueryInt(const std::string& sql) const;

 private:
  std::string path_;
};

class MiniCluster {
 public:
  explicit MiniCluster(MiniClusterOptions options = {});
  ~MiniCluster();
  MiniCluster(const MiniCluster&) = delete;
  MiniCluster& operator=(const MiniCluster&) = delete;

  // Finds the binaries, makes the temporary directory, picks two free
  // loopback ports and runs `pcfarm-coordinator init`. Call once, first.
  Status Init();
  // Init, but the coordinator's data directory is a copy of `source` (one
  // made by another release: tests/fixtures/datadir-v9), with the endpoints
  // of its config.json and of every *.profile in it pointed at this
  // cluster's ports. Call once, first.
  Status InitFromDataDir(const std::string& source);

  // ---- the coordinator ----
  // Starts `serve` and waits until it is serving (its log says so and the
  // CLI gets an answer). Error (with the log's tail) when it exits first.
  Status StartCoordinator(int timeout_ms = 10'000);
  // SIGTERM and wait for the exit; an error when it is not a clean exit
  // (code 0) unless `require_clean_exit` is false.
  Status StopCoordinator(int timeout_ms = 10'000, bool require_clean_exit = true);
  // kill -9, and reap.
  Status KillCoordinator();
  bool coordinator_running() { return coordinator_.running(); }
  // The coordinator's pid while it runs (/proc/PID for benchmarks); -1
  // before the first start and once its exit has been seen.
  pid_t coordinator_pid() const { return coordinator_.pid(); }

  // ---- workers ----
  // Creates a one-use token, enrolls a worker called `name` and starts it.
  // Returns its index.
  Result<int> AddWorker(const std::string& name);
  // `pcfarm-worker enroll` for a new worker `name` with `token`; the worker
  // is registered (index = worker_count() - 1) whatever the outcome, so
  // StartWorker can follow a successful enrollment.
  CommandResult EnrollWorker(const std::string& name, const std::string& token);
  // `extra_args` go after the usual `run` flags (e.g. {"--config", FILE}).
  Status StartWorker(int index, const std::vector<std::string>& extra_args = {});
  Status KillWorker(int index);                    // kill -9
  Status StopWorker(int index, int timeout_ms = 10'000);  // SIGTERM
  // SIGSTOP / SIGCONT: a paused worker holds its shards and sends nothing,
  // so a test can freeze a job's progress before it kills the coordinator.
  Status PauseWorker(int index);
  Status ResumeWorker(int index);
  int worker_count() const { return static_cast<int>(workers_.size()); }
  // Whether worker `index` runs (reaps it when it has exited); false for
  // an unknown index.
  bool worker_running(int index);
  // The exit code of worker `index`'s last run (-1: a signal, or never ran).
  int worker_exit_code(int index) const;
  const std::string& worker_dir(int index) const;
  const std::string& worker_name(int index) const;

  // ---- the CLI ----
  // `pcfarm --profile <admin profile> --timeout T args...`.
  CommandResult Cli(const std::vector<std::string>& args,
                    double timeout_s = 5, int deadline_ms = 30'000);
  // Cli(args + --json), exit 0 required, the last line parsed as JSON.
  Result<nlohmann::json> CliJson(const std::vector<std::string>& args);
  Result<std::string> CreateToken(int uses, const std::string& ttl);
  // `submit bench`; returns the job id.
  Result<int64_t> SubmitBench(int shards, int size, int redundancy,
                              int reps = 1);
  Result<nlohmann::json> JobStatus(int64_t job);
  Result<nlohmann::json> Stats();
  Result<nlohmann::json> Workers();
  // Waits until `workers --json` shows `n` connected workers.
  Status WaitForConnectedWorkers(int n, int timeout_ms);
  // Waits (reading the database) until the job is in a terminal state;
  // returns that state.
  Result<std::string> WaitForJobEnd(int64_t job, int timeout_ms);
  // A stalled job in one line: shards by state, the attempts (worker/
  // state/result outcome) of its first unfinished shards, the workers.
  std::string DescribeJob(int64_t job) const;

  // ---- running any command ----
  // Runs argv[0] (a path) with a deadline; stdout and stderr captured.
  CommandResult Run(const std::vector<std::string>& argv, int deadline_ms);
  std::string Binary(const std::string& name) const;  // bin_dir/name

  // ---- inspection ----
  DbView& db() { return db_; }
  const std::string& dir() const { return dir_; }
  const std::string& coordinator_dir() const { return coordinator_dir_; }
  const std::string& admin_profile() const { return admin_profile_; }
  const std::string& workers_endpoint() const { return workers_endpoint_; }
  const std::string& clients_endpoint() const { return clients_endpoint_; }
  // The status page's HOST:PORT (a free loopback port, passed to serve).
  const std::string& http_endpoint() const { return http_endpoint_; }
  const MiniClusterOptions& options() const { return options_; }
  // The `serve` flags of the next StartCoordinator (options().coordinator_args).
  void SetCoordinatorArgs(std::vector<std::string> args) {
    options_.coordinator_args = std::move(args);
  }
  // The tail (last `max_bytes` bytes) of every process log, labelled.
  std::string DumpLogs(size_t max_bytes = 6000) const;
  std::string CoordinatorLog() const;

 private:
  struct Worker {
    std::string name, dir, log;
    std::unique_ptr<ChildProcess> proc;
  };
  // Init; with `source`, a copy of it instead of `init`.
  Status InitDir(const std::string& source);

  MiniClusterOptions options_;
  std::string bin_dir_;
  std::string dir_;
  std::string coordinator_dir_;
  std::string coordinator_log_;
  std::string admin_profile_;
  std::string workers_endpoint_;
  std::string clients_endpoint_;
  std::string http_endpoint_;
  ChildProcess coordinator_;
  std::vector<Worker> workers_;
  DbView db_{""};
  int commands_run_ = 0;
};

// Returns true as soon as cond() is true; false when timeout_ms passed
// first. Polls every poll_ms.
bool WaitUntil(const std::function<bool()>& cond, int timeout_ms,
               int poll_ms = 20);

// A TCP port on 127.0.0.1 that was free a moment ago: a random one below
// the kernel's ephemeral port range (so no outgoing connection takes it
// while a coordinator restarts on it), else one bind(0) gives.
Result<int> PickFreePort();

}  // namespace pcfarm
