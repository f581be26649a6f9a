// SimWorker: an in-process pcfarm worker that speaks the worker protocol
// (DESIGN.md §4–5) directly, for integration tests and benchmarks.
//
// It owns its own identity keys (IdentityKeys) and one CurveZMQ DEALER
// socket to the coordinator's workers endpoint, with the coordinator's Curve
// and signing keys pinned (from an enrollment token, or given). It can do
// everything an honest worker does — ENROLL, HELLO, READY, HEARTBEAT,
// verify an ASSIGN, run the real task kind (tasks/kinds), send a signed
// RESULT — and it can misbehave on demand: the building blocks are public
// (SealResult on a ResultBody the caller changed, WithForgedSignature,
// sending the same envelope twice, connecting with keys that were never
// enrolled).
//
// Two ways to drive it:
//   * step by step: Send*() then Receive()/Expect(), for tests that check
//     exactly what the coordinator answers;
//   * Step(timeout_ms): one turn of an honest worker's loop (answer every
//     ASSIGN with a computed RESULT and a new READY, answer an unasked-for
//     WELCOME — a restarted coordinator — with the HELLO it asks for, then
//     READY, send heartbeats when due). Never blocks longer than timeout_ms, so one thread can run many
//     SimWorkers (benchmarks poll socket() of each with zmq::poll and call
//     Step(0) on the ready ones).
//
// Ownership: the zmq::context_t passed in must outlive the SimWorker.
// Thread-safety: none; one thread drives a SimWorker at a time (ZeroMQ
// sockets must not be shared between threads).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "base/status.h"
#include "crypto/keys.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

struct SimWorkerOptions {
  // Sent in ENROLL; 1..64 characters.
  std::string name = "sim-worker";
  // Slots declared in HELLO and READY, and free_slots announced in READY
  // (after HELLO and after every result).
  uint32_t slots = 1;
  // Heartbeat interval until WELCOME tells the coordinator's.
  int heartbeat_interval_ms = 200;
  // When true, Step() answers every ASSIGN honestly; when false Step() only
  // records what arrives (ASSIGNs queue up in pending_assignments()).
  bool auto_work = true;
  // The speed its HELLO claims for its one device, GFLOP/s.
  double gflops = 1.0;
  // Where RunAssignment's kinds find blobs (RunContext::blob_path): a
  // BLAKE2b-256 hex hash to a local file of its bytes. A SimWorker downloads
  // nothing; empty means kinds that need blobs (infer, train) fail.
  // CoordinatorBlobPath (below) reads the coordinator's own blob store.
  std::function<Result<std::string>(std::string_view hash_hex)> blob_path;
  // CPU threads of the kinds' backend (RunContext::cpu_threads; 0: all).
  int cpu_threads = 0;
  // Its one device's memory_bytes (HELLO) and free_bytes (HELLO and, when
  // not 0, every READY's device_free_bytes).
  uint64_t memory_bytes = uint64_t(1) << 30;
  uint64_t free_bytes = 0;
};

// What a SimWorker has seen and sent (read by tests and benchmarks).
struct SimWorkerStats {
  uint64_t welcomes = 0;
  uint64_t assigns = 0;          // ASSIGN frames received
  uint64_t bad_assigns = 0;      // ASSIGNs that failed verification
  uint64_t acks = 0;
  uint64_t cancels = 0;
  uint64_t heartbeats_in = 0;
  uint64_t results_sent = 0;
  uint64_t rejects = 0;
  std::map<int, uint64_t> rejects_by_reason;  // wire::RejectReason -> count
  wire::Reject last_reject;
};

// A verified shard: the envelope exactly as received and its parsed body.
struct SimAssignment {
  wire::SignedEnvelope envelope;
  wire::ShardBody body;
};

class SimWorker {
 public:
  // Fresh identity keys; endpoint and coordinator keys pinned from the
  // enrollment token text. InvalidArgument for a malformed token.
  static Result<std::unique_ptr<SimWorker>> FromToken(
      zmq::context_t* ctx, std::string_view token, SimWorkerOptions options);

  // `coordinator_curve_pk` and `coordinator_sign_pk` are 32 raw bytes each.
  SimWorker(zmq::context_t* ctx, std::string endpoint,
            std::string coordinator_curve_pk, std::string coordinator_sign_pk,
            IdentityKeys keys, SimWorkerOptions options);
  ~SimWorker();

  SimWorker(const SimWorker&) = delete;
  SimWorker& operator=(const SimWorker&) = delete;

  // Opens the DEALER socket and connects (ZeroMQ connects in the
  // background). Closes any previous socket first (a reconnect).
  Status Connect();
  void Disconnect();

