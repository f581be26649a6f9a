#include "proto/wire.h"

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include <catch2/catch.hpp>
#include <functional>
#include <random>
#include <set>
#include <thread>
#include <vector>

namespace pcfarm {
namespace {

using google::protobuf::util::MessageDifferencer;

// Protobuf logs invalid UTF-8 in string fields; garbage input makes plenty.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

const SigningKeyPair& CoordinatorKey() {
  static const SigningKeyPair k = SigningKeyPair::Generate();
  return k;
}
const SigningKeyPair& WorkerKey() {
  static const SigningKeyPair k = SigningKeyPair::Generate();
  return k;
}

wire::DeviceInfo Device() {
  wire::DeviceInfo d;
  d.set_index(1);
  d.set_backend("vulkan");
  d.set_name("Radeon RX 6600");
  d.set_memory_bytes(8ull << 30);
  d.set_cores(28);
  d.set_gflops(8123.5);
  d.set_fp16(true);
  return d;
}

wire::ShardBody Shard() {
  wire::ShardBody s;
  s.set_attempt_id(77);
  s.set_shard_id(12);
  s.set_job_id(3);
  s.set_shard_index(4);
  s.set_worker_sign_pk(WorkerKey().public_key());
  s.set_kind("bench");
  s.set_params(R"({"n":256})");
  s.set_issued_ms(1'700'000'000'000);
  s.set_deadline_ms(1'700'000'600'000);
  s.add_blob_hashes(HashToBytes(Blake2b256("model")));
  s.set_nonce(RandomBytes(16));
  return s;
}

wire::ResultBody ResultBodyFor(const wire::SignedEnvelope& shard) {
  wire::ResultBody r;
  r.set_attempt_id(77);
  r.set_shard_id(12);
  r.set_shard_body_hash(HashToBytes(EnvelopeBodyHash(shard)));
  r.set_ok(true);
  r.set_output(R"({"checksum":42})");
  r.set_started_ms(1);
  r.set_finished_ms(2);
  r.set_device("cpu:0");
  return r;
}

wire::SignedEnvelope SealedShard() {
  return SealEnvelope(CoordinatorKey(), Shard().SerializeAsString());
}

wire::SignedEnvelope SealedResult() {
  return SealEnvelope(WorkerKey(),
                      ResultBodyFor(SealedShard()).SerializeAsString());
}

wire::JobInfo Job() {
  wire::JobInfo j;
  j.set_job_id(3);
  j.set_kind("infer");
  j.set_state("running");
  j.set_priority(2);
  j.set_redundancy(2);
  j.set_shards_total(10);
  j.set_shards_accepted(4);
  j.set_created_ms(5);
  j.set_updated_ms(6);
  j.set_summary("{}");
  return j;
}

std::vector<wire::WorkerFrame> AllWorkerFrames() {
  std::vector<wire::WorkerFrame> out;
  wire::WorkerFrame f;
  auto* e = f.mutable_enroll();
  e->set_token_secret("c2VjcmV0");
  e->set_name("pc-kitchen");
  e->set_sign_pk(WorkerKey().public_key());
  e->set_curve_pk(CurveKeyPair::Generate().public_key());
  out.push_back(f);
  f.Clear();
  auto* h = f.mutable_hello();
  h->set_software_version("0.1.0");
  *h->add_devices() = Device();
  h->add_cached_blobs(HashToBytes(Blake2b256("b")));
  h->add_spooled_attempts(9);
  out.push_back(f);
  f.Clear();
  f.mutable_ready()->set_free_slots(2);
  out.push_back(f);
  f.Clear();
  auto* p = f.mutable_heartbeat()->add_running();
  p->set_attempt_id(77);
  p->set_fraction(0.5f);
  out.push_back(f);
  f.Clear();
  *f.mutable_result() = SealedResult();
  out.push_back(f);
  f.Clear();
  f.mutable_blob_get()->set_hash(HashToBytes(Blake2b256("b")));
  f.mutable_blob_get()->set_offset(262144);
  f.mutable_blob_get()->set_length(262144);
  out.push_back(f);
  f.Clear();
  f.mutable_bye()->set_reason("user is back");
  out.push_back(f);
  return out;
}

std::vector<wire::CoordinatorFrame> AllCoordinatorFrames() {
  std::vector<wire::CoordinatorFrame> out;
  wire::CoordinatorFrame f;
  auto* w = f.mutable_welcome();
  w->set_worker_id(5);
  w->set_heartbeat_interval_ms(1000);
  w->set_heartbeat_liveness(3);
  w->set_coordinator_sign_pk(CoordinatorKey().public_key());
  out.push_back(f);
  f.Clear();
  *f.mutable_assign()->mutable_shard() = SealedShard();
  out.push_back(f);
  f.Clear();
  f.mutable_cancel()->set_attempt_id(77);
  f.mutable_cancel()->set_reason("job cancelled");
  out.push_back(f);
  f.Clear();
  f.mutable_ack()->set_attempt_id(77);
  out.push_back(f);
  f.Clear();
  auto* c = f.mutable_blob_chunk();
  c->set_hash(HashToBytes(Blake2b256("b")));
  c->set_offset(0);
  c->set_total_size(1000);
  c->set_data(std::string(1000, 'x'));
  out.push_back(f);
  f.Clear();
  f.mutable_heartbeat()->add_running()->set_attempt_id(1);
  out.push_back(f);
  f.Clear();
  f.mutable_reject()->set_reason(wire::REJECT_UNKNOWN_ATTEMPT);
  f.mutable_reject()->set_detail("attempt 9 is not yours");
  f.mutable_reject()->set_attempt_id(9);
  out.push_back(f);
  f.Clear();
  f.mutable_reject()->set_reason(wire::REJECT_WRONG_VERSION);
  f.mutable_reject()->set_detail("pcfarm-worker speaks protocol version 0 and the "
                                 "coordinator speaks 1: upgrade pcfarm-worker");
  f.mutable_reject()->set_speaks_version(1);
  out.push_back(f);
  f.Clear();
  f.mutable_going_away()->set_reconnect_after_ms(500);
  f.mutable_going_away()->set_reason("the coordinator is stopping");
  out.push_back(f);
  return out;
}

std::vector<wire::ClientRequest> AllClientRequests() {
  std::vector<wire::ClientRequest> out;
  wire::ClientRequest r;
  r.set_request_id(1);
  r.mutable_token_create()->set_uses(2);
  r.mutable_token_create()->set_ttl_ms(3600000);
  out.push_back(r);
  r.Clear();
  r.set_request_id(2);
  auto* s = r.mutable_submit();
  s->set_kind("bench");
  s->set_priority(1);
  s->set_redundancy(2);
  s->add_shard_params(R"({"n":1})");
  s->add_shard_params(R"({"n":2})");
  s->set_params("{}");
  out.push_back(r);
  r.Clear();
  r.set_request_id(3);
  r.mutable_list_jobs();
  out.push_back(r);
  r.Clear();
  r.set_request_id(4);
  r.mutable_job_status()->set_job_id(3);
  out.push_back(r);
  r.Clear();
  r.set_request_id(5);
  r.mutable_cancel_job()->set_job_id(3);
  out.push_back(r);
  r.Clear();
  r.set_request_id(6);
  r.mutable_list_workers();
  out.push_back(r);
  r.Clear();
  r.set_request_id(7);
  r.mutable_upload_begin()->set_hash(std::string(32, 'h'));
  r.mutable_upload_begin()->set_size(1 << 20);
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);
  r.mutable_upload_chunk()->set_hash(std::string(32, 'h'));
  r.mutable_upload_chunk()->set_offset(4096);
  r.mutable_upload_chunk()->set_data(std::string(4096, 'd'));
  out.push_back(r);
  r.Clear();
  r.set_request_id(7);  // an upload whose hash the client does not know yet
  r.mutable_upload_begin()->set_upload_id(std::string(16, 'u'));
  r.mutable_upload_begin()->set_size(1 << 20);
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);
  r.mutable_upload_chunk()->set_upload_id(std::string(16, 'u'));
  r.mutable_upload_chunk()->set_offset(4096);
  r.mutable_upload_chunk()->set_data(std::string(4096, 'd'));
  out.push_back(r);
  r.Clear();
  r.set_request_id(9);
  r.mutable_fetch()->set_job_id(3);
  r.mutable_fetch()->set_from_shard(2);
  r.mutable_fetch()->set_partial(true);
  out.push_back(r);
  r.Clear();
  r.set_request_id(10);
  r.mutable_client_add()->set_name("alice");
  r.mutable_client_add()->set_role("submitter");
  r.mutable_client_add()->set_curve_pk(std::string(32, 'k'));
  out.push_back(r);
  r.Clear();
  r.set_request_id(11);
  r.mutable_client_list();
  out.push_back(r);
  r.Clear();
  r.set_request_id(12);
  r.mutable_client_remove()->set_name("alice");
  out.push_back(r);
  r.Clear();
  r.set_request_id(13);
  r.mutable_blob_read()->set_hash(std::string(32, 'h'));
  r.mutable_blob_read()->set_offset(1 << 20);
  r.mutable_blob_read()->set_length(1 << 20);
  out.push_back(r);
  return out;
}

