// libFuzzer target: DecodeClientReply on arbitrary bytes.
#include "tests/fuzz/frame_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pcfarm::fuzz::FuzzFrame<pcfarm::wire::ClientReply>(data, size, pcfarm::DecodeClientReply);
  return 0;
}
