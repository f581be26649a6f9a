#include "coordinator/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <zmq.hpp>

#include "base/clock.h"
#include "base/hex.h"
#include "base/peer_text.h"
#include "base/service_notify.h"
#include "coordinator/blob_store.h"
#include "coordinator/device_caps.h"
#include "coordinator/job_summary.h"
#include "coordinator/rate_limit.h"
#include "coordinator/scheduler.h"
#include "coordinator/setup.h"
#include "coordinator/store.h"
#include "coordinator/verify_policy.h"
#include "coordinator/wal_syncer.h"
#include "coordinator/zap_handler.h"
#include "coordinator/server_internal.h"
#include "coordinator/admin_queries.h"
#include "coordinator/cli/cli_common.h"
#include "crypto/hash.h"
#include "crypto/codec.h"
#include "crypto/keys.h"
#include "crypto/token.h"
#include "proto/wire.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

namespace {

// The WELCOME that tells a worker who it is and how often to heartbeat.
wire::CoordinatorFrame MakeWelcome(int64_t worker_id, const ServerOptions& o,
                                   const std::string& sign_pk) {
  wire::CoordinatorFrame f;
  auto* w = f.mutable_welcome();
  w->set_worker_id(static_cast<uint64_t>(worker_id));
  w->set_heartbeat_interval_ms(o.coordinator_heartbeat_interval_ms);
  w->set_heartbeat_liveness(o.coordinator_heartbeat_liveness);
  w->set_coordinator_sign_pk(sign_pk);
  if (o.max_output_blob_bytes > 0) {
    w->set_max_output_blob_bytes(uint64_t(o.max_output_blob_bytes));
    w->set_output_chunk_bytes(uint32_t(WireLimits{}.upload_chunk_bytes));
  }
  return f;
}

// The Curve public key libzmq authenticated for this message (ZAP User-Id),
// 32 raw bytes, or "" when there is none.
std::string ConnectionKey(zmq::message_t& payload) {
  try {
    const char* uid = payload.gets("User-Id");
    auto raw = HexDecode(uid ? uid : "", 32);
    if (raw.ok()) return *raw;
  } catch (const zmq::error_t&) {
  }
  return "";
}

}  // namespace

Result<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Open(
    const ServerOptions& options) {
  CryptoInit();
  if (options.coordinator_heartbeat_interval_ms < 10 ||
      options.coordinator_heartbeat_liveness < 1) {
    return InvalidArgument("heartbeat interval must be >= 10 ms and liveness >= 1");
  }
  CoordinatorPaths paths(options.data_dir);
  PCFARM_ASSIGN_OR_RETURN(CoordinatorConfig config,
                          LoadCoordinatorConfig(options.data_dir));
  if (!options.workers_endpoint.empty()) config.workers_endpoint = options.workers_endpoint;
  if (!options.clients_endpoint.empty()) config.clients_endpoint = options.clients_endpoint;
  if (options.http_endpoint) config.http_endpoint = *options.http_endpoint;
  PCFARM_ASSIGN_OR_RETURN(IdentityKeys keys, LoadKeyFile(paths.key_file));
  PCFARM_ASSIGN_OR_RETURN(auto store,
                          Store::Open(paths.db_file, SystemClock::Get()));
  PCFARM_ASSIGN_OR_RETURN(auto blobs, BlobStore::Open(paths.dir));
  if (options.min_free_disk_bytes < 0) {
    return InvalidArgument("--min-free-disk must not be negative");
  }
  if (options.max_output_blob_bytes < 0) {
    return InvalidArgument("the largest output blob must not be negative");
  }
  auto impl = std::make_unique<Impl>(options, config, std::move(keys),
                                     std::move(store), std::move(blobs));
  UploadOptions uo;
  uo.min_free_disk_bytes = options.min_free_disk_bytes;
  uo.chunk_bytes = int64_t(WireLimits{}.upload_chunk_bytes);
  std::string dir = paths.dir;
  impl->uploads = std::make_unique<Uploads>(impl->blobs.get(), uo,
                                            [dir] { return FreeDiskBytes(dir); });
  return std::unique_ptr<CoordinatorServer>(
      new CoordinatorServer(std::move(impl)));
}

