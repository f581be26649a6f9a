#include "worker/worker_dir.h"

#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/hex.h"

namespace pcfarm {

WorkerPaths::WorkerPaths(std::string d)
    : dir(std::move(d)),
      key_file(dir + "/worker.key"),
      coordinator_file(dir + "/coordinator.json"),
      spool_dir(dir + "/spool"),
      blob_dir(dir + "/blobs"),
      seen_file(dir + "/seen.json"),
      status_file(dir + "/status.json") {}

Status SaveCoordinatorPin(const std::string& path, const CoordinatorPin& pin) {
  nlohmann::json j = {{"format", "pcfarm-coordinator-pin-1"},
                      {"endpoint", pin.endpoint},
                      {"sign_pk", HexEncode(pin.sign_pk)},
                      {"curve_pk", HexEncode(pin.curve_pk)},
                      {"worker_id", pin.worker_id},
                      {"name", pin.name}};
  return WriteFileAtomic(path, j.dump(2) + "\n", 0600);
}

Result<CoordinatorPin> LoadCoordinatorPin(const std::string& path) {
  auto text = ReadFile(path, 1 << 20);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFound(path + " is missing: this worker is not enrolled; run "
                      "pcfarm-worker enroll --token T --data DIR");
    }
    return text.status();
  }
  CoordinatorPin pin;
  try {
    auto j = nlohmann::json::parse(*text);
    if (j.value("format", "") != "pcfarm-coordinator-pin-1") {
      return InvalidArgument(path + ": not a coordinator pin file");
    }
    pin.endpoint = j.at("endpoint").get<std::string>();
    auto sign = HexDecode(j.at("sign_pk").get<std::string>(), 32);
    auto curve = HexDecode(j.at("curve_pk").get<std::string>(), 32);
    if (!sign.ok()) return sign.status().WithContext(path + ": sign_pk");
    if (!curve.ok()) return curve.status().WithContext(path + ": curve_pk");
    pin.sign_pk = *sign;
    pin.curve_pk = *curve;
    pin.worker_id = j.at("worker_id").get<int64_t>();
    pin.name = j.value("name", "");
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(path + ": " + e.what());
  }
  return pin;
}

}  // namespace pcfarm
