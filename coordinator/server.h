// CoordinatorServer: the coordinator daemon's event loop (DESIGN.md §5–6).
//
// Owns two CurveZMQ ROUTER sockets — workers (ENROLL, HELLO, READY,
// HEARTBEAT, RESULT, BLOB_GET, BYE) and CLI clients (ClientRequest) — and the
// ZAP handler that admits keys. Every state change goes through the Store
// (one SQLite transaction each); a RESULT is ACKed only after RecordResult
// committed it. Heartbeats both ways every `heartbeat_interval_ms`; a worker
// silent for `heartbeat_liveness` intervals is lost and its shards are
// leased again.
//
// Data directory (made by `pcfarm-coordinator init`, see coordinator/setup.h):
//   coordinator.key   Ed25519 + Curve25519 identity (0600)
//   coordinator.db    SQLite store (WAL)
//   blobs/            content-addressed blob files
//   partial/          uploads in progress (kept across restarts)
//   config.json       endpoints
//   admin.profile     the admin's CLI profile (0600)
//
// Stopping (RequestStop, i.e. SIGTERM): the turn under way ends and
// commits, the replies it holds go out once their commit is on disk, every
// connected worker gets GOING_AWAY (it keeps its shards and reconnects to
// the next coordinator instead of counting it lost), and Run() returns,
// within coordinator_stop_linger_ms of the last reply queued.
//
// Thread-safety: Run() is called from one thread; RequestStop() from any
// thread or a signal handler (it only stores to an atomic).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/status.h"
#include "coordinator/latency_histogram.h"

