#include "tests/integration/sim_worker.h"

#include <chrono>
#include <filesystem>
#include <utility>

#include "base/clock.h"
#include "crypto/codec.h"
#include "crypto/hash.h"
#include "crypto/token.h"
#include "proto/wire.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

namespace {

int64_t MonoMs() { return SystemClock::Get()->MonotonicMs(); }
int64_t NowMs() { return SystemClock::Get()->NowMs(); }

const char* FrameName(wire::CoordinatorFrame::MsgCase c) {
  switch (c) {
    case wire::CoordinatorFrame::kWelcome: return "WELCOME";
    case wire::CoordinatorFrame::kAssign: return "ASSIGN";
    case wire::CoordinatorFrame::kCancel: return "CANCEL";
    case wire::CoordinatorFrame::kAck: return "ACK";
    case wire::CoordinatorFrame::kBlobChunk: return "BLOB_CHUNK";
    case wire::CoordinatorFrame::kHeartbeat: return "HEARTBEAT";
    case wire::CoordinatorFrame::kReject: return "REJECT";
    default: return "NOTHING";
  }
}

}  // namespace

std::string RejectReasonName(int reason) {
  if (!wire::RejectReason_IsValid(reason)) {
    return "REJECT_" + std::to_string(reason);
  }
  return wire::RejectReason_Name(static_cast<wire::RejectReason>(reason));
}

Result<std::unique_ptr<SimWorker>> SimWorker::FromToken(
    zmq::context_t* ctx, std::string_view token, SimWorkerOptions options) {
  PCFARM_ASSIGN_OR_RETURN(EnrollmentToken t, DecodeEnrollmentToken(token));
  auto w = std::make_unique<SimWorker>(ctx, t.endpoint, t.coordinator_curve_pk,
                                       t.coordinator_sign_pk,
                                       IdentityKeys::Generate(),
                                       std::move(options));
  w->token_secret_ = t.secret;
  return w;
}

SimWorker::SimWorker(zmq::context_t* ctx, std::string endpoint,
                     std::string coordinator_curve_pk,
                     std::string coordinator_sign_pk, IdentityKeys keys,
                     SimWorkerOptions options)
    : ctx_(ctx),
      endpoint_(std::move(endpoint)),
      coordinator_curve_pk_(std::move(coordinator_curve_pk)),
      coordinator_sign_pk_(std::move(coordinator_sign_pk)),
      keys_(std::move(keys)),
      options_(std::move(options)),
      heartbeat_interval_ms_(options_.heartbeat_interval_ms) {}

SimWorker::~SimWorker() { Disconnect(); }

Status SimWorker::Connect() {
  Disconnect();
  assigns_on_connection_ = 0;
  try {
    auto s = std::make_unique<zmq::socket_t>(*ctx_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::curve_serverkey,
           zmq::const_buffer(coordinator_curve_pk_.data(),
                             coordinator_curve_pk_.size()));
    s->set(zmq::sockopt::curve_publickey,
           zmq::const_buffer(keys_.curve.public_key().data(),
                             keys_.curve.public_key().size()));
    std::string sk = keys_.curve.secret_key();
    s->set(zmq::sockopt::curve_secretkey, zmq::const_buffer(sk.data(), sk.size()));
    s->set(zmq::sockopt::sndhwm, 1000);
    s->set(zmq::sockopt::rcvhwm, 1000);
    s->connect(endpoint_);
    sock_ = std::move(s);
  } catch (const zmq::error_t& e) {
    return Unavailable("sim worker '" + options_.name + "': cannot connect to " +
                       endpoint_ + ": " + e.what());
  }
  last_send_ms_ = MonoMs();
  return Status::Ok();
}

void SimWorker::Disconnect() { sock_.reset(); }

// ------------------------------------------------------------------ sending

Status SimWorker::Send(wire::WorkerFrame frame) {
  return SendRaw(EncodeFrame(&frame));
}

Status SimWorker::SendRaw(std::string_view bytes) {
  if (!sock_) return FailedPrecondition("sim worker: not connected");
  try {
    auto sent = sock_->send(zmq::buffer(bytes.data(), bytes.size()),
                            zmq::send_flags::dontwait);
    if (!sent) {
      return Unavailable("sim worker '" + options_.name +
                         "': send queue full (coordinator unreachable?)");
    }
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("sim worker send: ") + e.what());
  }
  last_send_ms_ = MonoMs();
  return Status::Ok();
}

