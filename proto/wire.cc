#include "proto/wire.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <map>
#include <vector>

#include "crypto/codec.h"

namespace pcfarm {
namespace {

std::string Bytes(size_t n) { return std::to_string(n) + " bytes"; }

// The name of the oneof member that is set, e.g. "blob_chunk".
template <typename Frame>
std::string MessageName(const Frame& frame) {
  const auto* field = Frame::descriptor()->FindFieldByNumber(
      static_cast<int>(frame.msg_case()));
  return field ? field->name() : "unknown";
}

// Size limit of the frame holding `frame`'s message, by message type.
size_t TypeLimit(const wire::WorkerFrame& f, const WireLimits& l) {
  switch (f.msg_case()) {
    case wire::WorkerFrame::kHello:
      return l.hello_frame_bytes;
    case wire::WorkerFrame::kResult:
      return l.envelope_body_bytes + kFrameOverheadBytes;
    case wire::WorkerFrame::kOutputChunk:
      return l.upload_chunk_bytes + kFrameOverheadBytes;
    default:
      return l.control_frame_bytes;
  }
}

size_t TypeLimit(const wire::CoordinatorFrame& f, const WireLimits& l) {
  switch (f.msg_case()) {
    case wire::CoordinatorFrame::kAssign:
      return l.envelope_body_bytes + kFrameOverheadBytes;
    case wire::CoordinatorFrame::kBlobChunk:
      return l.blob_chunk_bytes + kFrameOverheadBytes;
    default:
      return l.control_frame_bytes;
  }
}

size_t TypeLimit(const wire::ClientRequest& r, const WireLimits& l) {
  switch (r.msg_case()) {
    case wire::ClientRequest::kSubmit:
      return l.client_request_bytes;
    case wire::ClientRequest::kUploadChunk:
      return l.upload_chunk_bytes + kFrameOverheadBytes;
    default:
      return l.control_frame_bytes;
  }
}

size_t TypeLimit(const wire::ClientReply&, const WireLimits& l) {
  return l.client_reply_bytes;
}

bool HasMessage(const wire::WorkerFrame& f) {
  return f.msg_case() != wire::WorkerFrame::MSG_NOT_SET;
}
bool HasMessage(const wire::CoordinatorFrame& f) {
  return f.msg_case() != wire::CoordinatorFrame::MSG_NOT_SET;
}
bool HasMessage(const wire::ClientRequest& r) {
  return r.msg_case() != wire::ClientRequest::MSG_NOT_SET;
}
// A failed call carries only `error`.
bool HasMessage(const wire::ClientReply& r) {
  return r.msg_case() != wire::ClientReply::MSG_NOT_SET || r.has_error();
}

using FieldProblem = std::optional<std::pair<WireError, std::string>>;

// The first string or bytes field of `m` (or of a message inside it) over
// its FieldLimit, e.g. "Enroll.name of 640 bytes is over its limit of 64
// bytes".
FieldProblem CheckFields(const google::protobuf::Message& m,
                         const WireLimits& l) {
  using google::protobuf::FieldDescriptor;
  const auto* refl = m.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(m, &fields);
  for (const FieldDescriptor* f : fields) {
    int n = f->is_repeated() ? refl->FieldSize(m, f) : 1;
    if (f->type() == FieldDescriptor::TYPE_STRING ||
        f->type() == FieldDescriptor::TYPE_BYTES) {
      size_t limit = FieldLimit(*f, l);
      std::string scratch;
      for (int i = 0; i < n; ++i) {
        const std::string& v =
            f->is_repeated() ? refl->GetRepeatedStringReference(m, f, i, &scratch)
                             : refl->GetStringReference(m, f, &scratch);
        if (v.size() > limit) {
          std::string name = f->full_name();
          if (name.rfind("pcfarm.wire.", 0) == 0) name = name.substr(12);
          return std::make_pair(WireError::kOversized,
                                name + " of " + Bytes(v.size()) +
                                    " is over its limit of " + Bytes(limit));
        }
      }
    } else if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
      for (int i = 0; i < n; ++i) {
        const auto& sub = f->is_repeated() ? refl->GetRepeatedMessage(m, f, i)
                                           : refl->GetMessage(m, f);
        if (auto bad = CheckFields(sub, l)) return bad;
      }
    }
  }
  return std::nullopt;
}

template <typename Frame>
Decoded<Frame> DecodeFrame(std::string_view bytes, size_t max_bytes,
                           const WireLimits& limits, const char* what) {
  if (bytes.empty()) {
    return {WireError::kEmpty, std::string("empty ") + what};
  }
  if (bytes.size() > max_bytes) {
    return {WireError::kOversized, std::string(what) + " of " + Bytes(bytes.size()) +
                                       " is over the limit of " + Bytes(max_bytes)};
  }
  Frame frame;
  if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return {WireError::kTruncatedOrGarbage,
            std::string(what) + " of " + Bytes(bytes.size()) +
                " is truncated or not protobuf"};
  }
  if (frame.version() != kProtocolVersion) {
    return {WireError::kWrongVersion,
            std::string(what) + " has protocol version " +
                std::to_string(frame.version()) + "; this build speaks " +
                std::to_string(kProtocolVersion)};
  }
  if (!HasMessage(frame)) {
    return {WireError::kEmpty,
            std::string(what) + " carries no message this build knows"};
  }
  size_t type_limit = TypeLimit(frame, limits);
  if (bytes.size() > type_limit) {
    return {WireError::kOversized,
            std::string(what) + " with " + MessageName(frame) + " of " +
                Bytes(bytes.size()) + " is over its limit of " + Bytes(type_limit)};
  }
  if (auto bad = CheckFields(frame, limits)) {
    return {bad->first, std::string(what) + ": " + bad->second};
  }
  return frame;
}