CoordinatorServer::CoordinatorServer(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

CoordinatorServer::~CoordinatorServer() = default;

Status CoordinatorServer::Run() { return impl_->Run(&stop_, &counters_); }

ZapDecision CoordinatorServer::Impl::Decide(const std::string& domain,
                                            const std::string& key) {
  if (domain == "workers") {
    {
      std::lock_guard l(refused_mu);
      if (refused_keys.count(key)) {
        return {false, "unenrolled key that kept sending other messages"};
      }
    }
    auto w = store->FindWorkerByCurveKey(key);
    if (w.ok() && w->banned) return {false, "worker is banned"};
    // Unknown keys may connect, but may only ENROLL (checked per message).
    return {true, w.ok() ? "enrolled" : "enrollment only"};
  }
  if (domain == "clients") {
    auto c = store->FindClientByCurveKey(key);
    if (c.ok()) return {true, "client"};
    return {false, "unknown client key"};
  }
  return {false, "unknown ZAP domain"};
}

Status CoordinatorServer::Impl::Run(std::atomic<bool>* stop,
                                    ServerCounters* c) {
  counters = c;
  ZapHandler zap(&ctx, [this](const std::string& d, const std::string& k) {
    return Decide(d, k);
  });
  PCFARM_RETURN_IF_ERROR(zap.Start());
  auto make_server = [&](const char* domain, const std::string& ep,
                         size_t largest_frame,
                         std::unique_ptr<zmq::socket_t>* out) -> Status {
    try {
      auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::router);
      s->set(zmq::sockopt::linger, 0);
      s->set(zmq::sockopt::zap_domain, domain);
      s->set(zmq::sockopt::curve_server, 1);
      std::string sk = keys.curve.secret_key();
      s->set(zmq::sockopt::curve_secretkey, zmq::const_buffer(sk.data(), sk.size()));
      s->set(zmq::sockopt::sndhwm, 10000);
      s->set(zmq::sockopt::rcvhwm, 10000);
      s->set(zmq::sockopt::maxmsgsize, ZmqMaxMessageBytes(largest_frame));
      s->bind(ep);
      *out = std::move(s);
    } catch (const zmq::error_t& e) {
      return Unavailable(std::string("cannot bind ") + domain + " endpoint " +
                         ep + ": " + e.what());
    }
    return Status::Ok();
  };
  const WireLimits limits;
  PCFARM_RETURN_IF_ERROR(make_server("workers", config.workers_endpoint,
                                     MaxWorkerFrameBytes(limits), &workers_sock));
  PCFARM_RETURN_IF_ERROR(make_server("clients", config.clients_endpoint,
                                     MaxClientRequestBytes(limits), &clients_sock));
  spdlog::info("coordinator serving: workers on {}, clients on {}",
               config.workers_endpoint, config.clients_endpoint);
  PCFARM_RETURN_IF_ERROR(StartStatusPage());
  // Commits go to the OS at once and to the disk on the syncer's thread,
  // overlapping the next turns; replies still wait for the disk. The store
  // leaves synchronous=FULL only once there is a syncer to wait for.
  auto started = WalSyncer::Start([s = store.get(), c] {
    auto t0 = std::chrono::steady_clock::now();
    Status st = s->SyncWal();
    c->wal_fsync_s.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return st;
  });
  Status deferred = started.ok() ? store->EnableDeferredSync() : started.status();
  if (deferred.ok()) {
    syncer = std::move(*started);
  } else {
    spdlog::warn("deferred sync unavailable ({}); every commit waits for the disk",
                 deferred.ToString());
  }
  PCFARM_ASSIGN_OR_RETURN(advancer, Advancer::Start());
  for (const char* state : {"queued", "running"}) {
    auto active = store->ListJobs(state);
    if (!active.ok()) continue;
    for (const auto& j : *active) ShardBlobsOf(j.id, j.kind);
  }
  store->AddEvent("coordinator_started", 0, 0,
                  "serving workers on " + config.workers_endpoint).IgnoreError();

  // Leases that were live when the coordinator stopped belong to workers
  // that must HELLO again; they are released when their deadline passes or
  // when the worker does not come back within the liveness window.
  int64_t start = clock->MonotonicMs();
  int64_t next_tick = start + opts.coordinator_heartbeat_interval_ms;
  std::vector<zmq::message_t> parts;
  auto recv_parts = [&](zmq::socket_t& s) -> bool {
    parts.clear();
    while (true) {
      zmq::message_t m;
      if (!s.recv(m, zmq::recv_flags::dontwait)) return !parts.empty();
      parts.push_back(std::move(m));
      if (!parts.back().more()) return true;
    }
  };
  NotifyServiceReady();  // systemd's Type=notify: the sockets are bound
  try {
    while (!stop->load()) {
      NotifyServiceWatchdog();
      int64_t now = clock->MonotonicMs();
      int64_t wait = std::max<int64_t>(0, std::min<int64_t>(next_tick - now, 100));
      // The syncer's, the status page's and the advancer's fds; -1 (ignored
      // by poll) when off.
      zmq::pollitem_t items[] = {
          {workers_sock->handle(), 0, ZMQ_POLLIN, 0},
          {clients_sock->handle(), 0, ZMQ_POLLIN, 0},
          {nullptr, syncer ? syncer->notify_fd() : -1, ZMQ_POLLIN, 0},
          {nullptr, board ? board->notify_fd() : -1, ZMQ_POLLIN, 0},
          {nullptr, advancer->notify_fd(), ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 5, std::chrono::milliseconds(wait));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // a signal: look at `stop` again
      }
      if (syncer && (items[2].revents & ZMQ_POLLIN)) {
        syncer->Drain();
        FlushDurable();
      }
      now = clock->MonotonicMs();
      bool tick = now >= next_tick;
      bool actions = board && (items[3].revents & ZMQ_POLLIN);
      const bool advanced = items[4].revents & ZMQ_POLLIN;
      if (advanced) advancer->Drain();
      if (!(items[0].revents & ZMQ_POLLIN) && !(items[1].revents & ZMQ_POLLIN) &&
          !tick && !actions && !advanced) {
        continue;  // no turn, no commit, no sync
      }
      BeginTurn();
      if (advanced) ApplyAdvances();
      if (items[0].revents & ZMQ_POLLIN) {
        for (int i = 0; i < 1000 && recv_parts(*workers_sock); ++i) {
          counters->messages_in++;
          if (parts.size() != 2) {
            BadMessage(nullptr, parts[0].to_string(),
                       InvalidArgument("expected 1 frame after the routing id, got " +
                                       std::to_string(parts.size() - 1)));
            continue;
          }
          OnWorkerMessage(parts[0].to_string(), parts[1]);
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        for (int i = 0; i < 100 && recv_parts(*clients_sock); ++i) {
          if (parts.size() != 2) continue;
          OnClientMessage(parts[0].to_string(), parts[1]);
        }
      }
      if (actions) RunStatusActions();
      if (tick) {
        Tick(now);
        next_tick = now + opts.coordinator_heartbeat_interval_ms;
      }
      if (assign_all_due) {
        assign_all_due = false;
        AssignAll();
      }
      PCFARM_RETURN_IF_ERROR(EndTurn());
      if (board) PublishLiveView(clock->MonotonicMs(), actions);
    }
  } catch (const zmq::error_t& e) {
    return Internal(std::string("coordinator loop: ") + e.what());
  }
  return Stop(&zap);
}

void CoordinatorServer::Impl::SayGoingAway() {
  for (auto& [route, peer] : peers) {
    wire::CoordinatorFrame f;
    f.mutable_going_away()->set_reconnect_after_ms(
        static_cast<uint32_t>(opts.coordinator_going_away_reconnect_ms));
    f.mutable_going_away()->set_reason("the coordinator is stopping");
    Send(peer, std::move(f));
  }
}

Status CoordinatorServer::Impl::Stop(ZapHandler* zap) {
  NotifyServiceStopping();
  // The last turn has committed. Its replies go out once that commit is on
  // disk; then every worker hears that this coordinator is going away (not
  // lost), so it keeps its shards and reconnects to the next one.
  spdlog::info("coordinator stopping ({} workers connected)", peers.size());
  // A round being planned is finished and dropped: its blobs are on disk,
  // and the next start plans the same round again from the same results.
  advancer.reset();
  if (http) {
    // Actions still queued get no answer (they were not run): their
    // requests end at once instead of waiting out their timeout.
    board->TakeActions();
    http->Stop();
  }
  store->AddEvent("coordinator_stopped", 0, 0, "clean shutdown").IgnoreError();
  if (syncer) {
    Status st = syncer->WaitFor(commit_epoch);
    if (st.ok()) FlushDurable();
    syncer.reset();
    PCFARM_RETURN_IF_ERROR(store->SyncWal());
  }
  SayGoingAway();
  // Closing a socket drops what it has not sent yet: give it a bounded
  // time to hand the last replies and GOING_AWAY to the network.
  for (auto* s : {workers_sock.get(), clients_sock.get()}) {
    try {
      s->set(zmq::sockopt::linger, opts.coordinator_stop_linger_ms);
    } catch (const zmq::error_t&) {
    }
  }
  workers_sock.reset();
  clients_sock.reset();
  zap->Stop();
  return Status::Ok();
}

// ------------------------------------------------------------------ sending

void CoordinatorServer::Impl::SendTo(const std::string& route,
                                     wire::CoordinatorFrame frame) {
  frame.set_version(kProtocolVersion);
  std::string bytes = frame.SerializeAsString();
  if (batching) {
    // Nothing leaves before the batch is durable: an ACK is a promise.
    outbox.push_back({false, route, std::move(bytes), 0, nullptr});
    return;
  }
  SendBytes(*workers_sock, route, bytes);
}

void CoordinatorServer::Impl::SendBytes(zmq::socket_t& sock,
                                        const std::string& route,
                                        const std::string& bytes) {
  try {
    sock.send(zmq::buffer(route),
              zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    sock.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    spdlog::warn("send to {} failed: {}",
                 &sock == workers_sock.get() ? "worker" : "client", e.what());
  }
}

void CoordinatorServer::Impl::Send(Peer& peer, wire::CoordinatorFrame frame) {
  peer.last_send_ms = clock->MonotonicMs();
  SendTo(peer.route, std::move(frame));
}

void CoordinatorServer::Impl::Reject(Peer* peer, const std::string& route,
                                     wire::RejectReason reason,
                                     const std::string& detail,
                                     uint64_t attempt_id) {
  wire::CoordinatorFrame f;
  auto* r = f.mutable_reject();
  r->set_reason(reason);
  r->set_detail(detail);
  r->set_attempt_id(attempt_id);
  if (peer) {
    Send(*peer, std::move(f));
  } else {
    SendTo(route, std::move(f));
  }
}

void CoordinatorServer::Impl::BadMessage(Peer* peer, const std::string& route,
                                         const Status& why) {
  counters->bad_messages++;
  int bad = peer ? ++peer->bad_messages : 1;
  // Logged at most 10 a second from unknown routes and 20 a minute per
  // worker (a worker may reconnect and start its count again).
  int64_t held = peer ? bad_log.Allow(std::to_string(peer->worker_id), clock->MonotonicMs())
                      : unenrolled_log.Allow("bad", clock->MonotonicMs());
  if (held >= 0) {
    spdlog::warn("bad message from {}: {}{}",
                 peer ? EscapePeerText(peer->name) : HexEncode(route).substr(0, 12),
                 EscapePeerText(why.message()),
                 held ? " (" + std::to_string(held) + " more not logged)" : "");
  }
  Reject(peer, route, wire::REJECT_BAD_MESSAGE, why.message());
  if (peer && bad >= opts.coordinator_max_bad_messages) {
    DropPeer(route, "sent " + std::to_string(bad) + " bad messages");
    dropped.insert(route);
  }
}

void CoordinatorServer::Impl::BeginTurn() {
  Status s = store->BeginBatch();
  if (!s.ok()) {
    spdlog::warn("cannot open a batch ({}); committing one by one", s.ToString());
    return;
  }
  batching = true;
}

Status CoordinatorServer::Impl::EndTurn() {
  if (!batching) return Status::Ok();
  batching = false;
  auto commit_start = std::chrono::steady_clock::now();
  Status s = store->CommitBatch();
  counters->sqlite_commit_s.Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - commit_start).count());
  if (!s.ok()) {
    // Everything this turn did is rolled back: send none of it, and forget
    // what we thought of each worker; the next message from each one
    // starts over (WELCOME asks it to re-send its spool and free slots).
    spdlog::error("commit failed, this turn is undone: {}", s.ToString());
    ++turns_undone;
    outbox.clear();
    peers.clear();
    route_of.clear();
    return Status::Ok();
  }
  ++commit_epoch;
  if (!syncer) {
    for (const auto& o : outbox) SendOutgoing(o);
    outbox.clear();
    return Status::Ok();
  }
  for (auto& o : outbox) {
    o.epoch = commit_epoch;
    pending.push_back(std::move(o));
  }
  outbox.clear();
  syncer->Request(commit_epoch);
  FlushDurable();
  Status err = syncer->error();
  if (!err.ok()) {
    // What was committed may not be on disk: promise nothing more. A
    // restarted coordinator goes on from what the disk holds.
    return err.WithContext("the database could not be made durable");
  }
  return Status::Ok();
}

