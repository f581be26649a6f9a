#include "coordinator/cli/client.h"

#include <atomic>
#include <chrono>
#include <random>

#include "proto/wire.h"

namespace pcfarm {

StatusCode StatusCodeFromName(const std::string& name) {
  for (int c = 0; c <= static_cast<int>(StatusCode::kInternal); ++c) {
    if (name == StatusCodeName(static_cast<StatusCode>(c))) {
      return static_cast<StatusCode>(c);
    }
  }
  return StatusCode::kInternal;
}

Status OtherVersionReplyStatus(std::string_view bytes, const std::string& endpoint) {
  wire::ClientReply raw;
  raw.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  std::string text = "the coordinator at " + endpoint + " refused this pcfarm: " +
                     VersionMismatchText("pcfarm", kProtocolVersion, raw.version(), "");
  // A coordinator of this release or later says it in its own words, with
  // its release; an older one's words are still worth showing.
  if (raw.has_error() && !raw.error().message().empty()) {
    text += " (the coordinator says: " + raw.error().message() + ")";
  }
  return FailedPrecondition(text);
}

CoordinatorClient::CoordinatorClient(const ClientProfile& profile,
                                     int timeout_ms)
    : profile_(profile), timeout_ms_(timeout_ms), ctx_(1) {
  std::random_device rd;
  next_request_id_ = (uint64_t(rd()) << 32) | rd();
}

CoordinatorClient::~CoordinatorClient() {
  monitor_.reset();
  sock_.reset();
  ctx_.close();
}

Status CoordinatorClient::Connect() {
  try {
    sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
    sock_->set(zmq::sockopt::linger, 0);
    sock_->set(zmq::sockopt::maxmsgsize,
               ZmqMaxMessageBytes(WireLimits{}.client_reply_bytes));
    sock_->set(zmq::sockopt::curve_serverkey,
               zmq::const_buffer(profile_.server_curve_pk.data(), 32));
    sock_->set(zmq::sockopt::curve_publickey,
               zmq::const_buffer(profile_.client_curve_pk.data(), 32));
    sock_->set(zmq::sockopt::curve_secretkey,
               zmq::const_buffer(profile_.client_curve_sk.data(), 32));
    // A key the coordinator does not know fails the CurveZMQ handshake
    // (its ZAP handler denies it): the monitor reports that at once, so the
    // call can say so instead of waiting out its timeout.
    static std::atomic<int> monitors{0};
    std::string addr = "inproc://pcfarm-cli-monitor-" + std::to_string(monitors++);
    if (zmq_socket_monitor(sock_->handle(), addr.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
      monitor_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
      monitor_->set(zmq::sockopt::linger, 0);
      monitor_->connect(addr);
    }
    sock_->connect(profile_.endpoint);
  } catch (const zmq::error_t& e) {
    monitor_.reset();
    sock_.reset();
    return InvalidArgument("cannot connect to " + profile_.endpoint + ": " +
                           e.what());
  }
  return Status::Ok();
}

Status CoordinatorClient::Refusal() {
  if (!monitor_) return Status::Ok();
  zmq::message_t event;
  if (!monitor_->recv(event, zmq::recv_flags::dontwait)) return Status::Ok();
  zmq::message_t addr;
  if (event.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
  return PermissionDenied("the coordinator at " + profile_.endpoint +
                          " refused this profile's key: it is not a registered client (unknown "
                          "client key; ask the farm's admin for a profile)");
}

void CoordinatorClient::Drop() {
  monitor_.reset();
  sock_.reset();
  posted_.clear();
  early_.clear();
}

Result<wire::ClientReply> CoordinatorClient::Call(wire::ClientRequest request) {
  PCFARM_ASSIGN_OR_RETURN(uint64_t id, Post(std::move(request)));
  return Await(id);
}

Result<uint64_t> CoordinatorClient::Post(wire::ClientRequest request) {
  if (!sock_) PCFARM_RETURN_IF_ERROR(Connect());
  uint64_t id = next_request_id_++;
  request.set_version(kProtocolVersion);
  request.set_request_id(id);
  // Serialized straight into the message ZeroMQ sends: an upload chunk's
  // megabyte is copied once, not twice.
  zmq::message_t msg(request.ByteSizeLong());
  request.SerializeToArray(msg.data(), static_cast<int>(msg.size()));
  // The coordinator's own checks, here: a request over a limit is refused
  // at once, naming the limit, instead of timing out. An upload chunk
  // within its limits (the bulk of an upload's bytes) is not decoded again:
  // that would cost about as much as encrypting it.
  const WireLimits limits;
  const bool plain_chunk =
      request.has_upload_chunk() &&
      request.upload_chunk().data().size() <= limits.upload_chunk_bytes &&
      request.upload_chunk().hash().size() <= 32 &&
      request.upload_chunk().upload_id().size() <= 16;
  if (!plain_chunk) {
    if (auto mine = DecodeClientRequest(msg.to_string_view()); !mine.ok()) {
      return mine.status().WithContext(
          "the request cannot be sent (limits in proto/wire.h)");
    }
  }
  try {
    if (!sock_->send(msg, zmq::send_flags::dontwait)) {
      // The connection is gone: most likely its handshake was refused
      // while nothing was being awaited (a long hash before the first
      // request), and libzmq does not try a refused key again.
      Status refused = Refusal();
      Drop();
      if (!refused.ok()) return refused;
      return Unavailable("cannot queue the request to " + profile_.endpoint);
    }
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("talking to the coordinator: ") + e.what());
  }
  posted_.insert(id);
  return id;
}

Result<wire::ClientReply> CoordinatorClient::Await(uint64_t id) {
  auto finish = [&](wire::ClientReply reply) -> Result<wire::ClientReply> {
    posted_.erase(id);
    if (reply.has_error()) {
      return Status(StatusCodeFromName(reply.error().code()), reply.error().message());
    }
    return reply;
  };
  if (auto e = early_.find(id); e != early_.end()) {
    wire::ClientReply r = std::move(e->second);
    early_.erase(e);
    return finish(std::move(r));
  }
  if (!sock_ || !posted_.count(id)) {
    return FailedPrecondition("no request " + std::to_string(id) + " is waiting");
  }
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(timeout_ms_);
  try {
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      zmq::pollitem_t items[] = {{sock_->handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor_ ? monitor_->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, monitor_ ? 2 : 1, left);
      if (monitor_ && (items[1].revents & ZMQ_POLLIN)) {
        if (Status refused = Refusal(); !refused.ok()) {
          Drop();
          return refused;
        }
      }
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t msg;
      if (!sock_->recv(msg, zmq::recv_flags::dontwait)) continue;
      auto reply = DecodeClientReply(msg.to_string_view());
      if (!reply.ok() && reply.error() == WireError::kWrongVersion) {
        return OtherVersionReplyStatus(msg.to_string_view(), profile_.endpoint);
      }
      if (!reply.ok()) {
        return Corruption("bad reply from the coordinator: " +
                          reply.status().message());
      }
      if (reply->request_id() == id) return finish(std::move(*reply));
      // Another posted request's answer: keep it; a late answer to an
      // abandoned call is dropped.
      if (posted_.count(reply->request_id())) {
        early_[reply->request_id()] = std::move(*reply);
      }
    }
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("talking to the coordinator: ") + e.what());
  }
  // Drop the socket so a late reply cannot be mistaken for the next one.
  Drop();
  return Unavailable("no answer from the coordinator at " + profile_.endpoint +
                     " within " + std::to_string(timeout_ms_ / 1000.0).substr(0, 4) +
                     " s (is pcfarm-coordinator running, and is the profile's "
                     "key right?)");
}

}  // namespace pcfarm
