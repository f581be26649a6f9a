// libFuzzer target: DecodeWorkerFrame on arbitrary bytes.
#include "tests/fuzz/frame_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pcfarm::fuzz::FuzzFrame<pcfarm::wire::WorkerFrame>(data, size, pcfarm::DecodeWorkerFrame);
  return 0;
}
