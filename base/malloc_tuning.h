// glibc malloc settings for the daemons.
//
// The coordinator and the worker move blobs in 256 KiB chunks, and every
// chunk passes through a few buffers of that size (file read, protobuf
// bytes, ZeroMQ message, CurveZMQ box). With glibc's defaults those come from
// mmap or from a heap top that is trimmed back as soon as they are freed,
// so every chunk page-faulted its buffers in again: ~20% of the
// coordinator's CPU in blob_bench. Blocks up to 4 MiB now come from the heap
// and up to 8 MiB of free heap top is kept.
#pragma once

namespace pcfarm {

// Call once, early in main().
void TuneMallocForChunkedIo();

}  // namespace pcfarm