std::vector<wire::ClientReply> AllClientReplies() {
  std::vector<wire::ClientReply> out;
  wire::ClientReply r;
  r.set_request_id(1);
  r.mutable_token_create()->set_token("pcfarm1.xyz");
  r.mutable_token_create()->set_expires_ms(9);
  r.mutable_token_create()->set_uses(2);
  out.push_back(r);
  r.Clear();
  r.set_request_id(2);
  r.mutable_submit()->set_job_id(3);
  out.push_back(r);
  r.Clear();
  r.set_request_id(3);
  *r.mutable_list_jobs()->add_jobs() = Job();
  out.push_back(r);
  r.Clear();
  r.set_request_id(4);
  *r.mutable_job_status()->mutable_job() = Job();
  out.push_back(r);
  r.Clear();
  r.set_request_id(5);
  *r.mutable_cancel_job()->mutable_job() = Job();
  out.push_back(r);
  r.Clear();
  r.set_request_id(6);
  auto* w = r.mutable_list_workers()->add_workers();
  w->set_worker_id(5);
  w->set_name("pc-kitchen");
  w->set_connected(true);
  w->set_trust(0.9);
  w->set_agreed(10);
  w->set_gflops(100);
  w->set_last_seen_ms(7);
  *w->add_devices() = Device();
  w->set_running(1);
  w->set_outdated(true);
  w->set_protocol_version(2);
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);
  r.mutable_upload_begin()->set_offset(4096);
  r.mutable_upload_begin()->set_chunk_bytes(1 << 20);
  out.push_back(r);
  r.Clear();
  r.set_request_id(9);
  r.mutable_upload_chunk()->set_received(8192);
  r.mutable_upload_chunk()->set_complete(true);
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);
  r.mutable_upload_begin()->set_present(true);
  r.mutable_upload_begin()->set_offset(8192);
  r.mutable_upload_begin()->set_hash(std::string(32, 'h'));
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);
  r.mutable_upload_begin()->set_maybe_present(true);
  r.mutable_upload_begin()->set_chunk_bytes(1 << 20);
  out.push_back(r);
  r.Clear();
  r.set_request_id(9);
  r.mutable_upload_chunk()->set_received(8192);
  r.mutable_upload_chunk()->set_complete(true);
  r.mutable_upload_chunk()->set_hash(std::string(32, 'h'));
  out.push_back(r);
  r.Clear();
  r.set_request_id(10);
  *r.mutable_fetch()->mutable_job() = Job();
  r.mutable_fetch()->set_data("{\"index\":0}\n");
  r.mutable_fetch()->set_next_shard(1);
  r.mutable_fetch()->set_done(true);
  out.push_back(r);
  r.Clear();
  r.set_request_id(11);
  r.mutable_client_add()->set_client_id(2);
  out.push_back(r);
  r.Clear();
  r.set_request_id(12);
  auto* c = r.mutable_client_list()->add_clients();
  c->set_client_id(2);
  c->set_name("alice");
  c->set_role("submitter");
  c->set_created_ms(5);
  out.push_back(r);
  r.Clear();
  r.set_request_id(13);
  r.mutable_client_remove();
  out.push_back(r);
  r.Clear();
  r.set_request_id(14);
  r.mutable_blob_read()->set_data("adapter bytes");
  r.mutable_blob_read()->set_total_size(1 << 20);
  out.push_back(r);
  r.Clear();
  r.set_request_id(7);  // a failed call: only the error is set
  r.mutable_error()->set_code("not_found");
  r.mutable_error()->set_message("no job 99");
  out.push_back(r);
  r.Clear();
  r.set_request_id(8);  // a refusal of another protocol version
  r.mutable_error()->set_code("failed_precondition");
  r.mutable_error()->set_message("pcfarm speaks protocol version 2 and the coordinator speaks 1");
  r.mutable_error()->set_speaks_version(1);
  out.push_back(r);
  return out;
}

