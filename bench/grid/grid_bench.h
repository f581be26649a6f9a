// Shared pieces of the grid benchmarks (bench/grid/*_bench.cc): the table
// every benchmark prints, process sampling from /proc, the per-shard floor
// (sign + verify + one durable SQLite commit), and SimFleet, a driver that
// runs many SimWorkers (tests/integration/sim_worker.h) from one thread.
//
// A benchmark prints its own figure next to a baseline measured in the same
// run and their ratio (STYLE.md habit 9); nothing here asserts on time.
//
// Thread-safety: none; each benchmark drives these from its main thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "base/status.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {

// ---------------------------------------------------------------- the table

// One line of a benchmark's table. `ratio` is ours / baseline, written out.
struct BenchRow {
  std::string measure;
  std::string ours;
  std::string baseline;
  std::string ratio;
  std::string target;
};

// Prints `title`, the rows as an aligned Markdown table, then each note as a
// "- note" line, to stdout.
void PrintBenchTable(const std::string& title, const std::vector<BenchRow>& rows,
                     const std::vector<std::string>& notes);

// `v` with `decimals` digits after the point.
std::string FormatFixed(double v, int decimals);

// Seconds on a monotonic clock.
double MonotonicSeconds();

// ------------------------------------------------------------ /proc sampling

// CPU time and resident memory of one process.
struct ProcSample {
  double cpu_seconds = 0;  // utime + stime
  int64_t rss_kib = 0;     // VmRSS
  int64_t hwm_kib = 0;     // VmHWM, the peak of VmRSS since the process began
  double taken_at = 0;     // MonotonicSeconds() when read
};

// Reads /proc/PID/stat and /proc/PID/status. NotFound when the process is
// gone; Corruption when a file does not parse.
Result<ProcSample> SampleProcess(pid_t pid);

// The pid of a running child of this process whose command name (the first
// 15 characters, as /proc/PID/stat shows it) is `name`'s. NotFound if none.
Result<pid_t> FindChildProcess(std::string_view name);

// -------------------------------------------------------- the per-shard floor

// What one shard costs at least, whatever the protocol: the worker signs a
// result, the coordinator verifies it and commits it in one durable SQLite
// transaction (WAL, synchronous=FULL, like coordinator/store.h).
struct ShardFloor {
  int iterations = 0;
  double per_second = 0;       // iterations / total seconds
  double sign_verify_us = 0;   // mean, one Ed25519 sign + one verify
  double commit_us = 0;        // mean, one INSERT in its own transaction
};

// Runs the floor loop for about `seconds` (at least 20 iterations) with a
// fresh database file in `dir` (removed afterwards).
Result<ShardFloor> MeasureShardFloor(const std::string& dir, double seconds);

// ------------------------------------------------------------------ SimFleet

// Many SimWorkers on one thread. Ownership: the fleet owns its workers;
// `ctx` must outlive the fleet and have ZMQ_MAX_SOCKETS above the worker
// count.
class SimFleet {
 public:
  explicit SimFleet(zmq::context_t* ctx) : ctx_(ctx) {}
  SimFleet(const SimFleet&) = delete;
  SimFleet& operator=(const SimFleet&) = delete;

  // Makes `n` workers from the enrollment token (which must have n uses
  // left), sends every ENROLL at once and waits for every WELCOME, then
  // every HELLO and waits again; joined workers heartbeat while the others
  // join. Sends no READY. A REJECT or the deadline is an error naming how
  // many workers got through.
  Status Join(std::string_view token, int n, const SimWorkerOptions& options,
              int timeout_ms);

  // READY(slots) from every worker.
  Status ReadyAll(uint32_t slots);

  // Busy workers: waits up to timeout_ms for input on any socket and runs
  // SimWorker::Step(0) on each worker that has some (answering ASSIGNs),
  // and on every worker once per `sweep_ms` so heartbeats go out.
  Status Pump(int timeout_ms, int sweep_ms = 200);

  // Idle workers: for `ms` milliseconds, sends each worker's HEARTBEAT every
  // `heartbeat_interval_ms` (spread evenly over the interval) and drains
  // what arrives every `drain_ms` without acting on it. Returns the number
  // of heartbeats sent.
  Result<uint64_t> Idle(int ms, int heartbeat_interval_ms, int drain_ms = 200);

  // Sum over the workers of SimWorkerStats::acks / ::results_sent / ::rejects.
  uint64_t acks() const;
  uint64_t results_sent() const;
  uint64_t rejects() const;

  size_t size() const { return workers_.size(); }
  SimWorker& worker(size_t i) { return *workers_[i]; }

 private:
  // Receives on every listed worker until each has `welcomes` WELCOMEs.
  Status WaitForWelcomes(const std::vector<size_t>& which, uint64_t welcomes,
                         int64_t deadline_ms, const char* phase);
  // Sends a HEARTBEAT from each joined worker (two WELCOMEs seen) that sent
  // none of ours for interval_ms.
  Status HeartbeatJoined(int interval_ms);

  zmq::context_t* ctx_;
  std::vector<std::unique_ptr<SimWorker>> workers_;
  std::vector<int64_t> last_heartbeat_ms_;  // per worker, our own sends
  double last_sweep_ = 0;
  int join_heartbeat_ms_ = 1000;
};

}  // namespace pcfarm
