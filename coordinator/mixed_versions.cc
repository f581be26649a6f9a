// Peers of another protocol version (docs/architecture.md, "Versions"): a
// worker or a CLI whose frames carry another `version` gets an answer it
// can read whatever its version (the frozen fields of pcfarm.proto) naming
// both versions and what to upgrade; the coordinator counts it and lists
// such a worker as outdated instead of dropping it in silence.
#include <spdlog/spdlog.h>

#include "base/hex.h"
#include "base/peer_text.h"
#include "coordinator/server_internal.h"

namespace pcfarm {

void CoordinatorServer::Impl::OnOtherVersionWorker(const std::string& route,
                                                   const std::string& conn_key,
                                                   std::string_view bytes) {
  counters->worker_version_refusals++;
  // DecodeWorkerFrame parsed it before it looked at the version.
  wire::WorkerFrame raw;
  raw.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  const uint32_t theirs = raw.version();
  const std::string text =
      VersionMismatchText("pcfarm-worker", theirs, kProtocolVersion, PcfarmRelease());
  auto w = store->FindWorkerByCurveKey(conn_key);
  if (w.ok()) {
    // Served under this version until now (replaced in place): it holds
    // nothing any more.
    if (peers.count(route)) DropPeer(route, "it now speaks protocol version " +
                                                std::to_string(theirs));
    bool fresh = outdated_workers.insert_or_assign(w->id, theirs).second;
    if (fresh) {
      PeerEvent("worker_outdated", w->id,
                "worker " + EscapePeerText(w->name) + " refused: " + text);
    }
  } else {
    if (unenrolled_log.Allow("version", clock->MonotonicMs()) >= 0) {
      spdlog::warn("unenrolled key {} refused: {}", HexEncode(conn_key).substr(0, 16),
                   text);
    }
    StrikeUnenrolled(route, conn_key);
  }
  wire::CoordinatorFrame f;
  auto* r = f.mutable_reject();
  r->set_reason(wire::REJECT_WRONG_VERSION);
  r->set_detail(text);
  r->set_speaks_version(kProtocolVersion);
  SendTo(route, std::move(f));
}

Status CoordinatorServer::Impl::OtherVersionClient(std::string_view bytes,
                                                   wire::ClientReply* reply) {
  counters->client_version_refusals++;
  wire::ClientRequest raw;
  raw.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  // The id lets the client match the refusal to its call.
  reply->set_request_id(raw.request_id());
  return FailedPrecondition(
      VersionMismatchText("pcfarm", raw.version(), kProtocolVersion, PcfarmRelease()));
}

}  // namespace pcfarm
