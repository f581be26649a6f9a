// WorkerDaemon: `pcfarm-worker run` (DESIGN.md §5–6, §10).
//
// One CurveZMQ DEALER to the pinned coordinator. It says HELLO (devices,
// cached blobs, spooled results), re-sends every spooled result, and asks
// for work with READY. Each ASSIGN is checked before anything is done with
// it: the coordinator's signature over the exact bytes, that it names this
// worker, its deadline, and that its attempt was never seen (replays). Blobs
// a shard names are fetched in chunks with several requests in flight and
// verified before use. Shards run on executor threads through the compiled-in
// task kinds; each result is signed, put in the spool (fsynced), then sent,
// and removed from the spool only when the coordinator ACKs it.
//
// Heartbeats both ways: the worker sends one when it has been quiet for an
// interval; when it hears nothing for `liveness` intervals it drops the
// connection and reconnects with exponential backoff and jitter. A
// coordinator that says GOING_AWAY (it is stopping) is not lost: the worker
// keeps running its shards and spooling their results, and reconnects when
// told, then with the same backoff, without counting the silence.
//
// A coordinator of another protocol version answers REJECT_WRONG_VERSION;
// the worker logs what it says to upgrade (once per connection) and asks
// again each heartbeat interval until one of the two is upgraded.
//
// Stopping (RequestStop, i.e. SIGTERM) releases the running shards rather
// than finishing them: a shard may run for minutes or hours, a stop must be
// prompt, and a shard is a pure function another worker can run again. The
// worker cancels them, says BYE (the coordinator leases them again at
// once), sends its spooled results, and returns within
// worker_stop_grace_ms; a task kind that does not see its cancel flag in
// that time is left behind (Run returns Timeout and the process should exit
// without waiting for it). Results finished before the stop stay in the
// spool for the next run.
//
// Thread-safety: Run() on one thread; RequestStop() from any thread or a
// signal handler.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace pcfarm {

class IdlePolicy;

struct WorkerOptions {
  std::string data_dir;
  // Shards run at once.
  int worker_slots = 1;
  // The compute backend shards run on: "auto" (the best that starts here),
  // "cpu", "vulkan", "cuda"; and its device index.
  std::string worker_backend = "auto";
  int worker_device_index = 0;
  // Quiet time after which the worker sends a heartbeat.
  int worker_heartbeat_interval_ms = 1000;
  // Silent intervals after which the coordinator counts as lost.
  int worker_heartbeat_liveness = 3;
  // Reconnect backoff: first wait, doubled up to the cap, with ±25% jitter.
  int worker_reconnect_initial_ms = 250;
  int worker_reconnect_max_ms = 30'000;
  // Blob cache size cap.
  uint64_t worker_blob_cache_bytes = uint64_t(20) << 30;
  // Chunk requests in flight per blob download, and bytes per chunk.
  int worker_blob_credit = 8;
  int worker_blob_chunk_bytes = 256 * 1024;
  // At a stop: how long cancelled shards may take to return.
  int worker_stop_grace_ms = 5000;
  // CPU backend threads (0 = all cores) and GPU memory shards may use
  // (0 = the device's own; HELLO reports no more than this).
  int worker_cpu_threads = 0;
  uint64_t worker_max_gpu_memory_bytes = 0;
  // When set, shards are taken and run only while it says the PC is idle
  // (evaluated every check_interval_ms); when it says no, running shards
  // pause at their next check point, READY offers no slots, and HEARTBEATs
  // say paused. A pause longer than max_pause_ms, or one that would outlast
  // a shard's lease, hands the shard back (released_attempts). Null: always
  // run (tests, and `run` without a config file).
  std::shared_ptr<IdlePolicy> idle_policy;
};

struct WorkerCounters {
  std::atomic<uint64_t> shards_run{0};
  std::atomic<uint64_t> shards_refused{0};  // bad signature, not ours, replay, late
  std::atomic<uint64_t> results_acked{0};
  std::atomic<uint64_t> reconnects{0};
  std::atomic<uint64_t> coordinator_going_away{0};  // GOING_AWAY frames heard
  std::atomic<uint64_t> leases_renewed{0};  // attempts whose deadline LEASE_RENEWAL moved
  std::atomic<uint64_t> blob_bytes_received{0};
  std::atomic<uint64_t> output_bytes_sent{0};  // result outputs uploaded as blobs
  std::atomic<uint64_t> pauses{0};             // idle policy said no while running
  std::atomic<uint64_t> attempts_released{0};  // handed back after a long pause
};

class WorkerDaemon {
 public:
  static Result<std::unique_ptr<WorkerDaemon>> Open(const WorkerOptions& options);
  ~WorkerDaemon();

  // Serves until RequestStop(); then releases its running shards and says
  // BYE (see the top of this file). Results not yet ACKed stay in the spool
  // for the next run. Timeout when a cancelled shard did not return within
  // worker_stop_grace_ms: its thread still runs, so the caller should exit
  // the process (std::_Exit) rather than destroy the daemon.
  Status Run();
  void RequestStop() { stop_.store(true); }
  const WorkerCounters& counters() const { return counters_; }

 private:
  class Impl;
  explicit WorkerDaemon(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
  WorkerCounters counters_;
};

// `pcfarm-worker enroll`: makes this PC's keys in `data_dir`, pins the
// coordinator's keys from the token, and registers with the coordinator.
// InvalidArgument for a malformed token, PermissionDenied for a refused one
// (unknown, used up, expired: the message says which), Unavailable when the
// coordinator does not answer within `timeout_ms`. AlreadyExists when the
// directory already holds an enrolled worker.
Status EnrollWorker(const std::string& token_text, const std::string& data_dir,
                    const std::string& name, int timeout_ms);

}  // namespace pcfarm