// Encodes every sample of a frame kind, decodes it, and compares.
template <typename Frame, typename DecodeFn>
void CheckRoundTrips(std::vector<Frame> frames, DecodeFn decode,
                     size_t expected_variants) {
  std::set<int> cases;
  for (auto& f : frames) {
    std::string bytes = EncodeFrame(&f);
    CHECK(f.version() == kProtocolVersion);
    auto back = decode(bytes, WireLimits{});
    INFO(f.ShortDebugString());
    REQUIRE(back.ok());
    CHECK(MessageDifferencer::Equals(*back, f));
    cases.insert(static_cast<int>(back->msg_case()));
  }
  CHECK(cases.size() == expected_variants);
}

TEST_CASE("every frame type round trips", "[proto]") {
  CheckRoundTrips(AllWorkerFrames(), DecodeWorkerFrame, 7);
  CheckRoundTrips(AllCoordinatorFrames(), DecodeCoordinatorFrame, 8);
  CheckRoundTrips(AllClientRequests(), DecodeClientRequest, 13);
  // The error-only reply has no oneof case: 12 message cases + NOT_SET.
  CheckRoundTrips(AllClientReplies(), DecodeClientReply, 14);
}

// Every cut point of every sample frame: a typed error or (rarely, when the
// cut falls between fields) a frame; never a crash.
template <typename Frame, typename DecodeFn>
void CheckTruncations(std::vector<Frame> frames, DecodeFn decode) {
  size_t failures = 0, cuts = 0;
  for (auto& f : frames) {
    std::string bytes = EncodeFrame(&f);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto r = decode(std::string_view(bytes).substr(0, n), WireLimits{});
      ++cuts;
      if (r.ok()) {
        // A cut between fields drops trailing fields; it must still be a
        // well-formed frame then, never the original.
        CHECK(r->version() == kProtocolVersion);
        CHECK_FALSE(MessageDifferencer::Equals(*r, f));
        continue;
      }
      ++failures;
      CHECK((r.error() == WireError::kTruncatedOrGarbage ||
             r.error() == WireError::kWrongVersion ||
             r.error() == WireError::kEmpty));
      CHECK_FALSE(r.status().ok());
    }
  }
  // Most cuts land inside a field.
  CHECK(failures * 10 > cuts * 9);
}