Status SimWorker::SendEnroll() {
  assert(!token_secret_.empty() && "SendEnroll needs a worker made by FromToken");
  wire::WorkerFrame f;
  auto* e = f.mutable_enroll();
  e->set_token_secret(Base64UrlEncode(token_secret_));
  e->set_name(options_.name);
  e->set_sign_pk(keys_.sign.public_key());
  e->set_curve_pk(keys_.curve.public_key());
  return Send(std::move(f));
}

Status SimWorker::SendHello(const std::vector<uint64_t>& spooled_attempts) {
  wire::WorkerFrame f;
  auto* h = f.mutable_hello();
  h->set_software_version("sim-worker");
  auto* d = h->add_devices();
  d->set_index(0);
  d->set_backend("cpu");
  d->set_name("simulated cpu");
  d->set_memory_bytes(options_.memory_bytes);
  d->set_free_bytes(options_.free_bytes);
  d->set_cores(1);
  d->set_gflops(options_.gflops);
  h->set_slots(options_.slots);
  for (uint64_t a : spooled_attempts) h->add_spooled_attempts(a);
  // Shards it holds and has not answered yet: it still runs them.
  for (const auto& a : pending_) h->add_running_attempts(a.body.attempt_id());
  return Send(std::move(f));
}

Status SimWorker::SendReady(uint32_t free_slots) {
  wire::WorkerFrame f;
  f.mutable_ready()->set_free_slots(free_slots);
  f.mutable_ready()->set_assigns_received(assigns_on_connection_);
  f.mutable_ready()->set_slots(options_.slots);
  if (options_.free_bytes != 0) f.mutable_ready()->add_device_free_bytes(options_.free_bytes);
  return Send(std::move(f));
}

Status SimWorker::SendHeartbeat() { return SendHeartbeat(wire::Heartbeat()); }

Status SimWorker::SendHeartbeat(const wire::Heartbeat& hb) {
  wire::WorkerFrame f;
  *f.mutable_heartbeat() = hb;
  return Send(std::move(f));
}

Status SimWorker::SendResult(const wire::SignedEnvelope& result) {
  wire::WorkerFrame f;
  *f.mutable_result() = result;
  PCFARM_RETURN_IF_ERROR(Send(std::move(f)));
  stats_.results_sent++;
  return Status::Ok();
}

Status SimWorker::SendBye(const std::string& reason) {
  wire::WorkerFrame f;
  f.mutable_bye()->set_reason(reason);
  return Send(std::move(f));
}

Status SimWorker::HeartbeatIfDue() {
  if (!sock_) return Status::Ok();
  if (MonoMs() - last_send_ms_ < heartbeat_interval_ms_) return Status::Ok();
  return SendHeartbeat();
}

// ---------------------------------------------------------------- receiving

Result<std::optional<wire::CoordinatorFrame>> SimWorker::Receive(
    int timeout_ms) {
  if (!sock_) return FailedPrecondition("sim worker: not connected");
  zmq::message_t msg;
  try {
    zmq::pollitem_t item{sock_->handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(std::max(0, timeout_ms)));
    if (!(item.revents & ZMQ_POLLIN)) return std::optional<wire::CoordinatorFrame>();
    // The coordinator sends one part; should more come, the last one counts.
    do {
      if (!sock_->recv(msg, zmq::recv_flags::dontwait)) {
        return std::optional<wire::CoordinatorFrame>();
      }
    } while (msg.more());
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("sim worker receive: ") + e.what());
  }
  auto frame = DecodeCoordinatorFrame(msg.to_string_view());
  if (!frame.ok()) return frame.status();
  Note(*frame);
  return std::optional<wire::CoordinatorFrame>(std::move(frame).value());
}

