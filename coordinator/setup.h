// The coordinator's data directory: creating it (`pcfarm-coordinator init`)
// and reading its configuration back (`serve`).
#pragma once

#include <string>

#include "base/status.h"
#include "crypto/keys.h"

namespace pcfarm {

struct CoordinatorConfig {
  std::string workers_endpoint = "tcp://0.0.0.0:7070";  // ROUTER for workers
  std::string clients_endpoint = "tcp://127.0.0.1:7071";  // ROUTER for the CLI
  // The endpoint enrollment tokens tell workers to connect to. "" means the
  // workers endpoint, with a wildcard host replaced by this machine's name.
  std::string advertise_endpoint;
  // The status page (HOST:PORT, "" for none; coordinator/http/status_http.h).
  std::string http_endpoint = "127.0.0.1:7072";
};

struct CoordinatorPaths {
  explicit CoordinatorPaths(std::string dir);
  std::string dir, key_file, db_file, blob_dir, config_file, admin_profile;
  std::string http_token;  // the status page's login token (0600)
};

// Creates `dir` (mode 0700) with fresh keys, the database (migrated), the
// config, the admin's CLI profile and the status page's HTTP token. AlreadyExists when `dir` already holds
// a coordinator (init never overwrites keys).
Status InitCoordinatorDir(const std::string& dir,
                          const CoordinatorConfig& config);

Result<CoordinatorConfig> LoadCoordinatorConfig(const std::string& dir);

// The endpoint to put in tokens: advertise_endpoint, or the workers endpoint
// with "0.0.0.0"/"*" replaced by this host's name.
std::string AdvertisedEndpoint(const CoordinatorConfig& config);

// An endpoint a client on this machine can connect to for a bound endpoint:
// "tcp://0.0.0.0:7071" -> "tcp://127.0.0.1:7071".
std::string LocalConnectEndpoint(const std::string& bind_endpoint);

}  // namespace pcfarm
