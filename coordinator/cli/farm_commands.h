// The `pcfarm` commands for LLM jobs on the farm and for the farm's users:
//   submit infer   check a model and a prompts file here, upload them, queue
//                  the job (its id is the last line printed)
//   fetch          write a job's results to a file
//   upload         put a file into the coordinator's blob store (resumable,
//                  deduplicated); prints its hash
//   client add|list|remove   the CLI keys the coordinator accepts (admin)
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "coordinator/cli/cli_common.h"

namespace pcfarm {

struct InferSubmitOptions {
  std::string model;
  std::string prompts;
  std::string adapter;
  // "q8_0" / "q4_0" / "q4_k" / "q6_k": the workers quantize the projections at load.
  std::string quantize;
  int64_t max_tokens = 64;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1;
  uint64_t seed = 0;
  int64_t prompts_per_shard = 0;
  std::string verify;  // "" = auto (or redundant with --redundancy > 1)
  uint32_t redundancy = 1;
  uint32_t priority = 0;
};

struct FinetuneSubmitOptions {
  std::string model;
  std::string data;
  // Defaults as `pcfarm local finetune`'s (local_commands.h).
  int64_t steps = 30;
  int64_t batch = 4;
  int64_t micro_batch = 0;  // 0: min(batch, 8)
  double lr = 1e-3;
  int64_t lora_rank = 8;
  double lora_alpha = 16;
  std::string lora_targets = "q_proj,k_proj,v_proj,o_proj";
  int64_t max_length = 0;
  // "q8_0" / "q4_0" / "q4_k" / "q6_k": QLoRA over a base the workers quantize at load.
  std::string quantize;
  uint64_t seed = 0;
  std::string mode = "sync";
  std::string method = "lora";
  // --mode diloco only (as the planner's defaults, finetune_planner.h).
  int64_t local_steps = 20;
  double outer_lr = 0.7;
  double outer_momentum = 0.9;
  double quorum = 1.0;            // fraction of a round's shards it may proceed with
  int64_t round_timeout_s = 0;    // with quorum < 1: how long a round waits for all
  std::string compress = "none";
  std::string aggregate = "mean";
  std::string verify;  // "" = auto (or redundant with --redundancy > 1)
  uint32_t redundancy = 1;
  uint32_t priority = 0;
};

class CoordinatorClient;

class FarmCommands {
 public:
  // Adds `submit infer` and `submit finetune` under `submit`, and `fetch`,
  // `upload` and `client` to `app`.
  // REQUIRES: both outlive this object, which outlives app.parse().
  FarmCommands(CLI::App* app, CLI::App* submit, Globals* globals);

  // After app.parse(): true iff one of these commands was given.
  bool selected() const;
  int Run();

 private:
  int SubmitInfer();
  // farm_finetune.cc
  void AddFinetuneCommand(CLI::App* submit);
  int SubmitFinetune();
  // Writes a finetune job's fetch `manifest` (FinetunePlanner::RoundsOutput)
  // into `dir`: the adapter's files, read with BlobRead, and
  // trainer_log.jsonl.
  Status WriteFinetuneOutput(CoordinatorClient* client, const std::string& manifest,
                             const std::string& dir, int64_t* bytes_written);
  int Fetch();
  int Upload();
  int ClientAdd();
  int ClientList();
  int ClientRemove();

  Globals* g_;
  InferSubmitOptions infer_;
  CLI::App* infer_cmd_ = nullptr;
  FinetuneSubmitOptions finetune_;
  CLI::App* finetune_cmd_ = nullptr;
  CLI::App* fetch_cmd_ = nullptr;
  CLI::App* upload_cmd_ = nullptr;
  std::string upload_path_;
  CLI::App* client_add_ = nullptr;
  CLI::App* client_list_ = nullptr;
  CLI::App* client_remove_ = nullptr;
  uint64_t job_ = 0;
  std::string out_;
  bool partial_ = false;
  std::string client_name_, client_role_ = "submitter", client_out_;
};

}  // namespace pcfarm
