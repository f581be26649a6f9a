// The coordinator's server state, shared by the event loop (server.cc) and
// the client request handlers (client_requests.cc). Internal to the
// coordinator: nothing outside coordinator/ includes it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "coordinator/blob_store.h"
#include "coordinator/http/status_board.h"
#include "coordinator/http/status_http.h"
#include "coordinator/job_summary.h"
#include "coordinator/jobs/planner.h"
#include "coordinator/rate_limit.h"
#include "coordinator/scheduler.h"
#include "coordinator/server.h"
#include "coordinator/setup.h"
#include "coordinator/store.h"
#include "coordinator/uploads.h"
#include "coordinator/advancer.h"
#include "coordinator/wal_syncer.h"
#include "coordinator/zap_handler.h"
#include "crypto/keys.h"
#include "proto/pcfarm.pb.h"
#include "proto/wire.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

// What the coordinator knows of one connected worker.
struct Peer {
  std::string route;  // ROUTER routing id
  int64_t worker_id = 0;
  std::string name;
  std::string sign_pk;
  DeviceCaps caps;
  // Its devices as last stored in workers.devices (HELLO, then READYs'
  // free memory when it moved materially: device_caps.h).
  nlohmann::json devices;
  // Shards it may hold at once: the first count this connection declared
  // (HELLO or READY), capped by the coordinator's limit; 1 until then.
  int slots = 1;
  bool slots_declared = false;
  int free_slots = 0;
  uint64_t assigns_sent = 0;  // on this route
  double gflops = 0;  // best measured device speed, from HELLO
  // Its shards of known work that came back on this connection, and the
  // speed that orders it among idle workers: `gflops` held to them, and
  // 0 until it earned it (scheduler.h EarnedSpeed).
  MeasuredSpeed measured;
  double earned_gflops = 0;
  int64_t last_recv_ms = 0;
  int64_t last_send_ms = 0;
  int bad_messages = 0;
  // Its leased attempts, also those leased on an earlier connection: never
  // more than `slots`.
  std::unordered_set<int64_t> running;
  // Blobs (hex) it holds in its cache: what its HELLO listed and what the
  // shards it was sent needed. Idle workers holding the blobs of pending
  // jobs are offered work first (AssignAll).
  std::unordered_set<std::string> blobs;
  // Its idle policy paused it (the PC's owner is back, ...): alive, not
  // lost, but it wants no work. From its HEARTBEATs (worker_pause.cc).
  bool paused = false;
  std::string paused_reason;
  // Output uploads begun on this connection: hash (bytes) -> attempt.
  std::unordered_map<std::string, uint64_t> output_uploads;
  // When a WELCOME asked it for a HELLO (it was taken up without one, and
  // `running` is only what the store holds): no ASSIGN until the HELLO has
  // said which of those it still holds, or until heartbeat_liveness
  // intervals passed (a worker that does not know to answer). -1: none.
  int64_t hello_wanted_ms = -1;
};

// What a check attempt runs (CoordinatorServer::Impl::CheckShard).
struct CheckShardBody {
  std::string kind;
  std::string params;
  std::string claim_hash;  // hex
};

class CoordinatorServer::Impl {
 public:
  Impl(const ServerOptions& o, const CoordinatorConfig& c, IdentityKeys k,
       std::unique_ptr<Store> s, std::unique_ptr<BlobStore> b)
      : opts(o),
        config(c),
        keys(std::move(k)),
        store(std::move(s)),
        blobs(std::move(b)),
        scheduler(store.get(),
                  SchedulerOptions{o.scheduler_lease_ms, o.scheduler_max_attempts,
                                   3 * int64_t(o.coordinator_heartbeat_interval_ms)}),  // Tick
        ctx(1) {
    for (const auto& name : TaskKindRegistry::Builtin().Names()) {
      const TaskKind* kind = TaskKindRegistry::Builtin().Find(name);
      scheduler.verifier().Register(
          name, [kind](std::string_view a, std::string_view b) {
            return kind->Agree(a, b);
          });
    }
    // Job kinds whose shards run another task kind compare like it.
    for (const auto& planner : AllPlanners()) {
      const TaskKind* kind = TaskKindRegistry::Builtin().Find(planner->task_kind());
      if (planner->task_kind() == planner->kind() || !kind) continue;
      scheduler.verifier().Register(
          std::string(planner->kind()),
          [kind](std::string_view a, std::string_view b) { return kind->Agree(a, b); });
    }
    // Job kinds checked by a cheaper kind than a second run (infer:
    // infer_check) read its verdicts with their planner.
    for (const auto& planner : AllPlanners()) {
      if (planner->check_kind().empty()) continue;
      const JobPlanner* p = planner.get();
      scheduler.verifier().RegisterCheck(
          std::string(planner->kind()),
          [p](std::string_view output) { return p->CheckHolds(output); });
    }
    scheduler.set_summary_fold(FoldWithPlanner);
  }

