// Test helpers of the LLM kinds' tests (tests only): model files under
// made-up blob names and a RunContext that resolves them, from the PyTorch
// fixtures in tests/fixtures/llama or from a random `pcfarm local
// make-model` model. REQUIRES: PCFARM_SOURCE_DIR defined to the source tree.
#pragma once

#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/cli/local_model.h"
#include "tasks/backend/registry.h"
#include "tasks/kinds/kind.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm::testing {

using nlohmann::json;

// A made-up blob name for a file: the kinds trust the resolver (the
// worker's cache verifies hashes), so any 64-hex name works, but the infer
// kind keeps models by these names, so different files get different ones.
inline std::string FakeHash(const std::string& path) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (char c : path) h = (h ^ uint8_t(c)) * 1099511628211ull;
  char name[65];
  for (int i = 0; i < 4; ++i) {
    std::snprintf(name + 16 * i, 17, "%016llx", static_cast<unsigned long long>(h + i));
  }
  return name;
}

// Model files under made-up blob names, and a context that resolves them
// (counting the look-ups).
struct FixtureBlobs {
  std::map<std::string, std::string> path_of;
  json files = json::object();
  json adapter = json::object();
  std::shared_ptr<std::atomic<int>> lookups = std::make_shared<std::atomic<int>>(0);

  // The PyTorch fixture llama_tiny and its adapter.
  FixtureBlobs()
      : FixtureBlobs(std::string(PCFARM_SOURCE_DIR) + "/tests/fixtures/llama/llama_tiny",
                     {"config.json", "model.safetensors", "tokenizer.json"},
                     {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"}) {}
  FixtureBlobs(const std::string& dir, const std::vector<std::string>& model_files,
               const std::vector<std::string>& adapter_files = {}) {
    auto add = [&](const std::string& file, json* into) {
      std::string name = FakeHash(dir + "/" + file);
      path_of[name] = dir + "/" + file;
      (*into)[std::filesystem::path(file).filename().string()] = name;
    };
    for (const auto& f : model_files) add(f, &files);
    for (const auto& f : adapter_files) add(f, &adapter);
  }
  RunContext Context(const std::string& backend = "cpu") const {
    RunContext ctx;
    ctx.backend = backend;
    ctx.blob_path = [this](std::string_view hash) -> Result<std::string> {
      ++*lookups;
      auto it = path_of.find(std::string(hash));
      if (it == path_of.end()) return NotFound("no blob " + std::string(hash));
      return it->second;
    };
    return ctx;
  }
};

// A random byte-level model (`pcfarm local make-model`) in a fresh
// directory, removed at the end.
struct RandomModel {
  std::string dir;
  FixtureBlobs blobs;
  explicit RandomModel(const std::string& name, std::string_view preset = "tiny")
      : dir(Write(name, preset)),
        blobs(dir, {"config.json", "model.safetensors", "tokenizer.json"}) {}
  ~RandomModel() { std::filesystem::remove_all(dir); }
  static std::string Write(const std::string& name, std::string_view preset) {
    std::string d = (std::filesystem::temp_directory_path() /
                     ("pcfarm_llm_kinds_" + name + "_" + std::to_string(::getpid())))
                        .string();
    auto r = WriteRandomModel(d, preset, 7);
    REQUIRE(r.ok());
    return d;
  }
  Tokenizer LoadTokenizer() const {
    auto t = Tokenizer::Load(dir + "/tokenizer.json");
    REQUIRE(t.ok());
    return std::move(t).value();
  }
};

// True iff a Vulkan device starts here; else warns that the test is skipped.
inline bool HaveVulkan() {
  BackendOptions bo;
  if (CreateBackend("vulkan", bo).ok()) return true;
  WARN("skipped: no Vulkan device here");
  return false;
}

}  // namespace pcfarm::testing
