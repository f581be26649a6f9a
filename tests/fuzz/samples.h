// Sample inputs shared by the fuzz targets and their seed generator: one
// valid message of every type, signed with a fixed fuzzing key so the
// fuzzer starts from envelopes that verify.
#pragma once

#include <string>
#include <vector>

#include "crypto/keys.h"

namespace pcfarm::fuzz {

// Deterministic key (seed of 0x42 bytes); never used outside fuzzing.
const SigningKeyPair& FuzzSigningKey();

// Serialized frames, one per message type of each kind.
std::vector<std::string> SampleWorkerFrames();
std::vector<std::string> SampleCoordinatorFrames();
std::vector<std::string> SampleClientRequests();
std::vector<std::string> SampleClientReplies();
// Inputs of fuzz_envelope: a mode byte ('E': serialized envelope, 'B': body
// to seal) followed by the bytes.
std::vector<std::string> SampleEnvelopeInputs();
std::vector<std::string> SampleTokens();

// Aborts (a crash the fuzzer reports) when `condition` is false.
void FuzzCheck(bool condition, const char* what);

}  // namespace pcfarm::fuzz
