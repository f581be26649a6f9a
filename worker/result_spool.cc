#include "worker/result_spool.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "crypto/hash.h"

namespace pcfarm {
namespace {

constexpr char kMagic[8] = {'P', 'C', 'F', 'S', 'P', 'O', 'L', '1'};
constexpr size_t kHeaderBytes = 8 + 8 + 8 + 8 + 32;
constexpr std::string_view kSuffix = ".result";
constexpr std::string_view kOutputSuffix = ".output";

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(char((v >> (8 * i)) & 0xff));
}

uint64_t GetU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | uint8_t(p[i]);
  return v;
}

// Parses "<16 lowercase hex><suffix>"; false for any other name.
bool ParseEntryName(std::string_view name, uint64_t* id,
                    std::string_view suffix = kSuffix) {
  if (name.size() != 16 + suffix.size() || name.substr(16) != suffix) {
    return false;
  }
  uint64_t v = 0;
  for (char c : name.substr(0, 16)) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    v = (v << 4) | uint64_t(d);
  }
  *id = v;
  return true;
}

}  // namespace

Result<std::unique_ptr<ResultSpool>> ResultSpool::Open(const std::string& dir) {
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  CryptoInit();
  std::unique_ptr<ResultSpool> spool(new ResultSpool(dir));
  std::lock_guard<std::mutex> lock(spool->mu_);
  std::error_code ec;
  std::vector<uint64_t> ids, outputs;
  for (const auto& de : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = de.path().filename().string();
    uint64_t id;
    if (ParseEntryName(name, &id)) {
      ids.push_back(id);
    } else if (ParseEntryName(name, &id, kOutputSuffix)) {
      outputs.push_back(id);
    } else if (name.find(std::string(kSuffix) + ".tmp.") != std::string::npos ||
               name.find(std::string(kOutputSuffix) + ".tmp.") != std::string::npos) {
      spool->DiscardLocked(de.path().string(), "temp file of an interrupted write");
    } else {
      spdlog::warn("result spool {}: ignoring unexpected file {}", dir, name);
    }
  }
  if (ec) return IoError("list result spool " + dir + ": " + ec.message());
  for (uint64_t id : outputs) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) {
      spool->DiscardLocked(spool->OutputPathOf(id), "an output without its result");
    }
  }
  for (uint64_t id : ids) {
    auto parsed = spool->ReadEntryLocked(id);
    if (parsed.ok()) {
      spool->next_seq_ = std::max(spool->next_seq_, parsed->seq + 1);
    } else if (parsed.status().code() != StatusCode::kCorruption) {
      return parsed.status();
    }
  }
  return spool;
}

std::string ResultSpool::PathOf(uint64_t attempt_id) const {
  char name[17];
  std::snprintf(name, sizeof name, "%016llx",
                static_cast<unsigned long long>(attempt_id));
  return dir_ + "/" + name + std::string(kSuffix);
}

std::string ResultSpool::OutputPathOf(uint64_t attempt_id) const {
  std::string path = PathOf(attempt_id);
  return path.substr(0, path.size() - kSuffix.size()) + std::string(kOutputSuffix);
}

Status ResultSpool::PutOutput(uint64_t attempt_id, std::string_view output) {
  if (output.size() > kMaxSpoolEntryBytes) {
    return ResourceExhausted("output of attempt " + std::to_string(attempt_id) + ": " +
                             std::to_string(output.size()) +
                             " bytes is over the spool limit of " +
                             std::to_string(kMaxSpoolEntryBytes));
  }
  std::lock_guard<std::mutex> lock(mu_);
  return WriteFileAtomic(OutputPathOf(attempt_id), output, 0600);
}

Result<std::string> ResultSpool::GetOutput(uint64_t attempt_id) {
  std::lock_guard<std::mutex> lock(mu_);
  return ReadFile(OutputPathOf(attempt_id), kMaxSpoolEntryBytes);
}

void ResultSpool::DiscardLocked(const std::string& path, const std::string& why) {
  spdlog::warn("result spool: discarding {}: {}", path, why);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    spdlog::error("result spool: cannot delete {}: {}", path,
                  std::strerror(errno));
  }
  ++discarded_;
}

