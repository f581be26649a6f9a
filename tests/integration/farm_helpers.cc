#include "tests/integration/farm_helpers.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

namespace pcfarm {

using nlohmann::json;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (end > pos) out.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return out;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Status WriteAll(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  out.flush();
  if (!out.good()) return IoError("writing " + path);
  return Status::Ok();
}

std::string PromptsFile(int n, bool chat_lines) {
  static const char* kWords[] = {"the", "farm", "of", "idle", "PCs", "writes", "a",
                                 "story", "about", "river", "stones", "and", "light"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    std::string p;
    for (int w = 0; w <= i % 7 + 1; ++w) p += std::string(w ? " " : "") + kWords[(i * 5 + w * 3) % 13];
    if (chat_lines && i % 5 == 4) {
      out += json{{"messages", {{{"role", "user"}, {"content", p}}}}}.dump() + "\n";
    } else {
      out += json{{"prompt", p}}.dump() + "\n";
    }
  }
  return out;
}

std::string TrainData(bool mixed_formats) {
  static const char* kFacts[] = {"the farm runs on idle PCs",   "a shard is a piece of a job",
                                 "workers sign their results",  "the coordinator checks them",
                                 "river stones are smooth",     "light travels fast",
                                 "a story needs an ending",     "idle PCs hum quietly"};
  std::string out;
  for (int i = 0; i < 16; ++i) {
    const std::string f = kFacts[i % 8];
    if (mixed_formats && i % 3 == 0) {
      out += json{{"text", f + "."}}.dump() + "\n";
    } else if (!mixed_formats || i % 3 == 1) {
      out += json{{"prompt", "Q: what is true? A:"}, {"completion", " " + f}}.dump() + "\n";
    } else {
      out += json{{"messages",
                   {{{"role", "user"}, {"content", "tell me a fact"}},
                    {{"role", "assistant"}, {"content", f}}}}}
                 .dump() +
             "\n";
    }
  }
  return out;
}

std::vector<std::string> TrainArgs(const std::string& model, const std::string& data,
                                   int steps) {
  return {"--model", model,   "--data",      data, "--steps", std::to_string(steps),
          "--batch", "6",     "--lr",        "0.01", "--lora-rank", "4",
          "--seed",  "7"};
}

Status MakeFarmModel(MiniCluster* c, const std::string& dir, const std::string& preset) {
  CommandResult r = c->Run({c->Binary("pcfarm"), "local", "make-model", "--out", dir,
                            "--config", preset, "--seed", "3"},
                           60'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  return Status::Ok();
}

Result<int64_t> SubmitFarmJob(MiniCluster* c, const std::string& kind,
                              const std::vector<std::string>& args) {
  std::vector<std::string> a = {"submit", kind};
  a.insert(a.end(), args.begin(), args.end());
  CommandResult r = c->Cli(a, 30, 300'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  try {
    return int64_t{std::stoll(r.LastLine())};
  } catch (const std::exception&) {
    return Internal("no job id in the last line: " + r.Describe());
  }
}

Status FetchFarmJob(MiniCluster* c, int64_t job, const std::string& out, bool partial) {
  std::vector<std::string> a = {"fetch", std::to_string(job), "--out", out};
  if (partial) a.push_back("--partial");
  CommandResult r = c->Cli(a, 30, 120'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  return Status::Ok();
}

}  // namespace pcfarm
