// What the farm's integration tests, the chaos driver and its benchmark
// share to make an LLM job and read what it gave back: a tiny model, prompt
// and training files, `pcfarm submit infer|finetune` and `pcfarm fetch`,
// run through a MiniCluster's CLI. Errors are values (no Catch here), so a
// benchmark can call them too; a test wraps them in REQUIRE_OK.
//
// Thread-safety: as MiniCluster's (one thread per cluster).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {

// The non-empty lines of `text`, without their newlines.
std::vector<std::string> Lines(const std::string& text);
// The whole file; "" when it cannot be read.
std::string ReadAll(const std::string& path);
Status WriteAll(const std::string& path, const std::string& data);

// `n` prompts (JSONL): plain ones of different lengths, and every fifth a
// chat. The same `n` gives the same bytes.
std::string PromptsFile(int n, bool chat_lines = true);
// A small training set (JSONL, 16 examples) of the three kinds finetune
// reads: text, prompt/completion and messages.
std::string TrainData(bool mixed_formats = true);
// The training arguments that farm and local fine-tuning tests give both
// sides: batch 6, lr 0.01, LoRA rank 4, seed 7, `steps` steps.
std::vector<std::string> TrainArgs(const std::string& model, const std::string& data,
                                   int steps);

// `pcfarm local make-model --config <preset> --seed 3` into `dir`: the same
// preset gives the same bytes.
Status MakeFarmModel(MiniCluster* c, const std::string& dir,
                     const std::string& preset = "tiny");
// `pcfarm submit <kind> args...`; returns the job id (its last line).
Result<int64_t> SubmitFarmJob(MiniCluster* c, const std::string& kind,
                              const std::vector<std::string>& args);
// `pcfarm fetch JOB --out OUT [--partial]`: a file (infer) or a directory
// (finetune: the adapter) at `out`.
Status FetchFarmJob(MiniCluster* c, int64_t job, const std::string& out,
                    bool partial = false);

}  // namespace pcfarm