Status ResultSpool::Put(uint64_t attempt_id, std::string_view body) {
  if (body.size() > kMaxSpoolEntryBytes) {
    return ResourceExhausted("result of attempt " + std::to_string(attempt_id) +
                             ": " + std::to_string(body.size()) +
                             " bytes is over the spool limit of " +
                             std::to_string(kMaxSpoolEntryBytes));
  }
  std::lock_guard<std::mutex> lock(mu_);
  std::string data;
  data.reserve(kHeaderBytes + body.size());
  data.append(kMagic, sizeof kMagic);
  PutU64(&data, attempt_id);
  PutU64(&data, next_seq_);
  PutU64(&data, body.size());
  data += HashToBytes(Blake2b256(body));
  data.append(body);
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(PathOf(attempt_id), data, 0600));
  ++next_seq_;
  return Status::Ok();
}

Result<ResultSpool::Parsed> ResultSpool::ReadEntryLocked(uint64_t attempt_id) {
  const std::string path = PathOf(attempt_id);
  auto data = ReadFile(path, kHeaderBytes + kMaxSpoolEntryBytes);
  std::string why;
  if (data.status().code() == StatusCode::kResourceExhausted) {
    why = data.status().message();
  } else if (!data.ok()) {
    return data.status();
  } else if (data->size() < kHeaderBytes) {
    why = "truncated header (" + std::to_string(data->size()) + " bytes)";
  } else if (std::memcmp(data->data(), kMagic, sizeof kMagic) != 0) {
    why = "bad magic";
  } else if (GetU64(data->data() + 8) != attempt_id) {
    why = "header names attempt " + std::to_string(GetU64(data->data() + 8));
  } else if (GetU64(data->data() + 24) != data->size() - kHeaderBytes) {
    why = "header says " + std::to_string(GetU64(data->data() + 24)) +
          " body bytes, file has " + std::to_string(data->size() - kHeaderBytes);
  } else {
    std::string_view body(data->data() + kHeaderBytes,
                          data->size() - kHeaderBytes);
    if (HashToBytes(Blake2b256(body)) != data->substr(32, 32)) {
      why = "body hash mismatch";
    } else {
      Parsed p;
      p.seq = GetU64(data->data() + 16);
      p.body.assign(body);
      return p;
    }
  }
  DiscardLocked(path, why);
  return Corruption("result spool entry " + path + ": " + why);
}

Result<std::vector<ResultSpool::Entry>> ResultSpool::List() {
  std::lock_guard<std::mutex> lock(mu_);
  std::error_code ec;
  std::vector<std::pair<uint64_t, Entry>> found;  // (seq, entry)
  for (const auto& de : std::filesystem::directory_iterator(dir_, ec)) {
    uint64_t id;
    if (!ParseEntryName(de.path().filename().string(), &id)) continue;
    auto parsed = ReadEntryLocked(id);
    if (parsed.ok()) {
      found.push_back({parsed->seq, Entry{id, parsed->body.size()}});
    } else if (parsed.status().code() != StatusCode::kCorruption &&
               parsed.status().code() != StatusCode::kNotFound) {
      return parsed.status();
    }
  }
  if (ec) return IoError("list result spool " + dir_ + ": " + ec.message());
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first < b.first;
  });
  std::vector<Entry> out;
  out.reserve(found.size());
  for (auto& f : found) out.push_back(f.second);
  return out;
}

Result<std::string> ResultSpool::Get(uint64_t attempt_id) {
  std::lock_guard<std::mutex> lock(mu_);
  PCFARM_ASSIGN_OR_RETURN(Parsed p, ReadEntryLocked(attempt_id));
  return std::move(p.body);
}

Status ResultSpool::Remove(uint64_t attempt_id) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string path = PathOf(attempt_id);
  const std::string output = OutputPathOf(attempt_id);
  if (::unlink(output.c_str()) != 0 && errno != ENOENT) {
    return IoError("delete " + output + ": " + std::strerror(errno));
  }
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return IoError("delete " + path + ": " + std::strerror(errno));
  }
  return SyncDir(dir_);
}

uint64_t ResultSpool::discarded() const {
  std::lock_guard<std::mutex> lock(mu_);
  return discarded_;
}

}  // namespace pcfarm
