// The Vulkan compute backend: the Backend interface (tasks/backend/backend.h)
// on any Vulkan 1.1 device, with GLSL compute shaders compiled to SPIR-V at
// build time and embedded in the binary (shaders/*.comp).
//
// How work reaches the device. Ops are recorded into one command buffer (a
// "batch"): each op is a compute dispatch followed by a full compute/transfer
// memory barrier, so every op sees the results of the ops before it. A batch
// is submitted, and the host waits on its fence (with a timeout), when the
// host needs data (Download, DownloadBytes, CrossEntropyForward, SumSquares),
// at Upload/UploadBytes (which copy through a reused staging buffer), at
// Synchronize, and when the batch's descriptor pool (512 dispatches) or its
// host-argument arena (token ids, positions, ...) is full. Training and
// decode steps therefore submit a few times per step, not once per op.
//
// Storage: one device-local VkBuffer per tensor. F16 and BF16 tensors are
// stored as 2-byte elements on every device (shaders read them as packed
// 32-bit words and convert exactly), so no device needs 16-bit storage
// support and no weight is widened to F32 at upload. Upload/Download convert
// on the host with tasks/backend/half.h, exactly as the CPU backend does.
// A tensor may not exceed the device's maxStorageBufferRange (128 MiB on
// lavapipe, 4 GiB on most GPUs): a larger Alloc is kResourceExhausted.
//
// Errors: no loader or driver, or no device at options.device_index, is
// kUnavailable from CreateVulkanBackend; VK_ERROR_OUT_OF_DEVICE_MEMORY and
// memory limits are kResourceExhausted; a batch that does not finish within
// 120 s is kTimeout and a lost device kInternal, after which every call of
// that backend fails with the same status (it must be recreated).
//
// Thread-safety: as Backend.
#pragma once

#include <memory>

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

// The registry score: 0 when there is no loader, no device at
// options.device_index, or the device is a CPU implementation (lavapipe /
// SwiftShader: usable by name, never picked by score over the CPU backend);
// 20 for a virtual GPU, 30 integrated, 40 discrete (CUDA scores higher).
int VulkanBackendScore(const BackendOptions& options);

// Opens the device options.device_index (ListVulkanDevices' order).
// options.memory_limit_bytes caps the bytes held in tensors; cpu_threads is
// ignored.
Result<std::unique_ptr<Backend>> CreateVulkanBackend(const BackendOptions& options);

}  // namespace pcfarm
