// CoordinatorClient: one CurveZMQ connection from the `pcfarm` CLI to the
// coordinator's clients socket. Every call has a timeout: an unreachable
// coordinator, a wrong key (the handshake never completes) or a dead
// coordinator is an Unavailable/Timeout status, never a hang.
//
// Thread-safety: one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

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

 private:
  Status Connect();

  ClientProfile profile_;
  int timeout_ms_;
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> sock_;
  uint64_t next_request_id_ = 1;
};

// Maps a ClientError code name back to a StatusCode (kInternal if unknown).
StatusCode StatusCodeFromName(const std::string& name);

}  // namespace pcfarm
