// What a worker's devices can take, from the device list its HELLO declared
// (stored as JSON in workers.devices) and the free memory its READYs renew.
//
// A device's usable memory is its memory_bytes, or its free_bytes when the
// worker reported a smaller non-zero one (wire::DeviceInfo.free_bytes: what
// the worker could use there now). A worker's DeviceCaps hold each device's
// backend and usable memory: the scheduler leases it a shard only when one
// device has the shard's backend and memory (ShardSpec::needs_backend,
// needs_memory_bytes).
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "coordinator/store.h"

namespace pcfarm {

// The backend and usable memory of each device in `devices_json` (a JSON
// array of objects with backend, memory_bytes, free_bytes, gflops; a
// missing or non-string backend is "cpu"; entries that are not objects are
// skipped), and their best measured speed. No devices, or JSON that is not
// an array: one CPU, memory unknown (0).
void CapsFromDevices(const std::string& devices_json, DeviceCaps* caps, double* gflops);
// The same from the parsed array (a READY's update needs no text round trip).
void CapsFromDevices(const nlohmann::json& devices, DeviceCaps* caps, double* gflops);

// `stored` (a device array as CapsFromDevices reads) with each device's
// free_bytes set from `free` (READY's device_free_bytes, one per device, in
// order) into *updated. *material is true when some device's free memory
// moved far enough from `stored` to be worth writing to the database: by
// more than 1/32 of the device's memory or 64 MiB, whichever is more, or
// between known and unknown (0). InvalidArgument when the counts differ.
Status ApplyDeviceFree(const nlohmann::json& stored, std::span<const uint64_t> free,
                       nlohmann::json* updated, bool* material);

}  // namespace pcfarm
