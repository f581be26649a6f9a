// Workers paused by their idle policy (issue 13): a worker whose PC's owner
// came back keeps its connection and heartbeats, so it is never counted as
// lost; its HEARTBEATs say it is paused (shown by `pcfarm workers`) and may
// hand back attempts it will not finish in time, which are leased again at
// once instead of when their lease runs out.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <vector>

#include "base/peer_text.h"
#include "coordinator/server_internal.h"

namespace pcfarm {

void CoordinatorServer::Impl::OnHeartbeat(Peer& peer, const wire::Heartbeat& hb) {
  if (peer.hello_wanted_ms >= 0 &&
      clock->MonotonicMs() - peer.hello_wanted_ms >=
          int64_t(opts.coordinator_heartbeat_interval_ms) * opts.coordinator_heartbeat_liveness) {
    // It heartbeats but sent no HELLO when asked: a worker from before
    // Welcome.hello_wanted. It gets work again; leases it does not hold
    // end when they expire.
    spdlog::info("worker {} did not answer with a HELLO; its stored leases stand",
                 peer.name);
    peer.hello_wanted_ms = -1;
    assign_all_due = true;
  }
  // The reason is the peer's text: escaped, and short enough for a table.
  std::string reason = EscapePeerText(hb.paused_reason().substr(0, 200));
  if (hb.paused() != peer.paused) {
    PeerEvent(hb.paused() ? "worker_paused" : "worker_resumed", peer.worker_id,
              "worker " + peer.name + (hb.paused() ? " paused: " + reason : " resumed"));
  }
  peer.paused = hb.paused();
  peer.paused_reason = hb.paused() ? reason : "";
  // Its READY said so too; this covers a READY still on its way.
  if (peer.paused) peer.free_slots = 0;
  // Running attempts keep their leases unless paused (a long pause hands
  // them on); uploading ones always (the computation is done).
  std::vector<int64_t> renew;
  if (!peer.paused)
    for (const auto& r : hb.running()) renew.push_back(int64_t(r.attempt_id()));
  for (uint64_t a : hb.uploading()) renew.push_back(int64_t(a));
  if (!renew.empty()) RenewLeases(peer, renew);
  if (hb.released_attempts_size() == 0) return;
  // Only its own live attempts can be handed back: every other one it
  // holds (as the store knows them) stays leased.
  auto live = store->LiveAttempts(peer.worker_id);
  if (!live.ok()) {
    spdlog::warn("cannot read the attempts of worker {}: {}", peer.name,
                 live.status().ToString());
    return;
  }
  std::vector<int64_t> keep;
  for (int64_t a : *live) {
    bool released = std::find(hb.released_attempts().begin(), hb.released_attempts().end(),
                              uint64_t(a)) != hb.released_attempts().end();
    if (!released) keep.push_back(a);
  }
  if (keep.size() == live->size()) return;
  spdlog::info("worker {} handed back {} attempts ({})", peer.name,
               live->size() - keep.size(), reason);
  auto report = scheduler.WorkerRejoined(peer.worker_id, keep);
  if (report.ok()) {
    ActOn(*report);
  } else {
    spdlog::warn("cannot release attempts of worker {}: {}", peer.name,
                 report.status().ToString());
  }
}

void CoordinatorServer::Impl::RenewLeases(Peer& peer, const std::vector<int64_t>& attempts) {
  if (attempts.size() > 4096) return;  // more than any worker holds
  auto renewed = store->RenewLeases(peer.worker_id, attempts, opts.scheduler_lease_ms,
                                    opts.scheduler_max_attempt_ms);
  if (!renewed.ok()) {
    spdlog::warn("cannot renew the leases of worker {}: {}", peer.name,
                 renewed.status().ToString());
    return;
  }
  if (renewed->empty()) return;
  // One frame per deadline (they are all now + lease but for capped ones).
  std::map<int64_t, std::vector<int64_t>> by_deadline;
  for (const auto& r : *renewed) by_deadline[r.deadline_ms].push_back(r.attempt_id);
  for (const auto& [deadline, ids] : by_deadline) {
    wire::CoordinatorFrame f;
    auto* l = f.mutable_lease_renewal();
    for (int64_t id : ids) l->add_attempt_ids(uint64_t(id));
    l->set_deadline_ms(deadline);
    Send(peer, std::move(f));
  }
  counters->leases_renewed += renewed->size();
}

}  // namespace pcfarm