template <typename Frame>
std::string Encode(Frame* frame) {
  assert(HasMessage(*frame) && "encoding a frame with no message");
  frame->set_version(kProtocolVersion);
  return frame->SerializeAsString();
}

template <typename Body>
Decoded<Body> OpenBody(const wire::SignedEnvelope& envelope,
                       std::string_view signer_pk, const WireLimits& limits,
                       const char* what) {
  auto body = OpenEnvelope(envelope, signer_pk, limits);
  if (!body.ok()) return {body.error(), body.message()};
  Body parsed;
  if (!parsed.ParseFromArray(body->data(), static_cast<int>(body->size()))) {
    return {WireError::kTruncatedOrGarbage,
            std::string("signed ") + what + " of " + Bytes(body->size()) +
                " does not parse"};
  }
  if (auto bad = CheckFields(parsed, limits)) {
    return {bad->first, std::string("signed ") + what + ": " + bad->second};
  }
  return parsed;
}

}  // namespace

const char* PcfarmRelease() { return PCFARM_RELEASE; }

std::string VersionMismatchText(std::string_view program,
                                uint32_t program_version,
                                uint32_t coordinator_version,
                                std::string_view coordinator_release) {
  std::string text = std::string(program) + " speaks protocol version " +
                     std::to_string(program_version) +
                     " and the coordinator speaks " +
                     std::to_string(coordinator_version) + ": ";
  std::string release =
      coordinator_release.empty() ? "" : " (pcfarm " + std::string(coordinator_release) + ")";
  if (program_version < coordinator_version) {
    return text + "upgrade " + std::string(program) +
           " to the coordinator's release" + release;
  }
  return text + "upgrade pcfarm-coordinator to a release that speaks " +
         std::to_string(program_version) + ", or run the " + std::string(program) +
         " of the coordinator's release" + release;
}

