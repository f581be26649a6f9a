// ClientProfile: what the `pcfarm` CLI needs to reach a coordinator — the
// clients endpoint, the coordinator's Curve25519 public key (pinned), and the
// CLI's own Curve25519 keypair and role. `pcfarm-coordinator init` writes the
// admin's profile to DATA/admin.profile; the CLI reads it from --profile or
// $PCFARM_PROFILE.
//
// File format: JSON {"format":"pcfarm-profile-1","endpoint":...,
// "server_curve_pk":hex,"client_curve_pk":hex,"client_curve_sk":hex,
// "role":"admin"|"submitter","name":...}, mode 0600 (a readable file is
// refused, since it holds a secret key).
#pragma once

#include <string>

#include "base/status.h"

namespace pcfarm {

struct ClientProfile {
  std::string endpoint;         // e.g. tcp://127.0.0.1:7071
  std::string server_curve_pk;  // 32 raw bytes
  std::string client_curve_pk;  // 32 raw bytes
  std::string client_curve_sk;  // 32 raw bytes
  std::string role = "admin";
  std::string name;
};

Status SaveClientProfile(const std::string& path, const ClientProfile& p);
Result<ClientProfile> LoadClientProfile(const std::string& path);

}  // namespace pcfarm
