#include "coordinator/zap_handler.h"

#include "base/hex.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <vector>

namespace pcfarm {

ZapHandler::ZapHandler(zmq::context_t* ctx, Decide decide)
    : ctx_(ctx), decide_(std::move(decide)) {}

ZapHandler::~ZapHandler() { Stop(); }

Status ZapHandler::Start() {
  // Wait until the socket is bound (or failed): a CURVE server socket bound
  // before the handler exists would admit everyone.
  auto started = started_.get_future();
  thread_ = std::thread([this] { Loop(); });
  std::string error = started.get();
  if (!error.empty()) {
    Stop();
    return Internal("cannot start the ZAP handler: " + error);
  }
  return Status::Ok();
}

void ZapHandler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::Loop() {
  bool bound = false;
  try {
    zmq::socket_t sock(*ctx_, zmq::socket_type::rep);
    sock.set(zmq::sockopt::linger, 0);
    sock.bind("inproc://zeromq.zap.01");
    bound = true;
    started_.set_value("");
    while (!stop_) {
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(100));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;
      }
      if (!(item.revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      do {
        zmq::message_t part;
        if (!sock.recv(part, zmq::recv_flags::none)) break;
        parts.push_back(std::move(part));
      } while (sock.get(zmq::sockopt::rcvmore));
      // version, request_id, domain, address, identity, mechanism, key...
      std::string request_id = parts.size() > 1 ? parts[1].to_string() : "";
      ZapDecision d;
      std::string key;
      if (parts.size() < 7 || parts[0].to_string() != "1.0" ||
          parts[5].to_string() != "CURVE" || parts[6].size() != 32) {
        d = {false, "only CURVE connections are accepted"};
      } else {
        key = parts[6].to_string();
        d = decide_(parts[2].to_string(), key);
      }
      (d.allow ? allowed_ : denied_)++;
      if (!d.allow) {
        spdlog::info("zap: denied {} key {}: {}",
                     parts.size() > 2 ? parts[2].to_string() : "?",
                     HexEncode(key).substr(0, 16), d.reason);
      }
      std::string status = d.allow ? "200" : "400";
      std::string user_id = d.allow ? HexEncode(key) : "";
      sock.send(zmq::buffer(std::string("1.0")), zmq::send_flags::sndmore);
      sock.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      sock.send(zmq::buffer(status), zmq::send_flags::sndmore);
      sock.send(zmq::buffer(d.reason), zmq::send_flags::sndmore);
      sock.send(zmq::buffer(user_id), zmq::send_flags::sndmore);
      sock.send(zmq::message_t(), zmq::send_flags::none);
    }
  } catch (const zmq::error_t& e) {
    if (!bound) started_.set_value(e.what());
    if (e.num() != ETERM) spdlog::error("zap handler stopped: {}", e.what());
  }
}

}  // namespace pcfarm
