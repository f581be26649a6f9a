#include "coordinator/setup.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/file.h"
#include "coordinator/client_profile.h"
#include "coordinator/http/http_auth.h"
#include "coordinator/store.h"
#include "crypto/token.h"

namespace pcfarm {

CoordinatorPaths::CoordinatorPaths(std::string d)
    : dir(std::move(d)),
      key_file(dir + "/coordinator.key"),
      db_file(dir + "/coordinator.db"),
      blob_dir(dir + "/blobs"),
      config_file(dir + "/config.json"),
      admin_profile(dir + "/admin.profile"),
      http_token(dir + "/" + kHttpTokenFileName) {}

namespace {

std::string ReplaceWildcardHost(const std::string& ep, const std::string& host) {
  for (const char* wild : {"tcp://0.0.0.0:", "tcp://*:"}) {
    std::string w(wild);
    if (ep.rfind(w, 0) == 0) return "tcp://" + host + ":" + ep.substr(w.size());
  }
  return ep;
}

Status CheckBindEndpoint(const std::string& what, const std::string& ep) {
  std::string probe = ReplaceWildcardHost(ep, "localhost");
  Status s = CheckEndpoint(probe);
  if (!s.ok()) return InvalidArgument(what + " '" + ep + "': " + s.message());
  return Status::Ok();
}

}  // namespace

std::string AdvertisedEndpoint(const CoordinatorConfig& config) {
  if (!config.advertise_endpoint.empty()) return config.advertise_endpoint;
  char host[256] = {0};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == 0) {
    std::snprintf(host, sizeof host, "127.0.0.1");
  }
  return ReplaceWildcardHost(config.workers_endpoint, host);
}

std::string LocalConnectEndpoint(const std::string& bind_endpoint) {
  return ReplaceWildcardHost(bind_endpoint, "127.0.0.1");
}

Status InitCoordinatorDir(const std::string& dir,
                          const CoordinatorConfig& config) {
  PCFARM_RETURN_IF_ERROR(CheckBindEndpoint("--workers-endpoint",
                                           config.workers_endpoint));
  PCFARM_RETURN_IF_ERROR(CheckBindEndpoint("--clients-endpoint",
                                           config.clients_endpoint));
  if (!config.http_endpoint.empty()) {
    auto hp = ParseHostPort(config.http_endpoint);
    if (!hp.ok()) return hp.status().WithContext("--http-endpoint");
  }
  if (!config.advertise_endpoint.empty()) {
    Status s = CheckEndpoint(config.advertise_endpoint);
    if (!s.ok()) return s.WithContext("--advertise");
  }
  CoordinatorPaths paths(dir);
  if (std::filesystem::exists(paths.key_file)) {
    return AlreadyExists(dir + " already holds a coordinator (" +
                         paths.key_file + "); init never overwrites keys");
  }
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir, 0700));
  PCFARM_RETURN_IF_ERROR(MakeDirs(paths.blob_dir, 0700));

  IdentityKeys keys = IdentityKeys::Generate();
  nlohmann::json cfg = {{"workers_endpoint", config.workers_endpoint},
                        {"clients_endpoint", config.clients_endpoint},
                        {"advertise_endpoint", config.advertise_endpoint},
                        {"http_endpoint", config.http_endpoint}};
  PCFARM_RETURN_IF_ERROR(
      WriteFileAtomic(paths.config_file, cfg.dump(2) + "\n", 0644));

  PCFARM_ASSIGN_OR_RETURN(auto store,
                          Store::Open(paths.db_file, SystemClock::Get()));
  CurveKeyPair admin = CurveKeyPair::Generate();
  auto added = store->AddClient("admin", admin.public_key(), ClientRole::kAdmin);
  if (!added.ok()) return added.status();
  ClientProfile profile;
  profile.endpoint = LocalConnectEndpoint(config.clients_endpoint);
  profile.server_curve_pk = keys.curve.public_key();
  profile.client_curve_pk = admin.public_key();
  profile.client_curve_sk = admin.secret_key();
  profile.role = "admin";
  profile.name = "admin";
  PCFARM_RETURN_IF_ERROR(SaveClientProfile(paths.admin_profile, profile));
  auto token = WriteNewHttpToken(paths.http_token);
  if (!token.ok()) return token.status();
  // The key file last: its presence marks a finished init.
  return SaveKeyFile(paths.key_file, keys);
}

Result<CoordinatorConfig> LoadCoordinatorConfig(const std::string& dir) {
  CoordinatorPaths paths(dir);
  auto text = ReadFile(paths.config_file, 1 << 20);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFound(dir + " is not a coordinator data directory (no "
                      "config.json); run pcfarm-coordinator init --data " + dir);
    }
    return text.status();
  }
  CoordinatorConfig c;
  try {
    auto j = nlohmann::json::parse(*text);
    c.workers_endpoint = j.at("workers_endpoint").get<std::string>();
    c.clients_endpoint = j.at("clients_endpoint").get<std::string>();
    c.advertise_endpoint = j.value("advertise_endpoint", "");
    // Data directories from before the status page get its default.
    c.http_endpoint = j.value("http_endpoint", c.http_endpoint);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(paths.config_file + ": " + e.what());
  }
  return c;
}

}  // namespace pcfarm