void CoordinatorServer::Impl::FlushDurable() {
  uint64_t durable = syncer->synced();
  while (!pending.empty() && pending.front().epoch <= durable) {
    SendOutgoing(pending.front());
    pending.pop_front();
  }
}

// ------------------------------------------------------------------ workers

void CoordinatorServer::Impl::OnWorkerMessage(const std::string& route,
                                              zmq::message_t& payload) {
  if (dropped.count(route)) return;
  std::string conn_key = ConnectionKey(payload);
  if (conn_key.empty()) {
    BadMessage(nullptr, route, PermissionDenied("no authenticated key"));
    return;
  }
  auto it = peers.find(route);
  Peer* peer = it == peers.end() ? nullptr : &it->second;
  auto frame = DecodeWorkerFrame(payload.to_string_view());
  if (!frame.ok()) {
    wire_errors.Add(frame.error());
    if (frame.error() == WireError::kWrongVersion) {
      OnOtherVersionWorker(route, conn_key, payload.to_string_view());
      return;
    }
    BadMessage(peer, route, frame.status());
    if (!peer) StrikeUnenrolled(route, conn_key);
    return;
  }
  if (frame->has_enroll()) {
    OnEnroll(route, conn_key, frame->enroll());
    return;
  }
  if (!peer) {
    auto w = store->FindWorkerByCurveKey(conn_key);
    if (!w.ok()) {
      counters->unenrolled_messages++;
      int64_t held = unenrolled_log.Allow("unenrolled", clock->MonotonicMs());
      if (held >= 0) {
        spdlog::warn("message from an unenrolled key {}: refused{}",
                     HexEncode(conn_key).substr(0, 16),
                     held ? " (" + std::to_string(held) + " more not logged)" : "");
      }
      Reject(nullptr, route, wire::REJECT_NOT_ENROLLED,
             "this key is not enrolled; run pcfarm-worker enroll --token T");
      StrikeUnenrolled(route, conn_key);
      return;
    }
    if (w->banned) {
      Reject(nullptr, route, wire::REJECT_BANNED, "this worker is banned");
      return;
    }
    // A worker we know reconnected (new route): forget its old route.
    auto old = route_of.find(w->id);
    if (old != route_of.end() && old->second != route) {
      peers.erase(old->second);
    }
    Peer p;
    p.route = route;
    p.worker_id = w->id;
    p.name = EscapePeerText(w->name);
    p.sign_pk = w->sign_pk;
    // What its last HELLO said of its devices (it sends none when the
    // coordinator restarted under its connection): shards that need memory
    // or a backend still match it.
    p.devices = nlohmann::json::parse(w->devices_json, nullptr, false);
    CapsFromDevices(p.devices, &p.caps, &p.gflops);
    // The public network it connects from, for the independence of a
    // shard's copies (scheduler.h).
    std::string network;
    try {
      const char* addr = payload.gets("Peer-Address");
      if (addr != nullptr) network = IndependenceNetwork(addr);
    } catch (const zmq::error_t&) {
    }
    if (network != w->network) store->SetWorkerNetwork(w->id, network).IgnoreError();
    // Leases from an earlier connection still count against its slots
    // (HELLO releases the ones it no longer holds).
    auto live = store->LiveAttempts(w->id);
    if (live.ok()) p.running.insert(live->begin(), live->end());
    peer = &(peers[route] = std::move(p));
    route_of[w->id] = route;
    outdated_workers.erase(w->id);  // it speaks our version again
    PeerEvent("worker_connected", w->id, "worker " + peer->name + " connected");
    if (!frame->has_hello()) {
      // A worker we have not heard HELLO from on this route (we restarted,
      // or its connection was re-established underneath it): WELCOME asks
      // it for a HELLO, which says which of its stored leases it still
      // holds (an ASSIGN sent just before we were killed may never have
      // reached it); our answer to it asks for its spool and free slots.
      auto welcome = MakeWelcome(w->id, opts, keys.sign.public_key());
      welcome.mutable_welcome()->set_hello_wanted(true);
      peer->hello_wanted_ms = clock->MonotonicMs();
      Send(*peer, std::move(welcome));
    }
  }
  peer->last_recv_ms = clock->MonotonicMs();
  switch (frame->msg_case()) {
    case wire::WorkerFrame::kHello:
      OnHello(*peer, frame->hello());
      break;
    case wire::WorkerFrame::kReady:
    {
      // ASSIGNs still on their way were not counted by the worker yet.
      // A worker may claim no more than it was sent, nor more free slots
      // than it declared; TryAssign also keeps its live leases within them.
      const auto& r = frame->ready();
      if (r.slots() > 0) DeclareSlots(*peer, r.slots());
      int64_t in_flight = 0;
      if (r.has_assigns_received()) {
        in_flight = int64_t(peer->assigns_sent) -
                    int64_t(std::min<uint64_t>(r.assigns_received(), peer->assigns_sent));
      }
      peer->free_slots = static_cast<int>(std::max<int64_t>(
          0, std::min<int64_t>(r.free_slots(), peer->slots) - in_flight));
      if (r.device_free_bytes_size() > 0) OnDeviceFree(*peer, r.device_free_bytes());
      TryAssign(*peer);
    }
      break;
    case wire::WorkerFrame::kHeartbeat:
      OnHeartbeat(*peer, frame->heartbeat());
      break;
    case wire::WorkerFrame::kResult:
      OnResult(*peer, frame->result());
      break;
    case wire::WorkerFrame::kBlobGet:
      OnBlobGet(*peer, frame->blob_get());
      break;
    case wire::WorkerFrame::kOutputBegin:
      OnOutputBegin(*peer, frame->output_begin());
      break;
    case wire::WorkerFrame::kOutputChunk:
      OnOutputChunk(*peer, std::move(*frame->mutable_output_chunk()));
      break;
    case wire::WorkerFrame::kBye:
      DropPeer(route, "said bye: " + EscapePeerText(frame->bye().reason()));
      break;
    default:
      BadMessage(peer, route, InvalidArgument("unexpected message type"));
  }
}

