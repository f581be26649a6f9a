// Writes the seed corpus of every fuzz target: OUTDIR/<target>/seed-N.
//   pcfarm_fuzz_seeds OUTDIR
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "base/file.h"
#include "crypto/hash.h"
#include "tasks/engine/token_data.h"
#include "tasks/kinds/train_result.h"
#include "tests/fuzz/samples.h"

namespace {

// Token data blobs: empty, one sequence, and sequences with stored and
// empty (all-ones) weights.
std::vector<std::string> SampleTokenData() {
  using pcfarm::EncodeTokenData;
  return {EncodeTokenData({}), EncodeTokenData({{{1, 2, 3}, {0, 1, 1}}}),
          EncodeTokenData({{{3, 1, 4}, {0, 0.5f, 2}}, {{9}, {}}, {{70000, 6}, {0, 1}}})};
}

// Train results in each codec, plain f32 and packed fp16 and int8, with
// bell-shaped values (which pack).
std::vector<std::string> SampleTrainResults() {
  using namespace pcfarm;
  std::vector<std::string> out;
  for (GradientCodec c : {GradientCodec::kNone, GradientCodec::kFp16, GradientCodec::kInt8}) {
    TrainResult r;
    r.loss = 2.5;
    r.weight = 12;
    r.tokens = 12;
    r.codec = c;
    r.backend = "cpu";
    for (int i = 0; i < 700; ++i) r.values.push_back(float((i * 37) % 23 - 11) * 1e-3f);
    auto bytes = EncodeTrainResult(r);
    if (bytes.ok()) out.push_back(*bytes);
    if (c == GradientCodec::kInt8 && bytes.ok()) {
      // The same result with a plain int8 message whose first scale is
      // FLT_MAX: finite, but its products overflow (a crash CI's fuzzer found).
      const std::string head = bytes->substr(0, bytes->find('\n') + 1);
      auto plain = EncodeGradient(c, r.values, GradientPacking::kPlain);
      if (!plain.ok()) continue;
      const float huge = std::numeric_limits<float>::max();
      std::memcpy(plain->data() + kGradientHeaderBytes, &huge, sizeof huge);
      out.push_back(head + *plain);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  pcfarm::CryptoInit();
  const std::string out = argv[1];
  using namespace pcfarm::fuzz;
  const std::vector<std::pair<const char*, std::vector<std::string>>> sets = {
      {"fuzz_worker_frame", SampleWorkerFrames()},
      {"fuzz_coordinator_frame", SampleCoordinatorFrames()},
      {"fuzz_client_request", SampleClientRequests()},
      {"fuzz_client_reply", SampleClientReplies()},
      {"fuzz_envelope", SampleEnvelopeInputs()},
      {"fuzz_token", SampleTokens()},
      {"fuzz_token_data", SampleTokenData()},
      {"fuzz_train_result", SampleTrainResults()},
  };
  size_t files = 0;
  for (const auto& [target, seeds] : sets) {
    std::string dir = out + "/" + target;
    pcfarm::Status s = pcfarm::MakeDirs(dir);
    for (size_t i = 0; s.ok() && i < seeds.size(); ++i) {
      s = pcfarm::WriteFileAtomic(dir + "/seed-" + std::to_string(i), seeds[i]);
      ++files;
    }
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("wrote %zu seeds under %s\n", files, out.c_str());
  return 0;
}