TEST_CASE("truncated frames give typed errors", "[proto]") {
  CheckTruncations(AllWorkerFrames(), DecodeWorkerFrame);
  CheckTruncations(AllCoordinatorFrames(), DecodeCoordinatorFrame);
  CheckTruncations(AllClientRequests(), DecodeClientRequest);
  CheckTruncations(AllClientReplies(), DecodeClientReply);
}

TEST_CASE("a frame cut inside its message is truncated_or_garbage",
          "[proto]") {
  wire::CoordinatorFrame f = AllCoordinatorFrames()[4];  // blob chunk
  std::string bytes = EncodeFrame(&f);
  auto r = DecodeCoordinatorFrame(std::string_view(bytes).substr(0, bytes.size() - 10));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == WireError::kTruncatedOrGarbage);
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK(r.status().message().rfind("truncated_or_garbage: ", 0) == 0);
}

TEST_CASE("random garbage never crashes a decoder", "[proto]") {
  std::mt19937_64 rng(20240601);
  size_t accepted = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string bytes(rng() % 300, '\0');
    for (auto& c : bytes) c = char(rng());
    auto w = DecodeWorkerFrame(bytes);
    auto c = DecodeCoordinatorFrame(bytes);
    auto q = DecodeClientRequest(bytes);
    auto p = DecodeClientReply(bytes);
    for (bool ok : {w.ok(), c.ok(), q.ok(), p.ok()}) accepted += ok;
    if (w.ok()) CHECK(w->version() == kProtocolVersion);
    if (!w.ok()) CHECK(std::string(WireErrorName(w.error())) != "unknown_wire_error");
  }
  // Random bytes almost never carry version 1 and a message.
  CHECK(accepted < 20);
}