  Status Run(std::atomic<bool>* stop, ServerCounters* counters);
  // After the loop: the last replies, GOING_AWAY to workers, sockets closed.
  Status Stop(ZapHandler* zap);
  // At a stop: tells every connected worker the coordinator is going away.
  void SayGoingAway();

 private:
  // ---- sending ----
  void Send(Peer& peer, wire::CoordinatorFrame frame);
  void SendTo(const std::string& route, wire::CoordinatorFrame frame);
  void SendBytes(zmq::socket_t& sock, const std::string& route,
                 const std::string& bytes);
  // Group commit: everything one poll turn does (worker and client
  // messages, the tick) runs inside one Store batch; what it sends waits in
  // `outbox` until it is committed, then in `pending` until the WalSyncer
  // made that commit durable (FlushDurable).
  void BeginTurn();
  Status EndTurn();
  void FlushDurable();
  void Reject(Peer* peer, const std::string& route, wire::RejectReason reason,
              const std::string& detail, uint64_t attempt_id = 0);

  // ---- workers ----
  void OnWorkerMessage(const std::string& route, zmq::message_t& payload);
  void OnEnroll(const std::string& route, const std::string& conn_key,
                const wire::Enroll& enroll);
  void OnHello(Peer& peer, const wire::Hello& hello);
  void OnResult(Peer& peer, const wire::SignedEnvelope& env);
  void OnBlobGet(Peer& peer, const wire::BlobGet& get);
  // Result outputs as blobs (output_uploads.cc).
  void OnOutputBegin(Peer& peer, const wire::OutputBegin& begin);
  void OnOutputChunk(Peer& peer, wire::OutputChunk&& chunk);
  // False (and the worker told why) unless outputs may be uploaded for
  // `attempt` by `peer`.
  bool OutputUploadAllowed(Peer& peer, uint64_t attempt, const std::string& hash);
  // The output a result names by ResultBody.output_blob, read from the blob
  // store; nullopt when it travels inline. NotFound when the blob is not
  // held (the worker was told to upload it: drop the result for now);
  // InvalidArgument for a result that names one badly.
  Result<std::optional<std::string>> ResolveOutput(Peer& peer, const wire::ResultBody& body);
  // A failed result naming a blob its worker could not fetch whole
  // (ResultBody.unfetched_blob, blob_checks.cc): re-hashes our copy when
  // the blob is the attempt's job's, on a thread of its own.
  void CheckServedBlob(Peer& peer, int64_t job_id, const std::string& hash_bytes);
  // Acts on the re-hashes that finished: a damaged copy is set aside
  // (BlobStore::SetAside) and the queued and running jobs that need it fail.
  void FinishBlobChecks();
  // Pause state and attempts handed back (worker_pause.cc).
  void OnHeartbeat(Peer& peer, const wire::Heartbeat& hb);
  void DropPeer(const std::string& route, const std::string& why);
  // Drops the connection of a banned worker, if it has one.
  void DropWorker(int64_t worker_id, const std::string& why);
  // READY's device_free_bytes: the worker's caps now, stored when moved.
  void OnDeviceFree(Peer& peer, const google::protobuf::RepeatedField<uint64_t>& free);
  void TryAssign(Peer& peer);
  void AssignAll();
  void DeclareSlots(Peer& peer, uint32_t slots);
  // Counts a message an unenrolled connection should not have sent; past
  // coordinator_max_unenrolled_messages the route is dropped and its key
  // refused at the handshake.
  void StrikeUnenrolled(const std::string& route, const std::string& conn_key);
  // A frame of another protocol version (mixed_versions.cc): a worker gets
  // REJECT_WRONG_VERSION naming both versions and what to upgrade, and an
  // enrolled one is listed as outdated; a client gets a ClientError with
  // speaks_version. Counted in both cases.
  void OnOtherVersionWorker(const std::string& route, const std::string& conn_key,
                            std::string_view bytes);
  Status OtherVersionClient(std::string_view bytes, wire::ClientReply* reply);
  // Stores a connect/disconnect event and logs it, at most
  // coordinator_peer_events_per_minute per worker.
  void PeerEvent(const char* kind, int64_t worker_id, const std::string& message);
  void ActOn(const TransitionReport& report);
  void BadMessage(Peer* peer, const std::string& route, const Status& why);
  void Tick(int64_t now);
  // Plans and applies the next round of every open-ended job whose shards
  // so far are all accepted (JobPlanner::Advance, Store::AdvanceJob).
  // Applies the next rounds the advancer planned, then hands it the running
  // open-ended jobs ready for their next round.
  void AdvanceJobs();
  // Applies the advancer's answers (Store::AdvanceJob) and acts on them.
  void ApplyAdvances();
  // Blob garbage collection (ServerOptions::blob_grace_ms): releases ended
  // jobs' blobs, deletes the records of blobs no job needs, and removes
  // their files once that deletion is durable.
  void CollectBlobs(int64_t now_mono_ms);
  // Renews the leases of the attempts a heartbeat says the worker runs or
  // uploads the output of (Store::RenewLeases) and tells the worker their
  // new deadlines.
  void RenewLeases(Peer& peer, const std::vector<int64_t>& attempts);

