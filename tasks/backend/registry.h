// The backend registry: which backends this binary was built with, and
// choosing one at run time by name or by score.
//
// Backends are registered at build time (the list in registry.cc grows an
// entry under #if PCFARM_HAVE_CUDA / PCFARM_HAVE_VULKAN when those are built),
// like ggml's GGML_USE_CUDA. "cpu" is always there.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

struct BackendRegistration {
  std::string name;  // "cpu", "cuda", "vulkan"
  // Higher is preferred by CreateBestBackend; a GPU backend scores above the
  // CPU. 0 = present in the build but no usable device on this machine.
  int (*score)(const BackendOptions& options);
  Result<std::unique_ptr<Backend>> (*create)(const BackendOptions& options);
};

// Every backend compiled into this binary, in registration order.
const std::vector<BackendRegistration>& RegisteredBackends();

// Names of the registered backends, in registration order.
std::vector<std::string> RegisteredBackendNames();

// Creates the backend called `name`. kNotFound (listing the registered names)
// when no such backend is built in; the backend's own status when its device
// cannot be opened.
Result<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                               const BackendOptions& options = {});

// Creates the usable backend with the highest score, falling back to lower
// scores when creation fails; the CPU backend is the last resort.
Result<std::unique_ptr<Backend>> CreateBestBackend(const BackendOptions& options = {});

}  // namespace pcfarm