TEST_CASE("garbage that parses is still checked for version and message",
          "[proto]") {
  // Field 1 (version) = 2, then a Ready.
  std::string v2("\x08\x02\x22\x02\x08\x01", 6);
  auto r = DecodeWorkerFrame(v2);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == WireError::kWrongVersion);
  CHECK(r.message().find("version 2") != std::string::npos);

  std::string no_version("\x22\x02\x08\x01", 4);
  CHECK(DecodeWorkerFrame(no_version).error() == WireError::kWrongVersion);

  // Version 1 and no message, or only an unknown field 99.
  std::string empty_msg("\x08\x01", 2);
  CHECK(DecodeWorkerFrame(empty_msg).error() == WireError::kEmpty);
  std::string unknown("\x08\x01\x98\x06\x05", 5);
  CHECK(DecodeWorkerFrame(unknown).error() == WireError::kEmpty);
  CHECK(DecodeCoordinatorFrame(empty_msg).error() == WireError::kEmpty);
  CHECK(DecodeClientRequest(empty_msg).error() == WireError::kEmpty);
  CHECK(DecodeClientReply(empty_msg).error() == WireError::kEmpty);
  CHECK(DecodeWorkerFrame("").error() == WireError::kEmpty);

  // Version 1 and a valid Ready: accepted.
  std::string ready("\x08\x01\x22\x02\x08\x01", 6);
  auto ok = DecodeWorkerFrame(ready);
  REQUIRE(ok.ok());
  CHECK(ok->ready().free_slots() == 1);

  // A field with a lying length runs past the end.
  std::string lying("\x08\x01\x22\x7f\x08\x01", 6);
  CHECK(DecodeWorkerFrame(lying).error() == WireError::kTruncatedOrGarbage);
}

TEST_CASE("oversized frames are refused before and after parsing",
          "[proto]") {
  WireLimits limits;
  // Over the frame kind's overall limit: refused without parsing.
  std::string huge(MaxWorkerFrameBytes(limits) + 1, '\0');
  auto r = DecodeWorkerFrame(huge, limits);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == WireError::kOversized);
  CHECK(r.status().code() == StatusCode::kResourceExhausted);

  // A control message padded over the control limit (but under the RESULT
  // limit) is refused after the parse by its type's limit.
  wire::WorkerFrame bye;
  bye.mutable_bye()->set_reason(std::string(limits.control_frame_bytes, 'x'));
  auto b = DecodeWorkerFrame(EncodeFrame(&bye), limits);
  REQUIRE_FALSE(b.ok());
  CHECK(b.error() == WireError::kOversized);
  CHECK(b.message().find("bye") != std::string::npos);

  // A blob chunk bigger than the chunk limit.
  wire::CoordinatorFrame chunk;
  chunk.mutable_blob_chunk()->set_data(std::string(limits.blob_chunk_bytes + 1, 'x'));
  auto c = DecodeCoordinatorFrame(EncodeFrame(&chunk), limits);
  REQUIRE_FALSE(c.ok());
  CHECK(c.error() == WireError::kOversized);
  // Exactly one chunk is fine.
  chunk.mutable_blob_chunk()->set_data(std::string(limits.blob_chunk_bytes, 'x'));
  CHECK(DecodeCoordinatorFrame(EncodeFrame(&chunk), limits).ok());

  // A submit may be large; other client requests may not.
  WireLimits small;
  small.client_request_bytes = 4096;
  small.control_frame_bytes = 1024;
  wire::ClientRequest submit;
  submit.mutable_submit()->add_shard_params(std::string(2000, 'p'));
  CHECK(DecodeClientRequest(EncodeFrame(&submit), small).ok());
  submit.mutable_submit()->add_shard_params(std::string(3000, 'p'));
  CHECK(DecodeClientRequest(EncodeFrame(&submit), small).error() ==
        WireError::kOversized);
  wire::ClientRequest status;
  status.mutable_job_status()->set_job_id(1);
  // Padded with an unknown field 99 of 2000 bytes.
  std::string padded = EncodeFrame(&status) +
                       std::string("\x9a\x06\xd0\x0f", 4) + std::string(2000, 'u');
  auto st = DecodeClientRequest(padded, small);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error() == WireError::kOversized);
  CHECK(st.message().find("job_status") != std::string::npos);

  WireLimits tiny_reply;
  tiny_reply.client_reply_bytes = 20;
  wire::ClientReply reply = AllClientReplies()[2];
  CHECK(DecodeClientReply(EncodeFrame(&reply), tiny_reply).error() ==
        WireError::kOversized);
}

