#include "coordinator/cli/client.h"

#include <catch2/catch.hpp>

#include "proto/wire.h"

namespace pcfarm {
namespace {

// What a coordinator of another protocol version sends back: its own
// version, our request id and, from this release on, a ClientError.
std::string ReplyOfVersion(uint32_t version, const std::string& message) {
  wire::ClientReply r;
  r.set_version(version);
  r.set_request_id(7);
  if (!message.empty()) {
    r.mutable_error()->set_code("failed_precondition");
    r.mutable_error()->set_message(message);
    r.mutable_error()->set_speaks_version(version);
  }
  return r.SerializeAsString();
}

TEST_CASE("a reply of another protocol version names both and what to upgrade") {
  const uint32_t newer = kProtocolVersion + 1;
  std::string bytes = ReplyOfVersion(newer, "pcfarm speaks protocol version 1 and the "
                                            "coordinator speaks 2: upgrade pcfarm");
  REQUIRE(DecodeClientReply(bytes).error() == WireError::kWrongVersion);
  Status s = OtherVersionReplyStatus(bytes, "tcp://farm:7071");
  CHECK(s.code() == StatusCode::kFailedPrecondition);
  CHECK(s.message().find("tcp://farm:7071") != std::string::npos);
  CHECK(s.message().find("pcfarm speaks protocol version " +
                         std::to_string(kProtocolVersion) +
                         " and the coordinator speaks " + std::to_string(newer)) !=
        std::string::npos);
  CHECK(s.message().find("upgrade pcfarm to the coordinator's release") !=
        std::string::npos);
  CHECK(s.message().find("the coordinator says: ") != std::string::npos);

  // An older coordinator (it knows nothing of this): we say it ourselves.
  Status old = OtherVersionReplyStatus(ReplyOfVersion(0, ""), "tcp://farm:7071");
  CHECK(old.code() == StatusCode::kFailedPrecondition);
  CHECK(old.message().find("upgrade pcfarm-coordinator to a release that speaks " +
                           std::to_string(kProtocolVersion)) != std::string::npos);
  CHECK(old.message().find("says") == std::string::npos);
}

}  // namespace
}  // namespace pcfarm
