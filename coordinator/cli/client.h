// CoordinatorClient: one CurveZMQ connection from the `pcfarm` CLI to the
// coordinator's clients socket. Every call has a timeout: an unreachable
// coordinator, a wrong key (the handshake never completes) or a dead
// coordinator is an Unavailable/Timeout status, never a hang. A call after
// one that got no answer connects afresh, so a restarted coordinator is
// reached again (cli_common.h: PatientCaller retries such calls).
//
// Thread-safety: one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "base/status.h"
#include "coordinator/client_profile.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

class CoordinatorClient {
 public:
  CoordinatorClient(const ClientProfile& profile, int timeout_ms);
  ~CoordinatorClient();

  // Sends `request` (version and request id are filled in) and waits for
  // the matching reply. A reply carrying an error becomes a Status with the
  // error's code and message.
  Result<wire::ClientReply> Call(wire::ClientRequest request);

  // Pipelining (uploads keep several chunks in flight): Post sends and
  // returns the request id at once; Await waits up to the timeout for the
  // reply to that id, keeping replies to other posted ids that arrive
  // first. Replies come back in the order requests were posted.
  Result<uint64_t> Post(wire::ClientRequest request);
  Result<wire::ClientReply> Await(uint64_t request_id);

  // The coordinator's address, from the profile (for messages).
  const std::string& endpoint() const { return profile_.endpoint; }

 private:
  Status Connect();
  // PermissionDenied when the monitor holds a handshake the coordinator
  // refused (its ZAP handler denied this profile's key); OK otherwise.
  // Does not wait.
  Status Refusal();
  // Drops the socket (and everything posted on it): the next request
  // connects afresh, and a late reply cannot be mistaken for another's.
  void Drop();

  ClientProfile profile_;
  int timeout_ms_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  std::unique_ptr<zmq::socket_t> monitor_;  // handshake failures of sock_
  uint64_t next_request_id_ = 1;
  std::map<uint64_t, wire::ClientReply> early_;  // replies not awaited yet
  std::set<uint64_t> posted_;
};

// The Status for reply bytes of another protocol version (DecodeClientReply
// said kWrongVersion): FailedPrecondition naming both versions and what to
// upgrade, with the coordinator's own words when it sent a refusal.
Status OtherVersionReplyStatus(std::string_view bytes, const std::string& endpoint);

// Maps a ClientError code name back to a StatusCode (kInternal if unknown).
StatusCode StatusCodeFromName(const std::string& name);

}  // namespace pcfarm
