// Small filesystem helpers with the durability rules pcfarm relies on.
//
// WriteFileAtomic writes to a temporary name in the same directory, fsyncs
// it, renames it over `path` and fsyncs the directory: after a crash the file
// holds either the old or the new contents, never a mix.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

// Writes `data` to `path` atomically with permission bits `mode`.
Status WriteFileAtomic(const std::string& path, std::string_view data,
                       unsigned mode = 0644);

// Reads the whole file. NotFound when it does not exist; ResourceExhausted
// when it is larger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path,
                             size_t max_bytes = size_t(1) << 30);

// OK iff `path` exists and neither group nor others may read or write it.
// A PermissionDenied status names the file and its mode otherwise.
Status CheckPrivateFile(const std::string& path);

// Creates `dir` and its parents with `mode` if missing.
Status MakeDirs(const std::string& dir, unsigned mode = 0755);

// fsyncs the directory `dir` so a rename inside it is durable.
Status SyncDir(const std::string& dir);

}  // namespace pcfarm