  // ---- clients ----
  void OnClientMessage(const std::string& route, zmq::message_t& payload);
  // `req` is the decoded request; an upload chunk's bytes are moved out.
  Status HandleClient(const ClientInfo& client, wire::ClientRequest& req,
                      wire::ClientReply* reply);
  Result<wire::JobInfo> JobToWire(const JobInfo& job);
  // The job, when `client` may see it (an admin: any; a submitter: its own);
  // NotFound otherwise.
  Result<JobInfo> OwnJob(const ClientInfo& client, int64_t job_id);
  std::string ClientName(int64_t client_id);
  // The blobs every shard of the job needs (its planner's ShardBlobs),
  // remembered per job.
  const std::vector<std::string>& ShardBlobsOf(int64_t job_id, const std::string& kind);
  // The kind, params and claim blob of the check attempt `lease` (the
  // checked result's body is put into the blob store and linked to the job).
  Result<CheckShardBody> CheckShard(const Lease& lease);
  // Tick offers idle workers work at least this often (monotonic ms).
  static constexpr int64_t kIdleAssignIntervalMs = 5000;
  int64_t next_idle_assign_ms = 0;
  // Counts a returned shard's work and time toward `peer`'s measured speed
  // and updates the speed that orders it (EarnedSpeed).
  void MeasureSpeed(Peer& peer, const AttemptWork& work, int64_t round_trip_ms);

  ZapDecision Decide(const std::string& domain, const std::string& key);

  // ---- the status page (coordinator/http/) ----
  // Starts it when opts.http_endpoint is set.
  Status StartStatusPage();
  // Runs the actions the status page queued, inside the turn; each is
  // answered once the turn is durable.
  void RunStatusActions();
  StatusActionResult RunStatusAction(const StatusAction& action);
  // Publishes the view of the connected workers, at most every 250 ms.
  void PublishLiveView(int64_t now_ms, bool force);