TEST_CASE("every string and bytes field has a limit", "[proto]") {
  using google::protobuf::FieldDescriptor;
  const auto* file = wire::WorkerFrame::descriptor()->file();
  WireLimits limits;
  std::vector<const google::protobuf::Descriptor*> todo;
  for (int i = 0; i < file->message_type_count(); ++i) {
    todo.push_back(file->message_type(i));
  }
  int checked = 0;
  while (!todo.empty()) {
    const auto* m = todo.back();
    todo.pop_back();
    for (int i = 0; i < m->nested_type_count(); ++i) todo.push_back(m->nested_type(i));
    for (int i = 0; i < m->field_count(); ++i) {
      const FieldDescriptor* f = m->field(i);
      if (f->type() != FieldDescriptor::TYPE_STRING &&
          f->type() != FieldDescriptor::TYPE_BYTES) {
        continue;
      }
      INFO(f->full_name());
      CHECK(FieldLimit(*f, limits) > 0);
      ++checked;
    }
  }
  CHECK(checked >= 35);  // the walk reached the whole file
}

TEST_CASE("an upload chunk has a limit of its own", "[proto]") {
  WireLimits limits;
  wire::ClientRequest r;
  r.mutable_upload_chunk()->set_hash(std::string(32, 'h'));
  r.mutable_upload_chunk()->set_data(std::string(limits.upload_chunk_bytes, 'd'));
  CHECK(DecodeClientRequest(EncodeFrame(&r), limits).ok());
  r.mutable_upload_chunk()->set_data(std::string(limits.upload_chunk_bytes + 1, 'd'));
  auto e = DecodeClientRequest(EncodeFrame(&r), limits);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error() == WireError::kOversized);
  // Other small requests keep the control-frame limit.
  wire::ClientRequest fetch;
  fetch.mutable_fetch()->set_job_id(1);
  CHECK(DecodeClientRequest(EncodeFrame(&fetch), limits).ok());
  wire::ClientRequest add;
  add.mutable_client_add()->set_curve_pk(std::string(33, 'k'));
  CHECK(DecodeClientRequest(EncodeFrame(&add), limits).error() == WireError::kOversized);
}

TEST_CASE("a field over its limit is refused, naming the field", "[proto]") {
  WireLimits limits;
  wire::WorkerFrame enroll;
  enroll.mutable_enroll()->set_name(std::string(limits.name_bytes, 'n'));
  CHECK(DecodeWorkerFrame(EncodeFrame(&enroll), limits).ok());
  enroll.mutable_enroll()->set_name(std::string(limits.name_bytes + 1, 'n'));
  auto e = DecodeWorkerFrame(EncodeFrame(&enroll), limits);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error() == WireError::kOversized);
  CHECK(e.message() == "worker frame: Enroll.name of 65 bytes is over its limit of 64 bytes");

  // Inside a repeated message.
  wire::WorkerFrame hello;
  hello.mutable_hello()->add_devices()->set_name("gpu");
  hello.mutable_hello()->add_devices()->set_name(std::string(limits.text_bytes * 10, 'g'));
  auto h = DecodeWorkerFrame(EncodeFrame(&hello), limits);
  REQUIRE_FALSE(h.ok());
  CHECK(h.message().find("DeviceInfo.name of 2560 bytes") != std::string::npos);

  // Fixed-size fields: a hash of 33 bytes.
  wire::WorkerFrame get;
  get.mutable_blob_get()->set_hash(std::string(33, 'h'));
  CHECK(DecodeWorkerFrame(EncodeFrame(&get), limits).message().find("BlobGet.hash") !=
        std::string::npos);

  // In a signed result body, checked when it is opened.
  SigningKeyPair worker = SigningKeyPair::Generate();
  wire::ResultBody body;
  body.set_error(std::string(limits.error_bytes + 1, 'e'));
  auto env = SealEnvelope(worker, body.SerializeAsString());
  auto opened = OpenResult(env, worker.public_key(), limits);
  REQUIRE_FALSE(opened.ok());
  CHECK(opened.error() == WireError::kOversized);
  CHECK(opened.message().find("ResultBody.error") != std::string::npos);

  // Client requests: a shard's params.
  wire::ClientRequest submit;
  submit.mutable_submit()->set_kind("bench");
  submit.mutable_submit()->add_shard_params(std::string(limits.params_bytes + 1, 'p'));
  auto sub = DecodeClientRequest(EncodeFrame(&submit), limits);
  REQUIRE_FALSE(sub.ok());
  CHECK(sub.message().find("SubmitRequest.shard_params") != std::string::npos);
}