void SimWorker::Note(const wire::CoordinatorFrame& f) {
  switch (f.msg_case()) {
    case wire::CoordinatorFrame::kWelcome:
      stats_.welcomes++;
      worker_id_ = f.welcome().worker_id();
      if (f.welcome().heartbeat_interval_ms() >= 10) {
        heartbeat_interval_ms_ = static_cast<int>(f.welcome().heartbeat_interval_ms());
      }
      break;
    case wire::CoordinatorFrame::kAssign:
      stats_.assigns++;
      assigns_on_connection_++;
      break;
    case wire::CoordinatorFrame::kAck: stats_.acks++; break;
    case wire::CoordinatorFrame::kCancel: stats_.cancels++; break;
    case wire::CoordinatorFrame::kHeartbeat: stats_.heartbeats_in++; break;
    case wire::CoordinatorFrame::kReject:
      stats_.rejects++;
      stats_.rejects_by_reason[f.reject().reason()]++;
      stats_.last_reject = f.reject();
      break;
    default: break;
  }
}

Status SimWorker::Handle(const wire::CoordinatorFrame& f) {
  if (f.msg_case() == wire::CoordinatorFrame::kWelcome) {
    // A WELCOME we did not ask for: the coordinator restarted. It first
    // asks what we hold (and sends no shard until we say), then, answering
    // that, knows nothing of our free slots.
    if (f.welcome().hello_wanted()) return SendHello();
    if (options_.auto_work) return SendReady(options_.slots);
    return Status::Ok();
  }
  if (f.msg_case() == wire::CoordinatorFrame::kAssign) {
    auto a = OpenAssign(f.assign());
    if (!a.ok()) {
      stats_.bad_assigns++;
      return Status::Ok();  // a worker drops a shard it cannot verify
    }
    pending_.push_back(std::move(a).value());
  } else if (f.msg_case() == wire::CoordinatorFrame::kCancel) {
    uint64_t id = f.cancel().attempt_id();
    const size_t dropped = std::erase_if(pending_, [id](const SimAssignment& a) {
      return a.body.attempt_id() == id;
    });
    // As pcfarm-worker does: the cancelled shard's slot is free, and the
    // coordinator hears it from a READY (it counts no slot free on a cancel).
    if (dropped > 0 && options_.auto_work) return SendReady(options_.slots);
  }
  return Status::Ok();
}

Result<wire::CoordinatorFrame> SimWorker::Expect(
    wire::CoordinatorFrame::MsgCase what, int timeout_ms) {
  int64_t deadline = MonoMs() + timeout_ms;
  while (true) {
    int64_t left = deadline - MonoMs();
    if (left < 0) {
      return Timeout("sim worker '" + options_.name + "': no " +
                     FrameName(what) + " within " + std::to_string(timeout_ms) +
                     " ms");
    }
    PCFARM_RETURN_IF_ERROR(HeartbeatIfDue());
    PCFARM_ASSIGN_OR_RETURN(
        auto f, Receive(static_cast<int>(std::min<int64_t>(left, 50))));
    if (!f) continue;
    if (f->msg_case() == what) {
      if (what == wire::CoordinatorFrame::kAssign) {
        // The caller takes this ASSIGN; it must still be a valid one.
        auto a = OpenAssign(f->assign());
        if (!a.ok()) return a.status();
      }
      return std::move(*f);
    }
    if (f->msg_case() == wire::CoordinatorFrame::kReject) {
      return PermissionDenied(RejectReasonName(f->reject().reason()) + ": " +
                              f->reject().detail());
    }
    PCFARM_RETURN_IF_ERROR(Handle(*f));
  }
}

// ---------------------------------------------------------- whole exchanges

Status SimWorker::Enroll(int timeout_ms) {
  if (!sock_) PCFARM_RETURN_IF_ERROR(Connect());
  PCFARM_RETURN_IF_ERROR(SendEnroll());
  auto w = Expect(wire::CoordinatorFrame::kWelcome, timeout_ms);
  return w.ok() ? Status::Ok() : w.status();
}

Status SimWorker::Join(int timeout_ms) {
  if (!sock_) PCFARM_RETURN_IF_ERROR(Connect());
  PCFARM_RETURN_IF_ERROR(SendHello());
  auto w = Expect(wire::CoordinatorFrame::kWelcome, timeout_ms);
  if (!w.ok()) return w.status();
  return SendReady(options_.slots);
}

// ------------------------------------------------------- shards and results