const char* WireErrorName(WireError error) {
  switch (error) {
    case WireError::kOversized: return "oversized";
    case WireError::kTruncatedOrGarbage: return "truncated_or_garbage";
    case WireError::kWrongVersion: return "wrong_version";
    case WireError::kEmpty: return "empty";
    case WireError::kUnsigned: return "unsigned";
    case WireError::kBadSignature: return "bad_signature";
    case WireError::kUnknownSigner: return "unknown_signer";
  }
  return "unknown_wire_error";
}

wire::RejectReason RejectReasonFor(WireError error) {
  switch (error) {
    case WireError::kUnsigned:
    case WireError::kBadSignature:
    case WireError::kUnknownSigner:
      return wire::REJECT_BAD_SIGNATURE;
    default:
      return wire::REJECT_BAD_MESSAGE;
  }
}

Status WireErrorStatus(WireError error, const std::string& message) {
  std::string m = std::string(WireErrorName(error)) + ": " + message;
  switch (error) {
    case WireError::kOversized:
      return ResourceExhausted(std::move(m));
    case WireError::kUnsigned:
    case WireError::kBadSignature:
    case WireError::kUnknownSigner:
      return Unauthenticated(std::move(m));
    default:
      return InvalidArgument(std::move(m));
  }
}

size_t MaxWorkerFrameBytes(const WireLimits& l) {
  return std::max({l.control_frame_bytes, l.hello_frame_bytes,
                   l.envelope_body_bytes + kFrameOverheadBytes,
                   l.upload_chunk_bytes + kFrameOverheadBytes});
}

size_t MaxCoordinatorFrameBytes(const WireLimits& l) {
  return std::max({l.control_frame_bytes,
                   l.envelope_body_bytes + kFrameOverheadBytes,
                   l.blob_chunk_bytes + kFrameOverheadBytes});
}

size_t MaxClientRequestBytes(const WireLimits& l) {
  return std::max({l.client_request_bytes, l.control_frame_bytes,
                   l.upload_chunk_bytes + kFrameOverheadBytes});
}

Decoded<wire::WorkerFrame> DecodeWorkerFrame(std::string_view bytes,
                                             const WireLimits& limits) {
  return DecodeFrame<wire::WorkerFrame>(bytes, MaxWorkerFrameBytes(limits),
                                        limits, "worker frame");
}

Decoded<wire::CoordinatorFrame> DecodeCoordinatorFrame(
    std::string_view bytes, const WireLimits& limits) {
  return DecodeFrame<wire::CoordinatorFrame>(
      bytes, MaxCoordinatorFrameBytes(limits), limits, "coordinator frame");
}

Decoded<wire::ClientRequest> DecodeClientRequest(std::string_view bytes,
                                                 const WireLimits& limits) {
  return DecodeFrame<wire::ClientRequest>(bytes, MaxClientRequestBytes(limits),
                                          limits, "client request");
}

Decoded<wire::ClientReply> DecodeClientReply(std::string_view bytes,
                                             const WireLimits& limits) {
  return DecodeFrame<wire::ClientReply>(bytes, limits.client_reply_bytes,
                                        limits, "client reply");
}

std::string EncodeFrame(wire::WorkerFrame* frame) { return Encode(frame); }
std::string EncodeFrame(wire::CoordinatorFrame* frame) { return Encode(frame); }
std::string EncodeFrame(wire::ClientRequest* request) { return Encode(request); }
std::string EncodeFrame(wire::ClientReply* reply) { return Encode(reply); }

wire::SignedEnvelope SealEnvelope(const SigningKeyPair& signer,
                                  std::string body) {
  wire::SignedEnvelope env;
  env.set_signature(signer.Sign(body));
  env.set_signer_key_id(signer.key_id());
  env.set_body(std::move(body));
  return env;
}