TEST_CASE("sealed shards and results open with the right key", "[proto]") {
  wire::SignedEnvelope env = SealedShard();
  CHECK(env.signer_key_id() == CoordinatorKey().key_id());
  auto shard = OpenShard(env, CoordinatorKey().public_key());
  REQUIRE(shard.ok());
  CHECK(MessageDifferencer::Equals(*shard, [&] {
    wire::ShardBody s;
    REQUIRE(s.ParseFromString(env.body()));
    return s;
  }()));
  CHECK(shard->kind() == "bench");

  wire::SignedEnvelope res = SealedResult();
  auto result = OpenResult(res, WorkerKey().public_key());
  REQUIRE(result.ok());
  CHECK(result->output() == R"({"checksum":42})");
  CHECK(result->shard_body_hash().size() == 32);

  auto body = OpenEnvelope(env, CoordinatorKey().public_key());
  REQUIRE(body.ok());
  CHECK(body->data() == env.body().data());  // a view, not a copy
}

TEST_CASE("wrong signer, missing signature and oversized bodies are refused",
          "[proto]") {
  wire::SignedEnvelope env = SealedShard();
  auto wrong = OpenShard(env, WorkerKey().public_key());
  REQUIRE_FALSE(wrong.ok());
  CHECK(wrong.error() == WireError::kUnknownSigner);
  CHECK(wrong.status().code() == StatusCode::kUnauthenticated);

  // A forger who copies the coordinator's key id still fails the signature.
  SigningKeyPair forger = SigningKeyPair::Generate();
  wire::SignedEnvelope forged = SealEnvelope(forger, env.body());
  forged.set_signer_key_id(CoordinatorKey().key_id());
  CHECK(OpenShard(forged, CoordinatorKey().public_key()).error() ==
        WireError::kBadSignature);

  wire::SignedEnvelope unsigned_env = env;
  unsigned_env.clear_signature();
  CHECK(OpenShard(unsigned_env, CoordinatorKey().public_key()).error() ==
        WireError::kUnsigned);
  unsigned_env = env;
  unsigned_env.clear_signer_key_id();
  CHECK(OpenShard(unsigned_env, CoordinatorKey().public_key()).error() ==
        WireError::kUnsigned);

  WireLimits small;
  small.envelope_body_bytes = env.body().size() - 1;
  CHECK(OpenShard(env, CoordinatorKey().public_key(), small).error() ==
        WireError::kOversized);

  // Signed garbage verifies but does not parse.
  wire::SignedEnvelope junk = SealEnvelope(CoordinatorKey(), "\xff\xff\xff");
  CHECK(OpenShard(junk, CoordinatorKey().public_key()).error() ==
        WireError::kTruncatedOrGarbage);
}

TEST_CASE("any flipped byte of a sealed shard is rejected", "[proto]") {
  const wire::SignedEnvelope env = SealedShard();
  const std::string& pk = CoordinatorKey().public_key();
  auto flip_each = [&](const std::function<std::string*(wire::SignedEnvelope*)>& field,
                       WireError expected, const char* name) {
    wire::SignedEnvelope probe = env;
    size_t n = field(&probe)->size();
    for (size_t i = 0; i < n; ++i) {
      for (int bit : {0, 5, 7}) {
        wire::SignedEnvelope bad = env;
        (*field(&bad))[i] ^= char(1 << bit);
        auto r = OpenShard(bad, pk);
        INFO(name << " byte " << i << " bit " << bit);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error() == expected);
      }
    }
  };
  flip_each([](wire::SignedEnvelope* e) { return e->mutable_body(); },
            WireError::kBadSignature, "body");
  flip_each([](wire::SignedEnvelope* e) { return e->mutable_signature(); },
            WireError::kBadSignature, "signature");
  flip_each([](wire::SignedEnvelope* e) { return e->mutable_signer_key_id(); },
            WireError::kUnknownSigner, "key id");

  // The whole serialized envelope with a byte flipped: either it no longer
  // parses, or it parses and fails to open.
  std::string wire_bytes = env.SerializeAsString();
  for (size_t i = 0; i < wire_bytes.size(); ++i) {
    std::string bad = wire_bytes;
    bad[i] ^= 0x01;
    wire::SignedEnvelope e;
    if (!e.ParseFromString(bad)) continue;
    INFO("serialized byte " << i);
    CHECK_FALSE(OpenShard(e, pk).ok());
  }
}

