// The wire layer (DESIGN.md §5): turns ZeroMQ message bytes into checked
// protobuf frames and back, and seals / opens signed envelopes.
//
// Every decoder checks, in this order and before anything else is trusted:
// the byte size against the frame kind's limit, the protobuf parse, the
// protocol version, that a message is set, the limit of the message type
// found, and the limit of every string and bytes field set (FieldLimit). A failure is a WireError plus a message, never a crash or an
// exception; the daemon logs it, counts it (WireCounters) and answers or
// drops the peer.
//
// Envelopes: OpenEnvelope verifies the Ed25519 signature over the exact
// `body` bytes before anything parses them; OpenShard / OpenResult parse
// only verified bytes.
//
// Thread-safety: free functions are thread-safe; WireCounters may be shared
// by any number of threads.
#pragma once

#include <array>
#include <cassert>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "base/status.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

// The `version` every frame carries; a peer refuses any other, with an
// answer every version can read (pcfarm.proto: the frozen fields).
constexpr uint32_t kProtocolVersion = 1;

// The release this build is, e.g. "0.1.0" (the CMake project version).
const char* PcfarmRelease();

// One line for a person when `program` ("pcfarm-worker", "pcfarm") speaks
// protocol `program_version` and the coordinator `coordinator_version`
// (they differ): both versions and what to upgrade, e.g. "pcfarm-worker
// speaks protocol version 0 and the coordinator speaks 1: upgrade
// pcfarm-worker to the coordinator's release (pcfarm 0.1.0)".
// `coordinator_release` may be empty (not known).
std::string VersionMismatchText(std::string_view program,
                                uint32_t program_version,
                                uint32_t coordinator_version,
                                std::string_view coordinator_release);

constexpr size_t kKiB = 1024;
constexpr size_t kMiB = 1024 * 1024;
// Default size of one blob chunk (BlobGet.length, BlobChunk.data).
constexpr size_t kDefaultBlobChunkBytes = 256 * kKiB;
// Room for the fields around a chunk or an envelope body.
constexpr size_t kFrameOverheadBytes = 4 * kKiB;

// Size limits, in bytes of the serialized frame unless said otherwise.
struct WireLimits {
  // Frames without bulk data: ENROLL, READY, HEARTBEAT, BLOB_GET, BYE,
  // WELCOME, CANCEL, ACK, REJECT, and client calls other than those below.
  size_t control_frame_bytes = 64 * kKiB;
  // HELLO lists devices and every cached blob.
  size_t hello_frame_bytes = 1 * kMiB;
  // BlobChunk.data at most this; a BLOB_CHUNK frame at most this + overhead.
  size_t blob_chunk_bytes = kDefaultBlobChunkBytes;
  // SignedEnvelope.body (ShardBody or ResultBody) at most this; ASSIGN and
  // RESULT frames at most this + overhead.
  size_t envelope_body_bytes = 8 * kMiB;
  // SUBMIT carries every shard's parameters.
  size_t client_request_bytes = 16 * kMiB;
  // UploadChunkRequest.data at most this; an UPLOAD_CHUNK request at most
  // this + overhead.
  size_t upload_chunk_bytes = 1 * kMiB;
  // Every reply (job and worker lists grow with the farm).
  size_t client_reply_bytes = 16 * kMiB;

  // Each string and bytes field has a limit of its own (FieldLimit below);
  // a longer value makes the frame kOversized with a message naming the
  // field. These are the limits the fields share:
  size_t name_bytes = 64;             // Enroll.name, WorkerInfo.name, client names
  size_t token_secret_bytes = 64;     // Enroll.token_secret (base64url)
  size_t label_bytes = 64;            // kinds, backends, versions, states
  size_t text_bytes = 256;            // Bye.reason, DeviceInfo.name, Cancel.reason
  size_t error_bytes = 4 * kKiB;      // ResultBody.error, Reject.detail
  size_t reply_text_bytes = 64 * kKiB;  // job reasons and summaries, errors
  size_t params_bytes = 64 * kKiB;    // a job's and each shard's params
  size_t fetch_data_bytes = 12 * kMiB;  // FetchReply.data
};

// The socket option ZMQ_MAXMSGSIZE for a socket that receives frames of at
// most `largest_frame` bytes: twice that, so that a frame over our limit by
// up to 2x still reaches the decoder and gets a typed refusal (REJECT or a
// ClientError naming the limit); a larger one makes libzmq close the
// connection before any of it is read.
inline int64_t ZmqMaxMessageBytes(size_t largest_frame) {
  return static_cast<int64_t>(2 * largest_frame);
}

enum class WireError {
  kOversized = 0,       // over the size limit of the frame or message type
  kTruncatedOrGarbage,  // protobuf could not parse the bytes
  kWrongVersion,        // `version` is not kProtocolVersion
  kEmpty,               // no message set (or a type this build does not know)
  kUnsigned,            // envelope without signature or signer key id
  kBadSignature,        // signature does not verify over the body
  kUnknownSigner,       // signer key id is not the expected signer's
};
constexpr size_t kWireErrorCount = 7;

// Stable lower-case name, e.g. "truncated_or_garbage".
const char* WireErrorName(WireError error);

// The REJECT reason a coordinator sends for `error`.
wire::RejectReason RejectReasonFor(WireError error);