Decoded<std::string_view> OpenEnvelope(const wire::SignedEnvelope& envelope,
                                       std::string_view signer_pk,
                                       const WireLimits& limits) {
  const std::string& body = envelope.body();
  if (body.size() > limits.envelope_body_bytes) {
    return {WireError::kOversized, "envelope body of " + Bytes(body.size()) +
                                       " is over the limit of " +
                                       Bytes(limits.envelope_body_bytes)};
  }
  if (envelope.signature().empty() || envelope.signer_key_id().empty()) {
    return {WireError::kUnsigned, "envelope has no signature or no signer key id"};
  }
  std::string expected_id = KeyIdOf(signer_pk);
  if (envelope.signer_key_id() != expected_id) {
    return {WireError::kUnknownSigner,
            "envelope is signed by key " +
                HexEncode(envelope.signer_key_id().substr(0, kKeyIdBytes)) +
                ", expected " + HexEncode(expected_id)};
  }
  Status s = Verify(signer_pk, body, envelope.signature());
  if (!s.ok()) return {WireError::kBadSignature, "envelope: " + s.message()};
  return std::string_view(body);
}

Decoded<wire::ShardBody> OpenShard(const wire::SignedEnvelope& envelope,
                                   std::string_view coordinator_pk,
                                   const WireLimits& limits) {
  return OpenBody<wire::ShardBody>(envelope, coordinator_pk, limits,
                                   "shard body");
}

Decoded<wire::ResultBody> OpenResult(const wire::SignedEnvelope& envelope,
                                     std::string_view worker_pk,
                                     const WireLimits& limits) {
  return OpenBody<wire::ResultBody>(envelope, worker_pk, limits,
                                    "result body");
}

