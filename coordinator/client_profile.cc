#include "coordinator/client_profile.h"

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/hex.h"

namespace pcfarm {

Status SaveClientProfile(const std::string& path, const ClientProfile& p) {
  nlohmann::json j = {
      {"format", "pcfarm-profile-1"},
      {"endpoint", p.endpoint},
      {"server_curve_pk", HexEncode(p.server_curve_pk)},
      {"client_curve_pk", HexEncode(p.client_curve_pk)},
      {"client_curve_sk", HexEncode(p.client_curve_sk)},
      {"role", p.role},
      {"name", p.name},
  };
  return WriteFileAtomic(path, j.dump(2) + "\n", 0600);
}

Result<ClientProfile> LoadClientProfile(const std::string& path) {
  PCFARM_RETURN_IF_ERROR(CheckPrivateFile(path));
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 1 << 20));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": not a JSON profile: " + e.what());
  }
  if (!j.is_object() || j.value("format", "") != "pcfarm-profile-1") {
    return InvalidArgument(path + ": not a pcfarm profile (format field)");
  }
  ClientProfile p;
  auto field = [&](const char* name, std::string* out) -> Status {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) {
      return InvalidArgument(path + ": missing string field '" + name + "'");
    }
    *out = it->get<std::string>();
    return Status::Ok();
  };
  auto key = [&](const char* name, std::string* out) -> Status {
    std::string hex;
    PCFARM_RETURN_IF_ERROR(field(name, &hex));
    auto raw = HexDecode(hex, 32);
    if (!raw.ok()) return raw.status().WithContext(path + ": field " + name);
    *out = *raw;
    return Status::Ok();
  };
  PCFARM_RETURN_IF_ERROR(field("endpoint", &p.endpoint));
  PCFARM_RETURN_IF_ERROR(key("server_curve_pk", &p.server_curve_pk));
  PCFARM_RETURN_IF_ERROR(key("client_curve_pk", &p.client_curve_pk));
  PCFARM_RETURN_IF_ERROR(key("client_curve_sk", &p.client_curve_sk));
  PCFARM_RETURN_IF_ERROR(field("role", &p.role));
  if (p.role != "admin" && p.role != "submitter") {
    return InvalidArgument(path + ": role must be admin or submitter, got '" +
                           p.role + "'");
  }
  p.name = j.value("name", "");
  return p;
}

}  // namespace pcfarm