void CoordinatorServer::Impl::OnEnroll(const std::string& route,
                                       const std::string& conn_key,
                                       const wire::Enroll& e) {
  auto fail = [&](const std::string& why) {
    spdlog::warn("enrollment refused: {}", why);
    Reject(nullptr, route, wire::REJECT_BAD_TOKEN, why);
  };
  if (e.curve_pk() != conn_key) {
    fail("the Curve key in ENROLL is not the key of this connection");
    return;
  }
  if (e.sign_pk().size() != kSignPublicKeyBytes) {
    fail("sign_pk must be 32 bytes");
    return;
  }
  if (e.name().empty() || e.name().size() > 64) {
    fail("worker name must be 1..64 characters");
    return;
  }
  if (HasControlCharacters(e.name())) {
    fail("worker name must be printable UTF-8 without control characters");
    return;
  }
  auto secret = Base64UrlDecode(e.token_secret());
  if (!secret.ok() || secret->size() != kTokenSecretBytes) {
    fail("malformed token secret");
    return;
  }
  Hash256 h = SecretHash(*secret);
  auto id = store->EnrollWorker(HashToBytes(h), e.name(), e.sign_pk(), e.curve_pk());
  if (!id.ok()) {
    std::string why;
    switch (id.status().code()) {
      case StatusCode::kNotFound: why = "unknown token"; break;
      case StatusCode::kFailedPrecondition: why = "the token has expired"; break;
      case StatusCode::kResourceExhausted: why = "the token is used up"; break;
      case StatusCode::kAlreadyExists: why = "this key is already enrolled"; break;
      default: why = id.status().message();
    }
    fail(why);
    return;
  }
  spdlog::info("enrolled worker {} '{}'", *id, e.name());
  store->AddEvent("worker_enrolled", 0, *id, "worker " + e.name() + " enrolled")
      .IgnoreError();
  SendTo(route, MakeWelcome(*id, opts, keys.sign.public_key()));
}

void CoordinatorServer::Impl::DeclareSlots(Peer& peer, uint32_t slots) {
  if (peer.slots_declared) return;  // the first declaration holds
  peer.slots_declared = true;
  peer.slots = static_cast<int>(std::min<uint32_t>(
      std::max<uint32_t>(slots, 1),
      static_cast<uint32_t>(std::max(1, opts.coordinator_max_slots_per_worker))));
}

void CoordinatorServer::Impl::OnHello(Peer& peer, const wire::Hello& hello) {
  constexpr int kMaxDevices = 64;
  if (hello.devices_size() > kMaxDevices) {
    BadMessage(&peer, peer.route,
               InvalidArgument("HELLO lists " + std::to_string(hello.devices_size()) +
                               " devices; at most " + std::to_string(kMaxDevices)));
    return;
  }
  DeclareSlots(peer, hello.slots());
  peer.hello_wanted_ms = -1;
  // What it no longer holds (a restart lost it) is leased again now rather
  // than when its lease expires.
  std::vector<int64_t> held;
  for (uint64_t a : hello.running_attempts()) held.push_back(int64_t(a));
  for (uint64_t a : hello.spooled_attempts()) held.push_back(int64_t(a));
  auto rejoined = scheduler.WorkerRejoined(peer.worker_id, held);
  if (rejoined.ok()) {
    ActOn(*rejoined);
  } else {
    spdlog::warn("cannot release the old leases of worker {}: {}", peer.name,
                 rejoined.status().ToString());
  }
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : hello.devices()) {
    devices.push_back({{"index", d.index()}, {"backend", EscapePeerText(d.backend())},
                       {"name", EscapePeerText(d.name())}, {"memory_bytes", d.memory_bytes()},
                       {"cores", d.cores()}, {"gflops", d.gflops()},
                       {"fp16", d.fp16()}});
    if (d.free_bytes() > 0) devices.back()["free_bytes"] = d.free_bytes();
  }
  CapsFromDevices(devices, &peer.caps, &peer.gflops);
  peer.devices = devices;
  peer.blobs.clear();
  for (const auto& h : hello.cached_blobs()) {
    auto hash = HashFromBytes(h);
    if (hash.ok()) peer.blobs.insert(HashToHex(*hash));
  }
  store->SetWorkerDevices(peer.worker_id, devices.dump(), peer.gflops).IgnoreError();
  store->TouchWorker(peer.worker_id).IgnoreError();
  Send(peer, MakeWelcome(peer.worker_id, opts, keys.sign.public_key()));
}

void CoordinatorServer::Impl::OnDeviceFree(
    Peer& peer, const google::protobuf::RepeatedField<uint64_t>& free) {
  nlohmann::json updated;
  bool material = false;
  Status s = ApplyDeviceFree(peer.devices, std::span<const uint64_t>(free.data(), free.size()),
                             &updated, &material);
  if (!s.ok()) {
    // A worker from before a restart of ours whose HELLO we have not seen
    // yet, or a confused one: its leases go by what was stored.
    spdlog::debug("worker {}: free memory ignored: {}", peer.name, s.message());
    return;
  }
  // Leases to it go by what it just said; the check-candidate draw reads
  // the database, written only when some device moved materially.
  CapsFromDevices(updated, &peer.caps, &peer.gflops);
  if (material) {
    store->SetWorkerDevices(peer.worker_id, updated.dump(), peer.gflops).IgnoreError();
    peer.devices = std::move(updated);
  }
}

void CoordinatorServer::Impl::TryAssign(Peer& peer) {
  if (peer.hello_wanted_ms >= 0) return;  // its HELLO first (Peer)
  while (peer.free_slots > 0 &&
         static_cast<int>(peer.running.size()) < peer.slots) {
    auto lease = scheduler.LeaseNext(peer.worker_id, peer.caps);
    if (!lease.ok()) {
      spdlog::warn("lease for worker {} failed: {}", peer.name,
                   lease.status().ToString());
      return;
    }
    if (!lease->has_value()) return;
    const Lease& l = **lease;
    wire::ShardBody body;
    body.set_attempt_id(l.attempt_id);
    body.set_shard_id(l.shard_id);
    body.set_job_id(l.job_id);
    body.set_shard_index(static_cast<uint32_t>(l.shard_idx));
    body.set_worker_sign_pk(peer.sign_pk);
    body.set_kind(std::string(TaskKindOfJob(l.job_kind)));
    body.set_params(l.shard_params);
    body.set_issued_ms(clock->NowMs());
    body.set_deadline_ms(l.deadline_ms);
    body.set_nonce(RandomBytes(16));
    body.set_needs_backend(l.needs_backend);
    body.set_needs_memory_bytes(uint64_t(std::max<int64_t>(0, l.needs_memory_bytes)));
    std::vector<std::string> shard_blobs = ShardBlobsOf(l.job_id, l.job_kind);
    if (const JobPlanner* planner = FindPlanner(l.job_kind)) {
      for (auto& hex : planner->ShardOwnBlobs(l.shard_params)) shard_blobs.push_back(hex);
    }
    if (l.checks_result_id != 0) {
      // A check of another worker's result: the job's check kind, with the
      // claimed result as a blob it fetches.
      auto check = CheckShard(l);
      if (!check.ok()) {
        // The lease expires and the shard is offered again.
        spdlog::warn("cannot make the check of result {} (attempt {}): {}",
                     l.checks_result_id, l.attempt_id, check.status().ToString());
        return;
      }
      body.set_kind(check->kind);
      body.set_params(check->params);
      shard_blobs.push_back(check->claim_hash);
    }
    for (const auto& hex : shard_blobs) {
      auto hash = HashFromHex(hex);
      if (!hash.ok()) continue;
      body.add_blob_hashes(HashToBytes(*hash));
      peer.blobs.insert(hex);  // it fetches and caches them for this shard
    }
    std::string body_bytes = body.SerializeAsString();
    Status s = store->SetAttemptShardHash(l.attempt_id,
                                          HashToBytes(Blake2b256(body_bytes)));
    if (!s.ok()) {
      spdlog::warn("cannot record the shard hash of attempt {}: {}",
                   l.attempt_id, s.ToString());
      return;
    }
    wire::CoordinatorFrame f;
    *f.mutable_assign()->mutable_shard() = SealEnvelope(keys.sign, body_bytes);
    Send(peer, std::move(f));
    peer.running.insert(l.attempt_id);
    if (assigned_at_ms.size() > 1'000'000) assigned_at_ms.clear();
    assigned_at_ms[l.attempt_id] = clock->MonotonicMs();
    peer.free_slots--;
    peer.assigns_sent++;
    counters->shards_assigned++;
  }
}