TEST_CASE("EnvelopeBodyHash binds the exact body", "[proto]") {
  wire::SignedEnvelope env = SealedShard();
  CHECK(EnvelopeBodyHash(env) == Blake2b256(env.body()));
  wire::SignedEnvelope other = SealedShard();  // fresh nonce
  CHECK_FALSE(EnvelopeBodyHash(env) == EnvelopeBodyHash(other));
}

TEST_CASE("wire errors have names, statuses and reject reasons", "[proto]") {
  std::set<std::string> names;
  for (size_t i = 0; i < kWireErrorCount; ++i) {
    auto e = static_cast<WireError>(i);
    names.insert(WireErrorName(e));
    CHECK_FALSE(WireErrorStatus(e, "m").ok());
  }
  CHECK(names.size() == kWireErrorCount);
  CHECK(names.count("unknown_wire_error") == 0);
  CHECK(RejectReasonFor(WireError::kBadSignature) == wire::REJECT_BAD_SIGNATURE);
  CHECK(RejectReasonFor(WireError::kOversized) == wire::REJECT_BAD_MESSAGE);
}

TEST_CASE("the fields a version refusal needs keep their numbers", "[proto]") {
  // Any two protocol versions read each other's refusal through these
  // (pcfarm.proto): renumbering one breaks every other version.
  auto number = [](const google::protobuf::Descriptor* d, const char* field) {
    const auto* f = d->FindFieldByName(field);
    return f ? f->number() : -1;
  };
  for (const auto* d : {wire::WorkerFrame::descriptor(),
                        wire::CoordinatorFrame::descriptor(),
                        wire::ClientRequest::descriptor(),
                        wire::ClientReply::descriptor()}) {
    INFO(d->name());
    CHECK(number(d, "version") == 1);
  }
  CHECK(number(wire::ClientRequest::descriptor(), "request_id") == 2);
  CHECK(number(wire::ClientReply::descriptor(), "request_id") == 2);
  CHECK(number(wire::ClientReply::descriptor(), "error") == 3);
  CHECK(number(wire::ClientError::descriptor(), "code") == 1);
  CHECK(number(wire::ClientError::descriptor(), "message") == 2);
  CHECK(number(wire::ClientError::descriptor(), "speaks_version") == 3);
  CHECK(number(wire::CoordinatorFrame::descriptor(), "reject") == 8);
  CHECK(number(wire::Reject::descriptor(), "reason") == 1);
  CHECK(number(wire::Reject::descriptor(), "detail") == 2);
  CHECK(number(wire::Reject::descriptor(), "speaks_version") == 4);
  CHECK(wire::REJECT_WRONG_VERSION == 8);
}

TEST_CASE("a version mismatch says both versions and what to upgrade", "[proto]") {
  std::string older = VersionMismatchText("pcfarm-worker", 1, 2, "0.2.0");
  CHECK(older ==
        "pcfarm-worker speaks protocol version 1 and the coordinator speaks 2: "
        "upgrade pcfarm-worker to the coordinator's release (pcfarm 0.2.0)");
  std::string newer = VersionMismatchText("pcfarm", 3, 2, "");
  CHECK(newer ==
        "pcfarm speaks protocol version 3 and the coordinator speaks 2: upgrade "
        "pcfarm-coordinator to a release that speaks 3, or run the pcfarm of the "
        "coordinator's release");
  CHECK(std::string(PcfarmRelease()).find('.') != std::string::npos);
}

TEST_CASE("WireCounters count from many threads", "[proto]") {
  WireCounters counters;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        counters.Add(WireError::kOversized);
        counters.Add(WireError::kBadSignature);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(counters.Get(WireError::kOversized) == 4000);
  CHECK(counters.Get(WireError::kBadSignature) == 4000);
  CHECK(counters.Get(WireError::kEmpty) == 0);
  CHECK(counters.Total() == 8000);

  auto bad = DecodeWorkerFrame("\x08\x02");
  ReportWireError(&counters, "worker 5", bad);
  CHECK(counters.Get(WireError::kWrongVersion) == 1);
}

}  // namespace
}  // namespace pcfarm