size_t FieldLimit(const google::protobuf::FieldDescriptor& field,
                  const WireLimits& l) {
  static const std::map<std::string, size_t WireLimits::*, std::less<>>
      kShared = {
          {"SignedEnvelope.body", &WireLimits::envelope_body_bytes},
          {"ShardBody.kind", &WireLimits::label_bytes},
          {"ShardBody.needs_backend", &WireLimits::label_bytes},
          {"ShardBody.params", &WireLimits::params_bytes},
          {"ResultBody.output", &WireLimits::envelope_body_bytes},
          {"ResultBody.error", &WireLimits::error_bytes},
          {"ResultBody.device", &WireLimits::label_bytes},
          {"DeviceInfo.backend", &WireLimits::label_bytes},
          {"DeviceInfo.name", &WireLimits::text_bytes},
          {"Enroll.token_secret", &WireLimits::token_secret_bytes},
          {"Enroll.name", &WireLimits::name_bytes},
          {"Hello.software_version", &WireLimits::label_bytes},
          {"Bye.reason", &WireLimits::text_bytes},
          {"Heartbeat.paused_reason", &WireLimits::text_bytes},
          {"Cancel.reason", &WireLimits::text_bytes},
          {"GoingAway.reason", &WireLimits::text_bytes},
          {"BlobChunk.data", &WireLimits::blob_chunk_bytes},
          {"Reject.detail", &WireLimits::error_bytes},
          {"TokenCreateReply.token", &WireLimits::reply_text_bytes},
          {"SubmitRequest.kind", &WireLimits::label_bytes},
          {"SubmitRequest.shard_params", &WireLimits::params_bytes},
          {"SubmitRequest.params", &WireLimits::params_bytes},
          {"SubmitRequest.request_key", &WireLimits::label_bytes},
          {"SubmitRequest.verify", &WireLimits::label_bytes},
          {"JobInfo.verify", &WireLimits::label_bytes},
          {"WorkerBanRequest.reason", &WireLimits::text_bytes},
          {"JobInfo.kind", &WireLimits::label_bytes},
          {"JobInfo.state", &WireLimits::label_bytes},
          {"JobInfo.reason", &WireLimits::reply_text_bytes},
          {"JobInfo.summary", &WireLimits::reply_text_bytes},
          {"JobInfo.owner", &WireLimits::name_bytes},
          {"UploadChunkRequest.data", &WireLimits::upload_chunk_bytes},
          {"OutputChunk.data", &WireLimits::upload_chunk_bytes},
          {"OutputReply.error", &WireLimits::error_bytes},
          {"FetchReply.data", &WireLimits::fetch_data_bytes},
          {"BlobReadReply.data", &WireLimits::fetch_data_bytes},
          {"ClientAddRequest.name", &WireLimits::name_bytes},
          {"ClientAddRequest.role", &WireLimits::label_bytes},
          {"ClientEntry.name", &WireLimits::name_bytes},
          {"ClientEntry.role", &WireLimits::label_bytes},
          {"ClientRemoveRequest.name", &WireLimits::name_bytes},
          {"WorkerInfo.name", &WireLimits::name_bytes},
          {"WorkerInfo.paused_reason", &WireLimits::reply_text_bytes},
          {"StatsReply.CountersEntry.key", &WireLimits::label_bytes},
          {"ClientError.code", &WireLimits::label_bytes},
          {"ClientError.message", &WireLimits::reply_text_bytes},
      };
  // Keys, hashes, signatures and nonces have one size.
  static const std::map<std::string, size_t, std::less<>> kFixed = {
      {"SignedEnvelope.signature", kSignatureBytes},
      {"SignedEnvelope.signer_key_id", kKeyIdBytes},
      {"ShardBody.worker_sign_pk", kSignPublicKeyBytes},
      {"ShardBody.blob_hashes", sizeof(Hash256)},
      {"ShardBody.nonce", 16},
      {"ResultBody.shard_body_hash", sizeof(Hash256)},
      {"ResultBody.output_blob", sizeof(Hash256)},
      {"ResultBody.unfetched_blob", sizeof(Hash256)},
      {"Reject.blob_hash", sizeof(Hash256)},
      {"OutputBegin.hash", sizeof(Hash256)},
      {"OutputChunk.hash", sizeof(Hash256)},
      {"OutputReply.hash", sizeof(Hash256)},
      {"Enroll.sign_pk", kSignPublicKeyBytes},
      {"Enroll.curve_pk", kCurveKeyBytes},
      {"Hello.cached_blobs", sizeof(Hash256)},
      {"BlobGet.hash", sizeof(Hash256)},
      {"Welcome.coordinator_sign_pk", kSignPublicKeyBytes},
      {"BlobChunk.hash", sizeof(Hash256)},
      {"UploadBeginRequest.hash", sizeof(Hash256)},
      {"UploadChunkRequest.hash", sizeof(Hash256)},
      {"UploadBeginRequest.upload_id", 16},  // BlobStore's kUploadIdBytes
      {"UploadBeginReply.hash", sizeof(Hash256)},
      {"UploadChunkRequest.upload_id", 16},
      {"UploadChunkReply.hash", sizeof(Hash256)},
      {"ClientAddRequest.curve_pk", kCurveKeyBytes},
      {"BlobReadRequest.hash", sizeof(Hash256)},
  };
  std::string_view name = field.full_name();
  if (name.rfind("pcfarm.wire.", 0) == 0) name.remove_prefix(12);
  if (auto it = kShared.find(name); it != kShared.end()) return l.*(it->second);
  if (auto it = kFixed.find(name); it != kFixed.end()) return it->second;
  return 0;
}

Hash256 EnvelopeBodyHash(const wire::SignedEnvelope& envelope) {
  return Blake2b256(envelope.body());
}

uint64_t WireCounters::Total() const {
  uint64_t total = 0;
  for (const auto& c : counts_) total += c.load(std::memory_order_relaxed);
  return total;
}

void ReportWireError(WireCounters* counters, std::string_view peer,
                     WireError error, std::string_view message) {
  counters->Add(error);
  spdlog::warn("wire error from {}: {}: {}", peer, WireErrorName(error),
               message);
}

}  // namespace pcfarm