namespace pcfarm {

struct ServerOptions {
  std::string data_dir;
  // Overrides of config.json; "" keeps the configured endpoint.
  std::string workers_endpoint;
  std::string clients_endpoint;
  // How often each side sends a heartbeat when it has nothing else to say.
  int coordinator_heartbeat_interval_ms = 1000;
  // Intervals of silence after which a worker is lost.
  int coordinator_heartbeat_liveness = 3;
  // How long a worker holds a shard before it is leased again, unless its
  // heartbeats say it still runs it (not paused): then the lease is renewed
  // (Store::RenewLeases), up to scheduler_max_attempt_ms from its start.
  int64_t scheduler_lease_ms = 60'000;
  int64_t scheduler_max_attempt_ms = 24 * 3'600'000;
  // Failed attempts (expired, lost, failed) after which a shard fails its job.
  int scheduler_max_attempts = 5;
  // Bytes per BLOB_CHUNK.
  int blob_chunk_bytes = 256 * 1024;
  // Bad messages after which a peer is dropped.
  int coordinator_max_bad_messages = 20;
  // Messages other than ENROLL an unenrolled connection may send (each is
  // refused with REJECT_NOT_ENROLLED) before it is dropped and its key is
  // refused at the handshake until the coordinator restarts.
  int coordinator_max_unenrolled_messages = 10;
  // The most shards one worker holds at once, whatever slot count its HELLO
  // declares.
  int coordinator_max_slots_per_worker = 64;
  // Connect and disconnect events (and their log lines) stored per worker
  // per minute; the ones over it are counted, and the next one stored says
  // how many were left out.
  int coordinator_peer_events_per_minute = 6;
  // Events older than this, and all but the newest
  // coordinator_events_max_rows, are deleted (checked every heartbeat tick).
  int64_t coordinator_events_max_age_ms = 30LL * 24 * 3600 * 1000;
  int64_t coordinator_events_max_rows = 100'000;
  // Blob garbage collection, every coordinator_blob_collect_interval_ms: an
  // ended job keeps only the blobs its planner names (inputs, output), and
  // a blob linked to no job is deleted once recorded longer than
  // blob_grace_ms ago (a worker's uploaded output, copied into the results
  // table; an upload no job was submitted with).
  int64_t coordinator_blob_collect_interval_ms = 60'000;
  int64_t blob_grace_ms = 3600LL * 1000;
  // A running fine-tuning job keeps the versions and optimizer states of
  // its latest rounds, as many as fit in this many bytes (beside the
  // current ones), so that a quarantine can rewind it to before a banned
  // worker's results (Store::TrimRoundStarts); older ones are released.
  int64_t rewind_keep_bytes = int64_t(4) << 30;
  // Uploads that would leave less than this free on the data directory's
  // disk are refused.
  int64_t min_free_disk_bytes = int64_t(1) << 30;
  // The largest result output a worker may upload as a blob (a train
  // result's tensors; output_uploads.cc); 0: outputs travel inline only,
  // at most 8 MiB. Such an output is also stored in the results table.
  int64_t max_output_blob_bytes = int64_t(512) << 20;
  // At a stop: how long the sockets may take to hand the last replies and
  // GOING_AWAY frames to the network before they are closed.
  int coordinator_stop_linger_ms = 1000;
  // At a stop: when workers are told to reconnect (GoingAway), enough for
  // a restart to bind again; they back off as usual after it.
  int coordinator_going_away_reconnect_ms = 500;
  // The status page, JSON API and /metrics (coordinator/http/status_http.h):
  // HOST:PORT to bind, "" for none; unset: config.json's (127.0.0.1:7072
  // by default). A host other than loopback needs http_tls_cert_file +
  // http_tls_key_file, or http_insecure.
  std::optional<std::string> http_endpoint;
  std::string http_tls_cert_file;
  std::string http_tls_key_file;
  bool http_insecure = false;
  // /metrics answers without the token.
  bool http_metrics_public = false;
};

// The counters the server keeps (also shown by tests and benches).
struct ServerCounters {
  std::atomic<uint64_t> messages_in{0};
  std::atomic<uint64_t> bad_messages{0};
  std::atomic<uint64_t> results_accepted{0};   // stored (any verdict)
  std::atomic<uint64_t> results_rejected{0};   // forged, replayed, unknown
  std::atomic<uint64_t> results_replayed{0};   // a result for an answered attempt
  std::atomic<uint64_t> results_forged{0};     // bad signature or shard hash
  std::atomic<uint64_t> shards_assigned{0};
  std::atomic<uint64_t> workers_lost{0};
  std::atomic<uint64_t> unenrolled_messages{0};
  std::atomic<uint64_t> unenrolled_dropped{0};  // connections dropped for it
  std::atomic<uint64_t> results_invalid{0};     // refused by the kind's shape check
  std::atomic<uint64_t> events_suppressed{0};   // by the per-worker event limit
  std::atomic<uint64_t> events_pruned{0};       // by the retention rule
  std::atomic<uint64_t> blob_bytes_sent{0};
  std::atomic<uint64_t> blobs_removed{0};       // by the blob collector
  std::atomic<uint64_t> blob_bytes_removed{0};
  std::atomic<uint64_t> upload_bytes_received{0};
  std::atomic<uint64_t> uploads_completed{0};
  std::atomic<uint64_t> uploads_deduplicated{0};  // begun for a stored blob
  std::atomic<uint64_t> output_uploads_completed{0};  // result outputs as blobs
  std::atomic<uint64_t> leases_renewed{0};  // by heartbeats of running attempts
  // Frames refused for another protocol version (answered with what to
  // upgrade), from workers and from CLI clients.
  std::atomic<uint64_t> worker_version_refusals{0};
  std::atomic<uint64_t> client_version_refusals{0};
  // From an ASSIGN sent to the RESULT that answers it.
  LatencyHistogram round_trip_s{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  // One turn's SQLite COMMIT, and one fdatasync of the WAL (WalSyncer).
  LatencyHistogram sqlite_commit_s{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                   0.01, 0.025, 0.05, 0.1, 0.25, 1};
  LatencyHistogram wal_fsync_s{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                               0.01, 0.025, 0.05, 0.1, 0.25, 1};
};

class CoordinatorServer {
 public:
  static Result<std::unique_ptr<CoordinatorServer>> Open(
      const ServerOptions& options);
  ~CoordinatorServer();

  // Binds the sockets and serves until RequestStop(). Returns OK on a clean
  // stop, or why it could not serve (an endpoint in use, say).
  Status Run();
  void RequestStop() { stop_.store(true); }

  const ServerCounters& counters() const { return counters_; }

 private:
  class Impl;
  explicit CoordinatorServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> stop_{false};
  ServerCounters counters_;
};

}  // namespace pcfarm