 public:
  ServerOptions opts;
  CoordinatorConfig config;
  IdentityKeys keys;
  std::unique_ptr<Store> store;
  std::unique_ptr<BlobStore> blobs;
  std::unique_ptr<Uploads> uploads;
  Scheduler scheduler;
  // Per job: the blobs its shards need (filled at submit, and lazily).
  std::unordered_map<int64_t, std::vector<std::string>> job_shard_blobs;
  std::unordered_map<int64_t, std::string> client_names;  // by client id
  zmq::context_t ctx;
  std::unique_ptr<zmq::socket_t> workers_sock;
  std::unique_ptr<zmq::socket_t> clients_sock;
  std::unordered_map<std::string, Peer> peers;            // by route
  std::unordered_map<int64_t, std::string> route_of;      // worker id -> route
  std::unordered_set<std::string> dropped;                // garbage senders
  std::unordered_map<std::string, int> unenrolled_strikes;  // by route
  // Enrolled workers whose last frame spoke another protocol version, by
  // worker id: that version. Refused and shown as outdated; a frame of
  // this version from the worker removes it.
  std::unordered_map<int64_t, uint32_t> outdated_workers;
  // Keys of dropped unenrolled connections; the ZAP thread reads it.
  std::mutex refused_mu;
  std::unordered_set<std::string> refused_keys;
  KeyedRateLimit peer_events{opts.coordinator_peer_events_per_minute, 60'000};
  KeyedRateLimit unenrolled_log{10, 1'000};
  KeyedRateLimit bad_log{20, 60'000};
  // A shard became pending again this turn (a failure, a disagreement, a
  // lost or expired lease): every idle worker is offered work at the end of
  // the turn, not only the one that answered.
  bool assign_all_due = false;
  ServerCounters* counters = nullptr;
  WireCounters wire_errors;
  bool batching = false;
  struct Outgoing {
    bool to_client = false;  // clients_sock, else workers_sock
    std::string route;
    std::string bytes;
    uint64_t epoch = 0;  // the commit it waits for
    // Set: an answer to the status page, delivered instead of sending.
    std::function<void()> deliver;
  };
  void SendOutgoing(const Outgoing& o) {
    if (o.deliver) {
      o.deliver();
      return;
    }
    SendBytes(o.to_client ? *clients_sock : *workers_sock, o.route, o.bytes);
  }
  std::vector<Outgoing> outbox;  // this turn's, not committed yet
  std::deque<Outgoing> pending;  // committed, waiting to be durable
  std::unique_ptr<WalSyncer> syncer;  // null: each commit is durable itself
  uint64_t commit_epoch = 0;
  // Turns whose commit failed and were undone: an advance planned before one
  // may have read what it undid, and is dropped (ApplyAdvances).
  uint64_t turns_undone = 0;
  // Plans open-ended jobs' rounds off this loop; declared after the store
  // and the blob store, so it stops before they close.
  std::unique_ptr<Advancer> advancer;
  int64_t next_blob_collect_ms = 0;  // monotonic
  // Blobs whose records this process deleted: their files go once the
  // commit that deleted them (`epoch`) is durable, unless a turn was undone
  // meanwhile (the records may be back).
  struct BlobRemoval {
    std::vector<std::string> hashes;
    uint64_t epoch = 0;
    uint64_t turns_undone = 0;
    int64_t unused_since_unix_ms = 0;
  };
  std::optional<BlobRemoval> blob_removal;
  const Clock* clock = SystemClock::Get();
  // The status page: null when it is off.
  std::unique_ptr<StatusBoard> board;
  std::unique_ptr<StatusHttpServer> http;
  int64_t live_view_published_ms = -1;  // monotonic
  // (monotonic ms, results_accepted) a second apart, for results_per_s.
  std::deque<std::pair<int64_t, uint64_t>> result_samples;
  // When each attempt's ASSIGN was sent (monotonic ms), for round_trip_s.
  std::unordered_map<int64_t, int64_t> assigned_at_ms;
  // Blobs a worker could not fetch whole (blob_checks.cc): the re-hash of
  // our copy running on its own thread, by hex; and when each was last
  // found whole (monotonic ms), so that claims cost one re-hash a blob per
  // kBlobRecheckMs.
  std::map<std::string, std::future<Status>> blob_checks;
  std::unordered_map<std::string, int64_t> blob_found_whole_ms;
};

}  // namespace pcfarm