// A decoded value of type T, or the WireError that stopped it.
template <typename T>
class [[nodiscard]] Decoded {
 public:
  Decoded(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Decoded(WireError error, std::string message)
      : error_(error), message_(std::move(message)) {}

  bool ok() const { return value_.has_value(); }
  // REQUIRES: !ok().
  WireError error() const { assert(!ok()); return error_; }
  // REQUIRES: !ok(). What was wrong, e.g. "frame of 9000000 bytes is over
  // the 8392704-byte limit".
  const std::string& message() const { assert(!ok()); return message_; }
  // OK, or the error as a Status: kResourceExhausted for kOversized,
  // kUnauthenticated for signature and signer errors, kInvalidArgument
  // otherwise; the message starts with WireErrorName().
  Status status() const;

  // REQUIRES: ok().
  T& value() & { assert(ok()); return *value_; }
  const T& value() const& { assert(ok()); return *value_; }
  T&& value() && { assert(ok()); return std::move(*value_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  WireError error_ = WireError::kEmpty;
  std::string message_;
};

Status WireErrorStatus(WireError error, const std::string& message);

template <typename T>
Status Decoded<T>::status() const {
  return ok() ? Status::Ok() : WireErrorStatus(error_, message_);
}

// ------------------------------------------------------------------ frames

// Parse one ZeroMQ message part. See the header comment for the checks.
Decoded<wire::WorkerFrame> DecodeWorkerFrame(std::string_view bytes,
                                             const WireLimits& limits = {});
Decoded<wire::CoordinatorFrame> DecodeCoordinatorFrame(
    std::string_view bytes, const WireLimits& limits = {});
Decoded<wire::ClientRequest> DecodeClientRequest(std::string_view bytes,
                                                 const WireLimits& limits = {});
Decoded<wire::ClientReply> DecodeClientReply(std::string_view bytes,
                                             const WireLimits& limits = {});

// Set `version` to kProtocolVersion and serialize. The frame is modified
// only in its version. REQUIRES: a message is set (a bug otherwise).
std::string EncodeFrame(wire::WorkerFrame* frame);
std::string EncodeFrame(wire::CoordinatorFrame* frame);
std::string EncodeFrame(wire::ClientRequest* request);
std::string EncodeFrame(wire::ClientReply* reply);

// The largest frame of each kind a decoder accepts before parsing.
size_t MaxWorkerFrameBytes(const WireLimits& limits);
size_t MaxCoordinatorFrameBytes(const WireLimits& limits);
size_t MaxClientRequestBytes(const WireLimits& limits);

// --------------------------------------------------------------- envelopes

// Signs `body` (a serialized ShardBody or ResultBody) with `signer`.
wire::SignedEnvelope SealEnvelope(const SigningKeyPair& signer,
                                  std::string body);

// Verifies that `envelope` was signed by `signer_pk` over its exact body:
// kOversized when the body is over limits.envelope_body_bytes, kUnsigned
// when signature or key id is missing, kUnknownSigner when the key id is not
// KeyIdOf(signer_pk), kBadSignature when the signature does not verify.
// Returns a view of envelope.body(), valid while `envelope` is unchanged.
Decoded<std::string_view> OpenEnvelope(const wire::SignedEnvelope& envelope,
                                       std::string_view signer_pk,
                                       const WireLimits& limits = {});

// OpenEnvelope, then parse the verified body (kTruncatedOrGarbage when it
// is not a ShardBody / ResultBody; kOversized, naming the field, when a
// field of it is over its FieldLimit). Semantic checks (attempt, expiry,
// replay) stay with the caller.
Decoded<wire::ShardBody> OpenShard(const wire::SignedEnvelope& envelope,
                                   std::string_view coordinator_pk,
                                   const WireLimits& limits = {});
Decoded<wire::ResultBody> OpenResult(const wire::SignedEnvelope& envelope,
                                     std::string_view worker_pk,
                                     const WireLimits& limits = {});

// The most bytes a string or bytes field of any pcfarm.wire message may
// hold (each element, for a repeated field; the key, for a map). 0 for a
// field this build has no limit for (refused when non-empty; wire_test
// checks that every field has one).
size_t FieldLimit(const google::protobuf::FieldDescriptor& field,
                  const WireLimits& limits);

// BLAKE2b-256 of the exact body bytes: what ResultBody.shard_body_hash binds.
Hash256 EnvelopeBodyHash(const wire::SignedEnvelope& envelope);

// ---------------------------------------------------------------- counters

// How many wire errors of each kind a daemon has seen (the status page).
class WireCounters {
 public:
  void Add(WireError error) {
    counts_[static_cast<size_t>(error)].fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t Get(WireError error) const {
    return counts_[static_cast<size_t>(error)].load(std::memory_order_relaxed);
  }
  uint64_t Total() const;

 private:
  std::array<std::atomic<uint64_t>, kWireErrorCount> counts_{};
};

// Logs one warning line "wire error from <peer>: <name>: <message>" and
// counts it.
void ReportWireError(WireCounters* counters, std::string_view peer,
                     WireError error, std::string_view message);

template <typename T>
void ReportWireError(WireCounters* counters, std::string_view peer,
                     const Decoded<T>& failed) {
  ReportWireError(counters, peer, failed.error(), failed.message());
}

}  // namespace pcfarm
