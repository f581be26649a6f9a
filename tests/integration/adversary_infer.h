// Inference adversaries (issue 17): a SimWorker that runs the real protocol
// but lies in its `infer` results, or in its `infer_check` verdicts, so that
// tests and benchmarks can measure what verification catches. Test-only: it
// lives under tests/ and is linked into no shipped binary.
//
// Each cheat answers with a well-formed result (infer's ValidateOutput
// accepts it; an assertion checks that), signed by the worker
// (SimWorker::SealResult), bound to the shard it was given: only a
// comparison with an independent run can tell it from an honest answer.
// Kinds a cheat does not lie in are answered honestly.
//
//   random-tokens  every output's tokens replaced by random ids of the
//                  model's vocabulary (the same count; a final stop token
//                  kept), the text their decoding, logprobs about those of a
//                  uniform guess.
//   truncated      every output of two or more tokens cut at a random
//                  point, finish "stop" (as if the model had stopped).
//   copied         each output replaced by another one: another prompt's of
//                  the shard, or one of the previous infer shard it answered.
//   cheaper-model  the shard run by the real infer kind on another model
//                  (options.cheaper_model, e.g. a tiny one with other weights).
//   wrong-seed     the shard run with another seed (a lie only when
//                  sampling: temperature > 0).
//   rubber-stamp   infer answered honestly; every infer_check verdict is
//                  "ok" whatever the claim, without looking.
// `rubber_stamp_checks` adds the last lie to any other cheat.
//
// The adversary runs the honest answer too (a SimWorker's compute is free)
// to count its lies: results whose output differs from the honest one.
//
// Thread-safety: none; the thread that drives its SimWorker uses it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "tasks/model/tokenizer.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {

enum class InferCheat {
  kHonest,
  kRandomTokens,
  kTruncated,
  kCopied,
  kCheaperModel,
  kWrongSeed,
  kRubberStamp,
};

// Every cheat in the order above, kHonest left out.
std::vector<InferCheat> AllInferCheats();
// "honest", "random-tokens", ... as in the header comment.
const char* InferCheatName(InferCheat cheat);
// The cheat of that name; nullopt for an unknown one.
std::optional<InferCheat> InferCheatFromName(std::string_view name);

// A model directory's files hashed: `files` is an infer params "model" map
// (file name -> BLAKE2b-256 hex), `paths` each hash's file.
struct HashedModel {
  nlohmann::json files = nlohmann::json::object();
  std::map<std::string, std::string> paths;
};
// Hashes every regular file directly in `dir`. IoError when one cannot be
// read; InvalidArgument when there is none.
Result<HashedModel> HashModelDirectory(const std::string& dir);

using BlobPathFn = std::function<Result<std::string>(std::string_view hash_hex)>;
// A blob_path that resolves `model`'s hashes to its files and asks
// `fallback` for every other hash.
BlobPathFn BlobPathWithModel(HashedModel model, BlobPathFn fallback);

struct InferAdversaryOptions {
  InferCheat cheat = InferCheat::kHonest;
  // Also rubber-stamp infer_check shards (implied by kRubberStamp).
  bool rubber_stamp_checks = false;
  // Seeds its own choices (random ids, where to cut, what to copy, the
  // wrong seed): adversaries of one cheat with different seeds tell
  // different lies, the same seed the same ones.
  uint64_t seed = 1;
  // kCheaperModel: the "model" map of the model it runs instead. The
  // worker's blob_path must resolve its hashes (BlobPathWithModel).
  nlohmann::json cheaper_model;
};

class InferAdversary {
 public:
  // REQUIRES: `worker` outlives this, and was made with auto_work = false
  // (else Step() answers its shards honestly first).
  InferAdversary(SimWorker* worker, InferAdversaryOptions options);

  // The (unsigned) result body the adversary sends for `a`.
  wire::ResultBody Answer(const SimAssignment& a);

  // Answers every pending ASSIGN of its worker: Answer(), SealResult,
  // SendResult, then READY for one slot. Returns how many it answered.
  Result<int> AnswerPending();

  SimWorker* worker() const { return worker_; }
  const InferAdversaryOptions& options() const { return options_; }
  // Results sent (by AnswerPending) or made (by Answer), of any kind.
  uint64_t results() const { return results_; }
  // Of those, the ones whose output differs from the honest answer.
  uint64_t lies() const { return lies_; }

 private:
  // Replaces body->output with the cheat's for an infer shard.
  void LieInInfer(const SimAssignment& a, const nlohmann::json& params,
                  wire::ResultBody* body);
  // The output of the infer kind run with `params` instead of the shard's.
  std::optional<std::string> RunWith(const SimAssignment& a, const nlohmann::json& params);
  // The tokenizer of params' model (tokenizer.json), kept by hash; null
  // for a model without one (GGUF).
  const Tokenizer* TokenizerOf(const nlohmann::json& params);
  std::string TextOf(const Tokenizer* tok, const nlohmann::json& tokens,
                     const std::string& fallback) const;

  SimWorker* worker_;
  InferAdversaryOptions options_;
  std::mt19937_64 rng_;
  std::map<std::string, std::unique_ptr<Tokenizer>> tokenizers_;
  nlohmann::json last_outputs_ = nlohmann::json::array();  // copied: the previous shard's
  uint64_t results_ = 0;
  uint64_t lies_ = 0;
};

}  // namespace pcfarm