Result<SimAssignment> SimWorker::OpenAssign(const wire::Assign& assign) const {
  auto body = OpenShard(assign.shard(), coordinator_sign_pk_);
  if (!body.ok()) return body.status().WithContext("ASSIGN");
  if (body->worker_sign_pk() != keys_.sign.public_key()) {
    return PermissionDenied("ASSIGN: attempt " +
                            std::to_string(body->attempt_id()) +
                            " is addressed to another worker");
  }
  if (body->deadline_ms() > 0 && body->deadline_ms() < NowMs()) {
    return FailedPrecondition("ASSIGN: attempt " +
                              std::to_string(body->attempt_id()) +
                              " is past its deadline");
  }
  if (!TaskKindRegistry::Builtin().Find(body->kind())) {
    return InvalidArgument("ASSIGN: unknown task kind '" + body->kind() + "'");
  }
  return SimAssignment{assign.shard(), std::move(body).value()};
}

wire::ResultBody SimWorker::RunAssignment(const SimAssignment& a) const {
  return RunAssignmentWith(a, a.body.params());
}

wire::ResultBody SimWorker::RunAssignmentWith(const SimAssignment& a,
                                              std::string_view params) const {
  wire::ResultBody r;
  r.set_attempt_id(a.body.attempt_id());
  r.set_shard_id(a.body.shard_id());
  r.set_shard_body_hash(HashToBytes(EnvelopeBodyHash(a.envelope)));
  r.set_device("cpu:0");
  r.set_started_ms(NowMs());
  const TaskKind* kind = TaskKindRegistry::Builtin().Find(a.body.kind());
  if (!kind) {
    r.set_ok(false);
    r.set_error("unknown task kind '" + a.body.kind() + "'");
  } else {
    RunContext ctx;
    ctx.blob_path = options_.blob_path;
    ctx.cpu_threads = options_.cpu_threads;
    auto out = kind->Run(params, ctx);
    r.set_ok(out.ok());
    if (out.ok()) {
      r.set_output(*out);
    } else {
      r.set_error(out.status().ToString());
    }
  }
  r.set_finished_ms(NowMs());
  return r;
}

wire::SignedEnvelope SimWorker::SealResult(const wire::ResultBody& body) const {
  return SealEnvelope(keys_.sign, body.SerializeAsString());
}

wire::SignedEnvelope SimWorker::WithForgedSignature(
    wire::SignedEnvelope envelope) {
  std::string sig = envelope.signature();
  if (sig.empty()) sig.assign(kSignatureBytes, '\0');
  sig[0] = static_cast<char>(sig[0] ^ 0x01);
  envelope.set_signature(sig);
  return envelope;
}

// ------------------------------------------------------------ honest loop

Status SimWorker::AnswerPending() {
  while (!pending_.empty()) {
    SimAssignment a = std::move(pending_.front());
    pending_.erase(pending_.begin());
    PCFARM_RETURN_IF_ERROR(SendResult(SealResult(RunAssignment(a))));
    PCFARM_RETURN_IF_ERROR(SendReady(
        options_.slots > pending_.size() ? uint32_t(options_.slots - pending_.size()) : 0));
  }
  return Status::Ok();
}

Status SimWorker::Step(int timeout_ms) {
  if (!sock_) return FailedPrecondition("sim worker: not connected");
  PCFARM_RETURN_IF_ERROR(HeartbeatIfDue());
  int wait = timeout_ms;
  while (true) {
    PCFARM_ASSIGN_OR_RETURN(auto f, Receive(wait));
    if (!f) break;
    PCFARM_RETURN_IF_ERROR(Handle(*f));
    wait = 0;  // drain what already arrived, then return
  }
  if (options_.auto_work) PCFARM_RETURN_IF_ERROR(AnswerPending());
  return HeartbeatIfDue();
}

std::function<Result<std::string>(std::string_view)> CoordinatorBlobPath(
    std::string coordinator_dir) {
  return [dir = std::move(coordinator_dir)](std::string_view hex) -> Result<std::string> {
    if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
      return InvalidArgument("blob hash '" + std::string(hex.substr(0, 80)) + "' is not hex");
    }
    std::string path = dir + "/blobs/" + std::string(hex.substr(0, 2)) + "/" + std::string(hex);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) {
      return NotFound("blob " + std::string(hex) + " is not in the coordinator's store");
    }
    return path;
  };
}

}  // namespace pcfarm
