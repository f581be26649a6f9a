// OutputUploader: sends result outputs into the coordinator's blob store
// (OUTPUT_BEGIN / OUTPUT_CHUNK; proto ResultBody.output_blob) before their
// RESULT, which names the output by hash: a train result's tensors may be
// far over the 8 MiB a RESULT frame holds. One upload at a time, oldest
// first, with up to `window` chunks in flight; every OUTPUT_REPLY says how
// many bytes the coordinator holds, so a BEGIN after a reconnect or a
// restart of either side continues from there. An upload the coordinator
// refuses for now (OutputReply.error: its disk is full, a write failed)
// waits `retry_ms` and starts again.
//
// The uploader does not own a socket: it emits WorkerFrames through `send`
// and is fed the OUTPUT_REPLYs the caller receives. The caller keeps the
// results (the spool) and sends each RESULT when its upload completes.
//
// Thread-safety: not thread-safe; one event loop owns it.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

class OutputUploader {
 public:
  using Send = std::function<void(wire::WorkerFrame)>;

  // What a reply means for the caller.
  struct Reply {
    enum Kind {
      kNothing,      // progress, or a reply for nothing queued
      kComplete,     // the coordinator holds `attempt`'s output: send its RESULT
      kUploadAgain,  // it does not hold the output of a RESULT it got: upload
                     // `attempt`'s output again (Start), unless queued
      kRefused,      // refused for now (`error`); it will be tried again
    };
    Kind kind = kNothing;
    uint64_t attempt = 0;
    std::string error;
  };

  OutputUploader(Send send, int window, int64_t retry_ms);

  // The largest chunk the coordinator takes (its WELCOME).
  void SetChunkBytes(uint64_t chunk_bytes);

  // Queues `attempt`'s output (`hash`: its BLAKE2b-256, 32 bytes) and
  // starts it when no other upload is in flight. A second Start of a
  // queued attempt changes nothing.
  void Start(uint64_t attempt, std::string hash, std::shared_ptr<const std::string> bytes,
             int64_t now_ms);
  // Feeds an OUTPUT_REPLY.
  Reply OnReply(const wire::OutputReply& reply, int64_t now_ms);
  // Starts a refused upload again once its wait is over; call now and then.
  void Tick(int64_t now_ms);
  // Forgets `attempt` (its result is not wanted any more).
  void Drop(uint64_t attempt, int64_t now_ms);
  // Forgets everything (a new connection: the caller Starts the spooled
  // outputs again).
  void Reset();

  bool Has(uint64_t attempt) const;
  // Every queued upload's attempt, the one being sent first (the
  // heartbeat's `uploading`).
  std::vector<uint64_t> Attempts() const;
  size_t queued() const { return queue_.size(); }
  uint64_t bytes_sent() const { return bytes_sent_; }

 private:
  struct Upload {
    uint64_t attempt = 0;
    std::string hash;
    std::shared_ptr<const std::string> bytes;
    bool begun = false;        // a BEGIN was answered
    uint64_t next_offset = 0;  // of the next chunk to send
    int in_flight = 0;
    int64_t not_before_ms = 0;  // refused: wait until then
  };
  // Sends BEGIN for the front upload, if it may start now and has not.
  void Begin(int64_t now_ms);
  void Fill(Upload& u);

  Send send_;
  int window_;
  int64_t retry_ms_;
  uint64_t chunk_bytes_ = uint64_t(1) << 20;
  std::deque<Upload> queue_;  // front: the one being sent
  bool begin_sent_ = false;   // for the front
  uint64_t bytes_sent_ = 0;
};

}  // namespace pcfarm
