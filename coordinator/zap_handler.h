// ZapHandler: the ZeroMQ authentication (ZAP, RFC 27) handler that decides
// which CurveZMQ client keys may connect to the coordinator's sockets.
//
// libzmq asks it about every new CURVE connection. The decision is a callback
// so the rules (enrolled, banned, enrollment attempts, CLI clients) stay with
// the server. An admitted connection's messages carry the client's public key
// as "User-Id" (64 lowercase hex digits), so every message can be traced back
// to the key that sent it.
//
// Thread-safety: Start() runs a thread that owns the ZAP socket and calls
// `decide` from it; `decide` must be safe to call from that thread.
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "base/status.h"

namespace pcfarm {

struct ZapDecision {
  bool allow = false;
  std::string reason;  // logged, and sent as the ZAP status text
};

class ZapHandler {
 public:
  // `domain` is the ZMQ_ZAP_DOMAIN of the socket ("workers" or "clients");
  // `client_key` the 32-byte Curve25519 public key of the peer.
  using Decide = std::function<ZapDecision(const std::string& domain,
                                           const std::string& client_key)>;

  ZapHandler(zmq::context_t* ctx, Decide decide);
  ~ZapHandler();  // Stop()s

  // Binds inproc://zeromq.zap.01 and starts answering. Must be called before
  // any CURVE server socket binds.
  Status Start();
  void Stop();

  uint64_t allowed() const { return allowed_; }
  uint64_t denied() const { return denied_; }

 private:
  void Loop();

  zmq::context_t* ctx_;
  Decide decide_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> allowed_{0};
  std::atomic<uint64_t> denied_{0};
  std::promise<std::string> started_;  // "" once bound, else the error
};

}  // namespace pcfarm