  // ---- sending: never block; Unavailable when ZeroMQ cannot queue it ----
  // ENROLL with the secret of the token this worker was made from.
  // REQUIRES: made by FromToken.
  Status SendEnroll();
  Status SendHello(const std::vector<uint64_t>& spooled_attempts = {});
  Status SendReady(uint32_t free_slots);
  Status SendHeartbeat();
  // A HEARTBEAT with these fields (running attempts, paused, uploading...).
  Status SendHeartbeat(const wire::Heartbeat& hb);
  Status SendResult(const wire::SignedEnvelope& result);
  Status SendBye(const std::string& reason);
  // Any bytes as one frame (garbage, wrong versions...).
  Status SendRaw(std::string_view bytes);

  // ---- receiving ----
  // Waits up to timeout_ms for one frame. nullopt when none came; an error
  // status for bytes that do not decode as a CoordinatorFrame. Updates
  // stats() (and the heartbeat interval from WELCOME) but does not act.
  Result<std::optional<wire::CoordinatorFrame>> Receive(int timeout_ms);

  // Receives until a frame of `what` arrives, and returns it. Frames of
  // other types are counted; ASSIGNs among them are verified and kept in
  // pending_assignments(); heartbeats are sent when due. A REJECT (when
  // `what` is not kReject) becomes a PermissionDenied status carrying the
  // reason name and detail; Timeout when nothing fitting came in time.
  Result<wire::CoordinatorFrame> Expect(wire::CoordinatorFrame::MsgCase what,
                                        int timeout_ms);

  // ---- whole exchanges ----
  // Connect() if needed, ENROLL, and wait for WELCOME. A REJECT becomes a
  // PermissionDenied status with its detail ("unknown token", ...).
  Status Enroll(int timeout_ms);
  // Connect() if needed, HELLO, wait for WELCOME, then READY(slots).
  Status Join(int timeout_ms);

  // ---- shards and results ----
  // Verifies an ASSIGN as a worker must: the coordinator's signature over
  // the exact body, the shard addressed to this worker's key, the deadline
  // not passed, a compiled-in kind.
  Result<SimAssignment> OpenAssign(const wire::Assign& assign) const;
  // Runs the shard's task kind and returns the (unsigned) result body,
  // bound to the shard body's hash. A failure of the kind is a body with
  // ok=false and `error` set.
  wire::ResultBody RunAssignment(const SimAssignment& a) const;
  // The same with `params` in place of the shard's own (a cheat that runs
  // the kind on other inputs); the body is still bound to `a`'s shard.
  wire::ResultBody RunAssignmentWith(const SimAssignment& a, std::string_view params) const;
  // Signs `body` with this worker's key.
  wire::SignedEnvelope SealResult(const wire::ResultBody& body) const;
  // A copy of `envelope` whose signature no longer verifies.
  static wire::SignedEnvelope WithForgedSignature(wire::SignedEnvelope envelope);

  // Verified ASSIGNs received but not yet answered (by Expect, Receive
  // with auto_work off, or Step with auto_work off). Take them out to own them.
  std::vector<SimAssignment>& pending_assignments() { return pending_; }

  // One turn of the honest loop; see the header comment.
  Status Step(int timeout_ms);

  const IdentityKeys& keys() const { return keys_; }
  const SimWorkerStats& stats() const { return stats_; }
  const SimWorkerOptions& options() const { return options_; }
  // The free memory its next READYs report (SimWorkerOptions::free_bytes).
  void set_free_bytes(uint64_t bytes) { options_.free_bytes = bytes; }
  uint64_t worker_id() const { return worker_id_; }
  // The socket, for zmq::poll over many workers. Null before Connect().
  zmq::socket_t* socket() { return sock_.get(); }

 private:
  Status Send(wire::WorkerFrame frame);
  void Note(const wire::CoordinatorFrame& frame);
  Status Handle(const wire::CoordinatorFrame& frame);
  Status HeartbeatIfDue();
  Status AnswerPending();

  zmq::context_t* ctx_;
  std::string endpoint_;
  std::string coordinator_curve_pk_;
  std::string coordinator_sign_pk_;
  std::string token_secret_;  // raw bytes; empty unless made by FromToken
  IdentityKeys keys_;
  SimWorkerOptions options_;
  std::unique_ptr<zmq::socket_t> sock_;
  int heartbeat_interval_ms_;
  int64_t last_send_ms_ = 0;
  uint64_t worker_id_ = 0;
  std::vector<SimAssignment> pending_;
  SimWorkerStats stats_;
  uint64_t assigns_on_connection_ = 0;  // sent with READY
};

// "REJECT_NOT_ENROLLED" etc.
std::string RejectReasonName(int reason);

// A blob_path for SimWorkerOptions that resolves a hash to the file of the
// coordinator's blob store under `coordinator_dir` (a MiniCluster's
// coordinator_dir()), which holds every uploaded blob: a test shortcut for
// the download a real worker makes. NotFound when it is not there.
std::function<Result<std::string>(std::string_view)> CoordinatorBlobPath(
    std::string coordinator_dir);

}  // namespace pcfarm
