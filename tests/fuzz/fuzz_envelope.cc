// libFuzzer target: opening signed envelopes.
//
// Input 'E' + bytes: the bytes are a serialized SignedEnvelope from a peer;
// OpenShard and OpenResult must reject or accept it without crashing, and
// accept only what the fuzzing key really signed.
// Input 'B' + bytes: the bytes are a body the fuzzing key seals; opening must
// verify, then parse or answer truncated_or_garbage.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/wire.h"
#include "tests/fuzz/samples.h"

using namespace pcfarm;
using pcfarm::fuzz::FuzzCheck;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  const SigningKeyPair& key = fuzz::FuzzSigningKey();
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  wire::SignedEnvelope env;
  if (data[0] == 'E') {
    if (!env.ParseFromArray(rest.data(), static_cast<int>(rest.size()))) return 0;
  } else if (data[0] == 'B') {
    env = SealEnvelope(key, std::string(rest));
  } else {
    return 0;
  }
  auto body = OpenEnvelope(env, key.public_key());
  if (body.ok()) {
    FuzzCheck(Verify(key.public_key(), *body, env.signature()).ok(),
              "an opened envelope verifies");
  } else {
    FuzzCheck(data[0] == 'E', "a freshly sealed body opens");
  }
  auto shard = OpenShard(env, key.public_key());
  auto result = OpenResult(env, key.public_key());
  if (!body.ok()) {
    FuzzCheck(!shard.ok() && shard.error() == body.error(), "shard error matches");
    FuzzCheck(!result.ok() && result.error() == body.error(), "result error matches");
  } else {
    // ... or parses with a field over its limit (FieldLimit), named.
    auto parsed_or_refused = [](const auto& d) {
      return d.ok() || d.error() == WireError::kTruncatedOrGarbage ||
             (d.error() == WireError::kOversized &&
              d.message().find("over its limit") != std::string::npos);
    };
    FuzzCheck(parsed_or_refused(shard),
              "a verified shard body parses, is garbage or has a field over its limit");
    FuzzCheck(parsed_or_refused(result),
              "a verified result body parses, is garbage or has a field over its limit");
  }
  // Another key never opens it.
  static const SigningKeyPair other =
      SigningKeyPair::FromSeed(std::string(kSignSeedBytes, '\x43')).value();
  FuzzCheck(!OpenEnvelope(env, other.public_key()).ok(),
            "an envelope never opens for another key");
  return 0;
}
