#include "tests/fuzz/samples.h"

#include <cstdio>
#include <cstdlib>

#include "crypto/token.h"
#include "proto/wire.h"

namespace pcfarm::fuzz {

const SigningKeyPair& FuzzSigningKey() {
  static const SigningKeyPair key =
      SigningKeyPair::FromSeed(std::string(kSignSeedBytes, '\x42')).value();
  return key;
}

void FuzzCheck(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

namespace {

wire::ShardBody Shard() {
  wire::ShardBody s;
  s.set_attempt_id(7);
  s.set_shard_id(2);
  s.set_job_id(1);
  s.set_worker_sign_pk(std::string(32, '\x01'));
  s.set_kind("bench");
  s.set_params(R"({"n":64})");
  s.set_issued_ms(1000);
  s.set_deadline_ms(2000);
  s.add_blob_hashes(std::string(32, '\x02'));
  s.set_nonce(std::string(16, '\x03'));
  return s;
}

wire::ResultBody Result() {
  wire::ResultBody r;
  r.set_attempt_id(7);
  r.set_shard_id(2);
  r.set_shard_body_hash(std::string(32, '\x04'));
  r.set_ok(true);
  r.set_output(R"({"checksum":1})");
  r.set_device("cpu:0");
  return r;
}

template <typename Frame>
std::string Enc(Frame f) {
  return EncodeFrame(&f);
}

}  // namespace

std::vector<std::string> SampleWorkerFrames() {
  std::vector<std::string> out;
  wire::WorkerFrame f;
  f.mutable_enroll()->set_token_secret("c2VjcmV0");
  f.mutable_enroll()->set_name("pc");
  f.mutable_enroll()->set_sign_pk(std::string(32, '\x05'));
  f.mutable_enroll()->set_curve_pk(std::string(32, '\x06'));
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_hello()->set_software_version("0.1.0");
  auto* d = f.mutable_hello()->add_devices();
  d->set_backend("cpu");
  d->set_memory_bytes(1 << 30);
  d->set_gflops(12.5);
  f.mutable_hello()->add_cached_blobs(std::string(32, '\x02'));
  f.mutable_hello()->add_spooled_attempts(3);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_ready()->set_free_slots(1);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_heartbeat()->add_running()->set_fraction(0.25f);
  out.push_back(Enc(f));
  f.Clear();
  *f.mutable_result() =
      SealEnvelope(FuzzSigningKey(), Result().SerializeAsString());
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_blob_get()->set_hash(std::string(32, '\x02'));
  f.mutable_blob_get()->set_length(4096);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_bye()->set_reason("idle over");
  out.push_back(Enc(f));
  return out;
}

std::vector<std::string> SampleCoordinatorFrames() {
  std::vector<std::string> out;
  wire::CoordinatorFrame f;
  f.mutable_welcome()->set_worker_id(3);
  f.mutable_welcome()->set_heartbeat_interval_ms(1000);
  f.mutable_welcome()->set_coordinator_sign_pk(FuzzSigningKey().public_key());
  out.push_back(Enc(f));
  f.Clear();
  *f.mutable_assign()->mutable_shard() =
      SealEnvelope(FuzzSigningKey(), Shard().SerializeAsString());
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_cancel()->set_attempt_id(7);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_ack()->set_attempt_id(7);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_blob_chunk()->set_hash(std::string(32, '\x02'));
  f.mutable_blob_chunk()->set_total_size(64);
  f.mutable_blob_chunk()->set_data(std::string(64, 'd'));
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_heartbeat();
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_reject()->set_reason(wire::REJECT_BAD_TOKEN);
  f.mutable_reject()->set_detail("token expired");
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_reject()->set_reason(wire::REJECT_WRONG_VERSION);
  f.mutable_reject()->set_detail("upgrade pcfarm-worker");
  f.mutable_reject()->set_speaks_version(1);
  out.push_back(Enc(f));
  f.Clear();
  f.mutable_going_away()->set_reconnect_after_ms(500);
  f.mutable_going_away()->set_reason("the coordinator is stopping");
  out.push_back(Enc(f));
  return out;
}

std::vector<std::string> SampleClientRequests() {
  std::vector<std::string> out;
  wire::ClientRequest r;
  r.set_request_id(1);
  r.mutable_token_create()->set_uses(1);
  out.push_back(Enc(r));
  r.mutable_submit()->set_kind("infer");
  r.mutable_submit()->add_shard_params("{}");
  out.push_back(Enc(r));
  r.mutable_list_jobs();
  out.push_back(Enc(r));
  r.mutable_job_status()->set_job_id(1);
  out.push_back(Enc(r));
  r.mutable_cancel_job()->set_job_id(1);
  out.push_back(Enc(r));
  r.mutable_list_workers();
  out.push_back(Enc(r));
  r.mutable_upload_begin()->set_hash(std::string(32, 'h'));
  r.mutable_upload_begin()->set_size(100);
  out.push_back(Enc(r));
  r.mutable_upload_chunk()->set_hash(std::string(32, 'h'));
  r.mutable_upload_chunk()->set_data("bytes");
  out.push_back(Enc(r));
  r.mutable_upload_begin()->set_upload_id(std::string(16, 'u'));
  r.mutable_upload_begin()->set_size(100);
  out.push_back(Enc(r));
  r.mutable_upload_chunk()->set_upload_id(std::string(16, 'u'));
  r.mutable_upload_chunk()->set_data("bytes");
  out.push_back(Enc(r));
  r.mutable_fetch()->set_job_id(1);
  out.push_back(Enc(r));
  r.mutable_client_add()->set_name("alice");
  r.mutable_client_add()->set_curve_pk(std::string(32, 'k'));
  out.push_back(Enc(r));
  r.mutable_blob_read()->set_hash(std::string(32, 'h'));
  r.mutable_blob_read()->set_length(4096);
  out.push_back(Enc(r));
  return out;
}

std::vector<std::string> SampleClientReplies() {
  std::vector<std::string> out;
  wire::ClientReply r;
  r.set_request_id(1);
  r.mutable_token_create()->set_token("pcfarm1.x");
  out.push_back(Enc(r));
  r.mutable_submit()->set_job_id(1);
  out.push_back(Enc(r));
  auto* j = r.mutable_list_jobs()->add_jobs();
  j->set_kind("bench");
  j->set_state("running");
  out.push_back(Enc(r));
  r.mutable_job_status()->mutable_job()->set_job_id(1);
  out.push_back(Enc(r));
  r.mutable_cancel_job()->mutable_job()->set_state("cancelled");
  out.push_back(Enc(r));
  auto* w = r.mutable_list_workers()->add_workers();
  w->set_name("pc");
  w->add_devices()->set_backend("vulkan");
  out.push_back(Enc(r));
  r.mutable_upload_chunk()->set_complete(true);
  r.mutable_upload_chunk()->set_hash(std::string(32, 'h'));
  out.push_back(Enc(r));
  r.mutable_fetch()->set_data("{}\n");
  out.push_back(Enc(r));
  r.mutable_client_list()->add_clients()->set_name("alice");
  out.push_back(Enc(r));
  r.mutable_blob_read()->set_data("bytes");
  r.mutable_blob_read()->set_total_size(5);
  out.push_back(Enc(r));
  wire::ClientReply e;
  e.mutable_error()->set_code("not_found");
  e.mutable_error()->set_message("no job 9");
  out.push_back(Enc(e));
  e.mutable_error()->set_code("failed_precondition");
  e.mutable_error()->set_message("pcfarm speaks protocol version 2 and the coordinator speaks 1");
  e.mutable_error()->set_speaks_version(1);
  out.push_back(Enc(e));
  return out;
}

std::vector<std::string> SampleEnvelopeInputs() {
  std::string shard = Shard().SerializeAsString();
  std::string result = Result().SerializeAsString();
  return {
      "E" + SealEnvelope(FuzzSigningKey(), shard).SerializeAsString(),
      "E" + SealEnvelope(FuzzSigningKey(), result).SerializeAsString(),
      "B" + shard,
      "B" + result,
  };
}

std::vector<std::string> SampleTokens() {
  EnrollmentToken t;
  t.secret = std::string(kTokenSecretBytes, '\x07');
  t.endpoint = "tcp://farm.lan:7070";
  t.coordinator_sign_pk = FuzzSigningKey().public_key();
  t.coordinator_curve_pk = std::string(32, '\x08');
  t.expires_ms = 1'900'000'000'000;
  t.uses = 5;
  std::string a = EncodeEnrollmentToken(t);
  t.endpoint = "tcp://[::1]:1";
  t.uses = 1;
  return {a, EncodeEnrollmentToken(t), "pcfarm1.", "pcfarm2.AAAA"};
}

}  // namespace pcfarm::fuzz