Result<CheckShardBody> CoordinatorServer::Impl::CheckShard(const Lease& lease) {
  const JobPlanner* planner = FindPlanner(lease.job_kind);
  if (planner == nullptr || planner->check_kind().empty()) {
    return Internal("job kind '" + lease.job_kind + "' has no check kind");
  }
  PCFARM_ASSIGN_OR_RETURN(std::string claim, store->GetResultBody(lease.checks_result_id));
  PCFARM_ASSIGN_OR_RETURN(std::string hash, blobs->Put(claim));
  PCFARM_RETURN_IF_ERROR(store->RecordBlob(hash, static_cast<int64_t>(claim.size()),
                                            /*collectable=*/true));
  PCFARM_RETURN_IF_ERROR(store->LinkJobBlob(lease.job_id, hash));
  CheckShardBody out;
  out.kind = std::string(planner->check_kind());
  PCFARM_ASSIGN_OR_RETURN(out.params, planner->CheckParams(lease.shard_params, hash));
  out.claim_hash = std::move(hash);
  return out;
}

const std::vector<std::string>& CoordinatorServer::Impl::ShardBlobsOf(
    int64_t job_id, const std::string& kind) {
  auto it = job_shard_blobs.find(job_id);
  if (it != job_shard_blobs.end()) return it->second;
  std::vector<std::string> blobs_of_job;
  const JobPlanner* planner = FindPlanner(kind);
  auto job = store->GetJob(job_id);
  if (planner && job.ok()) blobs_of_job = planner->ShardBlobs(job->params);
  if (job_shard_blobs.size() > 10'000) job_shard_blobs.clear();
  return job_shard_blobs[job_id] = std::move(blobs_of_job);
}

void CoordinatorServer::Impl::AssignAll() {
  // Locality: idle workers that already hold blobs the pending jobs'
  // shards need (a model, say) are offered work before the others, so a
  // model is sent to as few workers as the work needs. Trust: workers
  // still proving themselves (a streak under kStreakBeforeSpotChecks: each
  // of their results is checked) are offered work before the others, so
  // that a new identity earns trust, or is caught, with its first shards
  // instead of waiting idle for good while the workers that took the
  // first shards keep the model and every later first copy. While a
  // pending shard's job checks results (verify auto or spot) trust comes
  // before locality (a new worker downloads the model once), and among the
  // workers still proving themselves the one furthest from trust (the
  // shortest streak: new, or just caught) goes first, so that a cheat is
  // not left idle behind honest workers that hold the model until the job
  // ends; otherwise (verify none or redundant: nothing is learnt) locality
  // comes first.
  // Then the fastest (by their measured bench speed) go first, counting a
  // worker's speed only once it has earned it with agreeing results
  // (scheduler.h).
  std::vector<Peer*> idle;
  for (auto& [route, peer] : peers) {
    if (peer.free_slots > 0) idle.push_back(&peer);
  }
  if (idle.empty()) return;
  // Once no shard is pending, the idle workers need not be asked (a farm
  // of thousands of idle PCs would cost a query each).
  auto pending = store->CountPendingShards();
  if (pending.ok() && *pending == 0) return;
  std::unordered_set<std::string> wanted;
  for (const auto& [job, hexes] : job_shard_blobs) wanted.insert(hexes.begin(), hexes.end());
  struct Rank {
    size_t held = 0;
    bool proving = false;
    int64_t streak = 0;
  };
  std::unordered_map<const Peer*, Rank> rank;
  for (Peer* p : idle) {
    Rank& r = rank[p];
    if (!wanted.empty()) {
      for (const auto& h : p->blobs) r.held += wanted.count(h);
    }
    auto w = store->GetWorker(p->worker_id);
    r.proving = w.ok() && w->streak < kStreakBeforeSpotChecks;
    r.streak = w.ok() ? w->streak : 0;
  }
  auto checked = store->CheckedWorkPending();
  const bool trust_first = checked.ok() && *checked;
  std::sort(idle.begin(), idle.end(), [&](const Peer* a, const Peer* b) {
    const Rank &ra = rank[a], &rb = rank[b];
    if (trust_first && ra.proving != rb.proving) return ra.proving;
    if (trust_first && ra.proving && ra.streak != rb.streak) return ra.streak < rb.streak;
    if (ra.held != rb.held) return ra.held > rb.held;
    if (ra.proving != rb.proving) return ra.proving;
    return a->earned_gflops > b->earned_gflops;
  });
  for (Peer* p : idle) {
    pending = store->CountPendingShards();
    if (pending.ok() && *pending == 0) return;
    TryAssign(*p);
  }
}

void CoordinatorServer::Impl::ActOn(const TransitionReport& report) {
  for (const auto& c : report.cancelled) {
    auto it = route_of.find(c.worker_id);
    if (it == route_of.end()) continue;
    auto p = peers.find(it->second);
    if (p == peers.end()) continue;
    wire::CoordinatorFrame f;
    f.mutable_cancel()->set_attempt_id(c.attempt_id);
    f.mutable_cancel()->set_reason("cancelled");
    Send(p->second, std::move(f));
    p->second.running.erase(c.attempt_id);
  }
  for (size_t i = 0; i < report.released_attempts.size(); ++i) {
    if (i < report.released_workers.size()) {
      auto it = route_of.find(report.released_workers[i]);
      if (it != route_of.end()) {
        auto p = peers.find(it->second);
        if (p != peers.end()) p->second.running.erase(report.released_attempts[i]);
      }
    }
    assign_all_due = true;  // its shard is pending again
  }
  for (int64_t job : report.failed_jobs) {
    job_shard_blobs.erase(job);
    spdlog::info("job {} failed", job);
    assign_all_due = true;  // its workers are free
  }
}

void CoordinatorServer::Impl::StrikeUnenrolled(const std::string& route,
                                               const std::string& conn_key) {
  if (unenrolled_strikes.size() > 100'000) unenrolled_strikes.clear();
  if (++unenrolled_strikes[route] < opts.coordinator_max_unenrolled_messages) return;
  unenrolled_strikes.erase(route);
  if (dropped.size() > 100'000) dropped.clear();
  dropped.insert(route);
  counters->unenrolled_dropped++;
  if (!conn_key.empty()) {
    std::lock_guard l(refused_mu);
    if (refused_keys.size() > 100'000) refused_keys.clear();
    refused_keys.insert(conn_key);
  }
  if (unenrolled_log.Allow("dropped", clock->MonotonicMs()) >= 0) {
    spdlog::warn("dropped a connection of unenrolled key {}: {} messages "
                 "other than ENROLL; the key is refused until restart",
                 HexEncode(conn_key).substr(0, 16),
                 opts.coordinator_max_unenrolled_messages);
  }
}

void CoordinatorServer::Impl::PeerEvent(const char* kind, int64_t worker_id,
                                        const std::string& message) {
  int64_t held = peer_events.Allow(std::to_string(worker_id), clock->MonotonicMs());
  if (held < 0) {
    counters->events_suppressed++;
    return;
  }
  std::string text = message;
  if (held > 0) {
    text += " (" + std::to_string(held) + " connect/disconnect events of this "
            "worker left out)";
  }
  spdlog::info("{}", text);
  store->AddEvent(kind, 0, worker_id, text).IgnoreError();
}

void CoordinatorServer::Impl::OnResult(Peer& peer,
                                       const wire::SignedEnvelope& env) {
  auto body = OpenResult(env, peer.sign_pk);
  if (!body.ok()) {
    wire_errors.Add(body.error());
    counters->results_rejected++;
    if (RejectReasonFor(body.error()) == wire::REJECT_BAD_SIGNATURE) {
      counters->results_forged++;
    }
    spdlog::warn("result from {} refused: {}", peer.name, body.status().message());
    // A bad signature, or a body over a field's limit.
    Reject(&peer, peer.route, RejectReasonFor(body.error()), body.status().message());
    return;
  }
  // An output uploaded as a blob is read back here: everything after sees
  // the bytes an inline output would have carried.
  auto resolved = ResolveOutput(peer, *body);
  if (!resolved.ok()) {
    if (resolved.status().code() == StatusCode::kNotFound) return;  // told to upload it
    counters->results_rejected++;
    spdlog::warn("result from {} for attempt {} refused: {}", peer.name, body->attempt_id(),
                 resolved.status().ToString());
    if (resolved.status().code() == StatusCode::kInvalidArgument) {
      Reject(&peer, peer.route, wire::REJECT_BAD_MESSAGE, resolved.status().message(),
             body->attempt_id());
    }
    return;  // else (a read failed) the worker sends it again when it reconnects
  }
  if (resolved->has_value()) body->set_output(std::move(**resolved));
  uint64_t attempt = body->attempt_id();
  int64_t round_trip_ms = 0;
  if (auto sent = assigned_at_ms.find(int64_t(attempt)); sent != assigned_at_ms.end()) {
    round_trip_ms = clock->MonotonicMs() - sent->second;
    counters->round_trip_s.Observe(double(round_trip_ms) / 1000.0);
    assigned_at_ms.erase(sent);
  }
  // The worker is done with it: its slot is free again, and the next shard
  // can leave in the same turn as the ACK (no READY round trip).
  bool was_running = peer.running.erase(static_cast<int64_t>(attempt)) > 0;
  if (was_running) peer.free_slots++;
  // An attempt with no recorded shard hash was never sent: nothing can
  // answer it.
  auto work = store->GetAttemptWork(static_cast<int64_t>(attempt));
  if (!work.ok() || work->shard_hash.empty() ||
      !ConstantTimeEqual(work->shard_hash, body->shard_body_hash())) {
    counters->results_rejected++;
    counters->results_forged++;
    spdlog::warn("result from {} for attempt {} answers another shard body",
                 peer.name, attempt);
    Reject(&peer, peer.route, wire::REJECT_UNKNOWN_ATTEMPT,
           "the result does not answer the shard that was assigned", attempt);
    return;
  }
  // The kind checks the output's size and shape before anything stores or
  // parses it further (also at redundancy 1, where no comparison runs); a
  // result it refuses counts as a failed attempt.
  std::string_view kind_name = TaskKindOfJob(work->kind);
  std::string params = work->params;
  if (work->checks_result_id != 0) {
    // A check: its kind and params as TryAssign made them (the claim's
    // blob hash is the hash of the checked result's body).
    const JobPlanner* planner = FindPlanner(work->kind);
    auto claim = store->GetResultBody(work->checks_result_id);
    Result<std::string> check_params =
        !planner   ? Result<std::string>(Internal("no planner for job kind '" + work->kind + "'"))
        : claim.ok() ? planner->CheckParams(work->params, HashToHex(Blake2b256(*claim)))
                     : Result<std::string>(claim.status());
    kind_name = planner ? planner->check_kind() : kind_name;
    params = check_params.ok() ? *check_params : std::string();
  }
  const TaskKind* kind = TaskKindRegistry::Builtin().Find(kind_name);
  Status shape = !body->ok() ? Status::Ok()
                 : kind      ? kind->ValidateOutput(params, body->output())
                             : Internal("no task kind '" + std::string(kind_name) + "'");
  if (!shape.ok()) {
    counters->results_invalid++;
    spdlog::warn("result from {} for attempt {} refused: {}", peer.name, attempt,
                 EscapePeerText(shape.message()));
  }
  if (!body->ok() && !body->unfetched_blob().empty()) {
    CheckServedBlob(peer, work->job_id, body->unfetched_blob());
  }
  Status failure;
  if (!body->ok() || !shape.ok()) {
    std::string error = !shape.ok() ? "invalid result: " + shape.message()
                                    : body->error();
    error = EscapePeerText(error, 1024);
    auto failed = scheduler.AttemptFailed(static_cast<int64_t>(attempt),
                                          peer.worker_id, error);
    if (failed.ok()) {
      spdlog::info("worker {} could not run attempt {}: {}", peer.name,
                   attempt, error);
      ActOn(*failed);
      if (shape.ok()) {
        wire::CoordinatorFrame f;
        f.mutable_ack()->set_attempt_id(attempt);
        Send(peer, std::move(f));
      } else {
        // Its spool may drop it: the attempt is over.
        Reject(&peer, peer.route, wire::REJECT_BAD_MESSAGE,
               EscapePeerText(shape.message(), 1024), attempt);
      }
      TryAssign(peer);
      return;
    }
    failure = failed.status();
  }
  Result<RecordOutcome> outcome =
      body->ok() ? scheduler.RecordResult(static_cast<int64_t>(attempt),
                                          peer.worker_id, body->output(),
                                          env.SerializeAsString())
                 : Result<RecordOutcome>(failure);
  if (!outcome.ok()) {
    counters->results_rejected++;
    bool replay = outcome.status().code() == StatusCode::kAlreadyExists;
    if (replay) counters->results_replayed++;
    spdlog::warn("result from {} for attempt {} refused: {}", peer.name,
                 attempt, outcome.status().ToString());
    Reject(&peer, peer.route, wire::REJECT_UNKNOWN_ATTEMPT,
           replay ? "this attempt was already answered"
                  : outcome.status().message(),
           attempt);
    return;
  }
  counters->results_accepted++;
  ActOn(outcome->report);
  if (work->checks_result_id == 0 && round_trip_ms > 0) MeasureSpeed(peer, *work, round_trip_ms);
  // Results that disagree leave the shard pending for another run.
  if (outcome->verdict == ResultVerdict::kDisagreed) assign_all_due = true;
  // The result is committed: only now may the worker forget it.
  wire::CoordinatorFrame f;
  f.mutable_ack()->set_attempt_id(attempt);
  Send(peer, std::move(f));
  if (outcome->job_finished) assign_all_due = true;
  if (outcome->check_ordered) assign_all_due = true;  // a check copy waits
  // Workers this judgement quarantined leave (the sender among them,
  // maybe: then `peer` is gone).
  const int64_t sender = peer.worker_id;
  bool sender_dropped = false;
  for (int64_t w : outcome->quarantined) {
    spdlog::warn("worker {} quarantined: caught disagreeing {} times", w,
                 kStrikesToQuarantine);
    sender_dropped = sender_dropped || w == sender;
    DropWorker(w, "quarantined: caught disagreeing");
    assign_all_due = true;
  }
  if (outcome->job_awaits_advance) AdvanceJobs();
  if (!sender_dropped) TryAssign(peer);
}

void CoordinatorServer::Impl::MeasureSpeed(Peer& peer, const AttemptWork& work,
                                           int64_t round_trip_ms) {
  const JobPlanner* planner = FindPlanner(work.kind);
  if (planner == nullptr) return;
  auto job = store->GetJob(work.job_id);
  if (!job.ok()) return;
  const double flops = planner->ShardFlops(job->params, work.params);
  if (!(flops > 0)) return;
  peer.measured.flops += flops;
  peer.measured.seconds += double(round_trip_ms) / 1000.0;
  peer.measured.shards++;
  if (peer.measured.shards < kShardsToMeasureSpeed) return;
  auto w = store->GetWorker(peer.worker_id);
  if (!w.ok()) return;
  peer.earned_gflops = EarnedSpeed(peer.gflops, w->agreed, peer.measured);
}

void CoordinatorServer::Impl::DropWorker(int64_t worker_id, const std::string& why) {
  auto r = route_of.find(worker_id);
  if (r == route_of.end()) return;
  std::string route = r->second;
  DropPeer(route, why);
  // The ZAP handler refuses it from now on; what it still sends is dropped.
  dropped.insert(route);
}

void CoordinatorServer::Impl::AdvanceJobs() {
  ApplyAdvances();
  auto running = store->RunningOpenEndedJobs();
  if (!running.ok()) {
    spdlog::warn("listing jobs to advance failed: {}", running.status().ToString());
    return;
  }
  const int64_t now = clock->NowMs();
  for (const JobInfo& job : *running) {
    if (advancer->InFlight(job.id)) continue;
    const JobPlanner* planner = FindPlanner(job.kind);
    if (planner == nullptr) {
      spdlog::warn("job {}: cannot plan its next round: no planner for job kind '{}'", job.id,
                   job.kind);
      continue;
    }
    if (!planner->ReadyToAdvance(job, now)) continue;
    // The planner reads the store and writes blobs; both are thread-safe.
    advancer->Submit(job.id, turns_undone,
                     [planner, job, s = store.get(), b = blobs.get(), now] {
                       Result<JobAdvance> adv = planner->Advance(job, *s, *b, now);
                       if (adv.ok()) adv->planned_summary = job.summary;
                       return adv;
                     });
  }
}

void CoordinatorServer::Impl::ApplyAdvances() {
  for (Advancer::Done& done : advancer->TakeDone()) {
    const int64_t job = done.job_id;
    if (done.tag != turns_undone) {
      // It may have read results a failed commit undid: planned again.
      spdlog::info("job {}: its next round was planned from an undone turn; planning it again",
                   job);
      continue;
    }
    if (!done.advance.ok()) {
      // Transient (a blob unreadable, the disk full): tried again each tick.
      spdlog::warn("job {}: cannot plan its next round yet: {}", job,
                   done.advance.status().ToString());
      continue;
    }
    const JobAdvance& adv = *done.advance;
    TransitionReport report;
    Status s = store->AdvanceJob(job, adv, &report);
    if (!s.ok()) {
      // FailedPrecondition: the job moved on while its round was planned (a
      // rewind, a cancel, a late result): the tick plans it again if due.
      spdlog::warn("job {}: advancing it failed: {}", job, s.ToString());
      continue;
    }
    if (adv.drop_unaccepted) {
      spdlog::info("job {}: round {} proceeds with its quorum, {} stragglers cancelled", job,
                   adv.round, report.cancelled.size());
    }
    ActOn(report);
    switch (adv.end) {
      case JobAdvance::End::kContinue:
        spdlog::info("job {}: round {} done, {} shards next (planned in {} ms)", job, adv.round,
                     adv.shards.size(), done.ms);
        break;
      case JobAdvance::End::kSucceed:
        spdlog::info("job {} succeeded: {}", job, adv.reason);
        break;
      case JobAdvance::End::kFail:
        spdlog::warn("job {} failed: {}", job, adv.reason);
        break;
    }
    assign_all_due = true;
  }
}

void CoordinatorServer::Impl::CollectBlobs(int64_t now_mono_ms) {
  if (blob_removal) {
    if (blob_removal->turns_undone != turns_undone) {
      blob_removal.reset();  // the deletion may have been undone: look again
    } else {
      const uint64_t durable = syncer ? syncer->synced() : commit_epoch;
      if (durable < blob_removal->epoch) return;
      int64_t removed = 0, bytes = 0;
      for (const std::string& h : blob_removal->hashes) {
        // Recorded again since (an upload, a planner's Put): it stays.
        auto again = store->HasBlob(h);
        if (!again.ok() || *again) continue;
        auto size = blobs->Size(h);
        auto gone = blobs->RemoveUnlessTouched(h, blob_removal->unused_since_unix_ms);
        if (!gone.ok()) {
          spdlog::warn("removing blob {}: {}", h.substr(0, 16), gone.status().ToString());
        } else if (*gone) {
          ++removed;
          bytes += size.ok() ? *size : 0;
        }
      }
      counters->blobs_removed += uint64_t(removed);
      counters->blob_bytes_removed += uint64_t(bytes);
      if (removed > 0) spdlog::info("removed {} blobs no job needs ({} bytes)", removed, bytes);
      blob_removal.reset();
    }
  }
  if (now_mono_ms < next_blob_collect_ms) return;
  next_blob_collect_ms = now_mono_ms + opts.coordinator_blob_collect_interval_ms;
  auto ended = store->EndedJobsToRelease(16);
  if (ended.ok()) {
    for (const JobInfo& job : *ended) {
      const JobPlanner* planner = FindPlanner(job.kind);
      std::optional<std::vector<std::string>> keep =
          planner ? planner->BlobsToKeep(job) : std::nullopt;
      if (!keep) {
        auto all = store->JobBlobs(job.id);
        if (!all.ok()) continue;
        keep = std::move(*all);
      }
      auto released = store->ReleaseJobBlobs(job.id, *keep);
      if (!released.ok()) {
        spdlog::warn("job {}: releasing its blobs: {}", job.id, released.status().ToString());
      } else if (*released > 0) {
        spdlog::info("job {} ended: {} of its blobs are no longer needed by it", job.id,
                     *released);
      }
    }
  }
  // Running open-ended jobs: the versions beyond the rewind horizon.
  if (auto running = store->RunningOpenEndedJobs(); running.ok()) {
    for (const JobInfo& job : *running) {
      const JobPlanner* planner = FindPlanner(job.kind);
      std::optional<std::vector<std::string>> keep =
          planner ? planner->BlobsToKeep(job) : std::nullopt;
      if (!keep) continue;  // the planner cannot tell its inputs: keep all
      auto trim = store->TrimRoundStarts(job.id, opts.rewind_keep_bytes, *keep);
      if (!trim.ok()) {
        spdlog::warn("job {}: releasing old versions: {}", job.id, trim.status().ToString());
      } else if (trim->starts > 0) {
        spdlog::info("job {}: a rewind now goes back to round {} at the earliest (--rewind-keep "
                     "{} bytes); {} blobs of earlier rounds released ({} bytes)",
                     job.id, trim->oldest_round, opts.rewind_keep_bytes, trim->blobs,
                     trim->bytes);
      }
    }
  }
  auto dropped = store->DropUnlinkedBlobs(clock->NowMs() - opts.blob_grace_ms, 256);
  if (!dropped.ok()) {
    spdlog::warn("collecting blobs: {}", dropped.status().ToString());
    return;
  }
  if (dropped->empty()) return;
  // This turn's commit deletes the records; the files go once it is durable
  // (a later tick), so a crash never leaves a record without its file.
  next_blob_collect_ms = now_mono_ms;  // more may wait: look again next tick
  // Files touched from now on (stored again) stay: the file system's clock.
  const int64_t now_unix = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  blob_removal = BlobRemoval{std::move(*dropped), commit_epoch + 1, turns_undone, now_unix};
}

void CoordinatorServer::Impl::OnBlobGet(Peer& peer, const wire::BlobGet& get) {
  auto hash = HashFromBytes(get.hash());
  if (!hash.ok()) {
    BadMessage(&peer, peer.route, hash.status());
    return;
  }
  std::string hex = HashToHex(*hash);
  uint32_t length = std::min<uint32_t>(get.length(), opts.blob_chunk_bytes);
  auto not_found = [&](const std::string& detail) {
    wire::CoordinatorFrame f;
    f.mutable_reject()->set_reason(wire::REJECT_NOT_FOUND);
    f.mutable_reject()->set_detail(detail);
    f.mutable_reject()->set_blob_hash(get.hash());
    Send(peer, std::move(f));
  };
  auto size = blobs->Size(hex);
  if (!size.ok()) {
    not_found("no blob " + hex);
    return;
  }
  auto data = blobs->ReadChunk(hex, static_cast<int64_t>(get.offset()), length);
  if (!data.ok()) {
    not_found(data.status().message());
    return;
  }
  counters->blob_bytes_sent += data->size();
  wire::CoordinatorFrame f;
  auto* c = f.mutable_blob_chunk();
  c->set_hash(get.hash());
  c->set_offset(get.offset());
  c->set_total_size(static_cast<uint64_t>(*size));
  c->set_data(std::move(*data));
  Send(peer, std::move(f));
}

void CoordinatorServer::Impl::DropPeer(const std::string& route,
                                       const std::string& why) {
  auto it = peers.find(route);
  if (it == peers.end()) return;
  int64_t worker = it->second.worker_id;
  PeerEvent("worker_lost", worker,
            "worker " + std::to_string(worker) + " '" + it->second.name +
                "' lost: " + why);
  store->WorkerGone(worker).IgnoreError();
  auto report = scheduler.WorkerLost(worker);
  if (report.ok()) ActOn(*report);
  counters->workers_lost++;
  route_of.erase(worker);
  peers.erase(it);
}

void CoordinatorServer::Impl::Tick(int64_t now) {
  int64_t silence_limit = int64_t(opts.coordinator_heartbeat_interval_ms) *
                          opts.coordinator_heartbeat_liveness;
  std::vector<std::string> lost;
  for (auto& [route, peer] : peers) {
    if (now - peer.last_recv_ms > silence_limit) {
      lost.push_back(route);
    } else if (now - peer.last_send_ms >= opts.coordinator_heartbeat_interval_ms) {
      wire::CoordinatorFrame f;
      f.mutable_heartbeat();
      Send(peer, std::move(f));
    }
  }
  for (const auto& route : lost) {
    DropPeer(route, "silent for " + std::to_string(silence_limit) + " ms");
  }
  auto expired = scheduler.ExpireLeases();
  if (expired.ok()) {
    ActOn(*expired);
  } else {
    spdlog::warn("expiring leases failed: {}", expired.status().ToString());
  }
  // Connected workers are touched; those not paused are available: a
  // check may be drawn for them (Store::LeaseShard) for 3 intervals.
  for (auto& [route, peer] : peers) {
    if (now - peer.last_recv_ms < opts.coordinator_heartbeat_interval_ms * 2) {
      store->TouchWorker(peer.worker_id, !peer.paused).IgnoreError();
    }
  }
  // A check's draw changes as streaks and availability change, with no
  // event of its own: the workers drawn now are offered work when idle.
  if (auto drawn = scheduler.DrawnCheckers(); drawn.ok()) {
    for (int64_t id : *drawn) {
      auto r = route_of.find(id);
      if (r == route_of.end()) continue;
      auto p = peers.find(r->second);
      if (p != peers.end() && p->second.free_slots > 0 && !p->second.paused) TryAssign(p->second);
    }
  } else {
    spdlog::warn("drawing checkers failed: {}", drawn.status().ToString());
  }
  // Idle workers are offered work again now and then, not only when a
  // shard changes: a shard may become theirs as time passes (a check drawn
  // for a worker that left or paused is drawn again within 15 s).
  if (now >= next_idle_assign_ms) {
    next_idle_assign_ms = now + kIdleAssignIntervalMs;
    for (const auto& [route, peer] : peers) {
      if (peer.free_slots > 0) {
        assign_all_due = true;
        break;
      }
    }
  }
  // Jobs that ended no longer pull workers toward their blobs.
  for (auto it = job_shard_blobs.begin(); it != job_shard_blobs.end();) {
    auto job = store->GetJob(it->first);
    bool active = job.ok() && (job->state == "queued" || job->state == "running");
    it = active ? std::next(it) : job_shard_blobs.erase(it);
  }
  // Open-ended jobs whose round ended while planning it failed, or before
  // a restart.
  AdvanceJobs();
  FinishBlobChecks();
  CollectBlobs(clock->MonotonicMs());
  auto pruned = store->PruneEvents(opts.coordinator_events_max_age_ms,
                                   opts.coordinator_events_max_rows);
  if (pruned.ok()) {
    counters->events_pruned += static_cast<uint64_t>(*pruned);
  } else {
    spdlog::warn("pruning events failed: {}", pruned.status().ToString());
  }
}

// ------------------------------------------------------------------ clients

void CoordinatorServer::Impl::OnClientMessage(const std::string& route,
                                              zmq::message_t& payload) {
  wire::ClientReply reply;
  reply.set_version(kProtocolVersion);
  auto client = store->FindClientByCurveKey(ConnectionKey(payload));
  auto req = DecodeClientRequest(payload.to_string_view());
  Status s;
  if (!client.ok()) {
    s = PermissionDenied("unknown client key");
  } else if (!req.ok()) {
    wire_errors.Add(req.error());
    s = req.error() == WireError::kWrongVersion
            ? OtherVersionClient(payload.to_string_view(), &reply)
            : req.status();
  } else {
    reply.set_request_id(req->request_id());
    s = HandleClient(*client, *req, &reply);
  }
  if (!s.ok()) {
    reply.clear_msg();
    reply.mutable_error()->set_code(StatusCodeName(s.code()));
    reply.mutable_error()->set_message(s.message());
    if (!req.ok() && req.error() == WireError::kWrongVersion) {
      reply.mutable_error()->set_speaks_version(kProtocolVersion);
    }
  }
  std::string bytes = reply.SerializeAsString();
  if (batching) {
    // A reply (a job id, say) promises what the turn committed.
    outbox.push_back({true, route, std::move(bytes), 0, nullptr});
    return;
  }
  SendBytes(*clients_sock, route, bytes);
}

// ------------------------------------------------------------- status page

Status CoordinatorServer::Impl::StartStatusPage() {
  if (config.http_endpoint.empty()) return Status::Ok();
  PCFARM_ASSIGN_OR_RETURN(board, StatusBoard::Make());
  StatusHttpOptions o;
  o.endpoint = config.http_endpoint;
  o.tls_cert_file = opts.http_tls_cert_file;
  o.tls_key_file = opts.http_tls_key_file;
  o.insecure = opts.http_insecure;
  o.metrics_public = opts.http_metrics_public;
  o.data_dir = opts.data_dir;
  PublishLiveView(clock->MonotonicMs(), true);
  auto started = StatusHttpServer::Start(o, board.get(), counters);
  if (!started.ok()) return started.status().WithContext("--http-endpoint");
  http = std::move(*started);
  return Status::Ok();
}

void CoordinatorServer::Impl::PublishLiveView(int64_t now_ms, bool force) {
  if (!force && live_view_published_ms >= 0 && now_ms - live_view_published_ms < 250) return;
  live_view_published_ms = now_ms;
  uint64_t results = counters->results_accepted.load();
  if (result_samples.empty() || now_ms - result_samples.back().first >= 1000) {
    result_samples.emplace_back(now_ms, results);
    while (result_samples.size() > 11) result_samples.pop_front();
  }
  auto view = std::make_shared<LiveView>();
  view->taken_ms = clock->NowMs();
  view->running.reserve(peers.size());
  for (const auto& [route, peer] : peers) {
    view->running[peer.worker_id] = uint32_t(peer.running.size());
    if (peer.paused) view->paused[peer.worker_id] = peer.paused_reason;
  }
  view->outdated.insert(outdated_workers.begin(), outdated_workers.end());
  const auto& first = result_samples.front();
  if (now_ms > first.first) {
    view->results_per_s = double(results - first.second) * 1000.0 / double(now_ms - first.first);
  }
  board->Publish(std::move(view));
}

void CoordinatorServer::Impl::RunStatusActions() {
  for (auto& pending : board->TakeActions()) {
    auto deliver = [reply = pending.reply,
                    result = RunStatusAction(pending.action)]() mutable {
      reply->set_value(std::move(result));
    };
    if (batching) {
      // Answered once the turn's commit is durable, as a CLI reply is.
      Outgoing o;
      o.deliver = std::move(deliver);
      outbox.push_back(std::move(o));
    } else {
      deliver();
    }
  }
}

StatusActionResult CoordinatorServer::Impl::RunStatusAction(const StatusAction& action) {
  // The status page acts as the admin, under its own name in events.
  ClientInfo page;
  page.name = "the status page";
  page.role = ClientRole::kAdmin;
  wire::ClientRequest req;
  wire::ClientReply reply;
  switch (action.kind) {
    case StatusAction::Kind::kCancelJob: {
      req.mutable_cancel_job()->set_job_id(uint64_t(action.id));
      Status s = HandleClient(page, req, &reply);
      if (!s.ok()) return {s, {}};
      return {Status::Ok(), JobJson(reply.cancel_job().job())};
    }
    case StatusAction::Kind::kCreateToken: {
      req.mutable_token_create()->set_uses(action.uses);
      req.mutable_token_create()->set_ttl_ms(action.ttl_ms);
      Status s = HandleClient(page, req, &reply);
      if (!s.ok()) return {s, {}};
      const auto& t = reply.token_create();
      return {Status::Ok(),
              {{"token", t.token()}, {"uses", t.uses()}, {"expires_ms", t.expires_ms()}}};
    }
    case StatusAction::Kind::kQuarantineWorker: {
      auto report = scheduler.Quarantine(action.id, "quarantined from the status page");
      if (!report.ok()) return {report.status(), {}};
      ActOn(*report);
      assign_all_due = true;
      DropWorker(action.id, "quarantined from the status page");
      break;
    }
    case StatusAction::Kind::kUnbanWorker: {
      Status s = store->UnbanWorker(action.id, "from the status page");
      if (!s.ok()) return {s, {}};
      break;
    }
  }
  auto w = store->GetWorker(action.id);
  if (!w.ok()) return {w.status(), {}};
  WorkerLiveState live;
  live.connected = route_of.count(action.id) > 0;
  return {Status::Ok(), WorkerJson(WorkerToWire(*w, live))};
}

}  // namespace pcfarm
