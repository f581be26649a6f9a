// Result outputs as blobs (ResultBody.output_blob): a worker uploads a
// result's output (a train result's tensors, far over the 8 MiB a RESULT
// frame holds) into the blob store with OUTPUT_BEGIN / OUTPUT_CHUNK before
// it sends the RESULT that names it by hash. The bytes go through the same
// Uploads as the CLI's (resumable, hash-checked, written on its writer
// thread, refused when the disk would fill); only an attempt leased to the
// worker may upload, at most ServerOptions::max_output_blob_bytes. OnResult
// reads the blob back (ResolveOutput), so verification, planners and the
// results table see the same bytes an inline output would have carried.
#include <spdlog/spdlog.h>

#include "base/file.h"
#include "base/peer_text.h"
#include "coordinator/server_internal.h"
#include "crypto/hash.h"

namespace pcfarm {

namespace {

wire::CoordinatorFrame OutputReplyFrame(uint64_t attempt, const std::string& hash) {
  wire::CoordinatorFrame f;
  f.mutable_output_reply()->set_attempt_id(attempt);
  f.mutable_output_reply()->set_hash(hash);
  return f;
}

}  // namespace

bool CoordinatorServer::Impl::OutputUploadAllowed(Peer& peer, uint64_t attempt,
                                                  const std::string& hash) {
  if (opts.max_output_blob_bytes <= 0) {
    Reject(&peer, peer.route, wire::REJECT_BAD_MESSAGE,
           "this coordinator takes result outputs inline only");
    return false;
  }
  if (hash.size() != sizeof(Hash256)) {
    BadMessage(&peer, peer.route, InvalidArgument("an output hash must be 32 bytes"));
    return false;
  }
  if (peer.running.count(int64_t(attempt)) == 0) {
    // Late, cancelled, answered or never its own: as its RESULT would be.
    Reject(&peer, peer.route, wire::REJECT_UNKNOWN_ATTEMPT,
           "attempt " + std::to_string(attempt) + " is not leased to this worker", attempt);
    return false;
  }
  return true;
}

void CoordinatorServer::Impl::OnOutputBegin(Peer& peer, const wire::OutputBegin& begin) {
  const uint64_t attempt = begin.attempt_id();
  if (!OutputUploadAllowed(peer, attempt, begin.hash())) return;
  wire::CoordinatorFrame f = OutputReplyFrame(attempt, begin.hash());
  auto* r = f.mutable_output_reply();
  if (begin.size() == 0 || int64_t(begin.size()) > opts.max_output_blob_bytes) {
    r->set_error("an output of " + std::to_string(begin.size()) +
                 " bytes: this coordinator takes 1 to " +
                 std::to_string(opts.max_output_blob_bytes));
    Send(peer, std::move(f));
    return;
  }
  wire::UploadBeginRequest req;
  req.set_hash(begin.hash());
  req.set_size(begin.size());
  auto begun = uploads->Begin(req);
  if (!begun.ok()) {
    r->set_error(begun.status().ToString());
    spdlog::warn("output upload of {} for attempt {} refused: {}", peer.name, attempt,
                 begun.status().ToString());
    Send(peer, std::move(f));
    return;
  }
  // Begin checked the hash (an output upload is named by its hash).
  auto hash = HashFromBytes(begin.hash());
  if (!hash.ok()) {
    r->set_error(hash.status().ToString());
    Send(peer, std::move(f));
    return;
  }
  const std::string hex = HashToHex(*hash);
  if (begun->present()) {
    Status s = store->RecordBlob(hex, int64_t(begin.size()), /*collectable=*/true);
    if (!s.ok()) {
      r->set_error(s.ToString());
      Send(peer, std::move(f));
      return;
    }
    r->set_received(begin.size());
    r->set_complete(true);
  } else {
    r->set_received(begun->offset());
    peer.output_uploads[begin.hash()] = attempt;
  }
  Send(peer, std::move(f));
}

void CoordinatorServer::Impl::OnOutputChunk(Peer& peer, wire::OutputChunk&& chunk) {
  const uint64_t attempt = chunk.attempt_id();
  if (!OutputUploadAllowed(peer, attempt, chunk.hash())) return;
  auto begun = peer.output_uploads.find(chunk.hash());
  if (begun == peer.output_uploads.end() || begun->second != attempt) {
    BadMessage(&peer, peer.route,
               InvalidArgument("an output chunk without an OUTPUT_BEGIN for its hash"));
    return;
  }
  wire::CoordinatorFrame f = OutputReplyFrame(attempt, chunk.hash());
  auto* r = f.mutable_output_reply();
  const size_t bytes = chunk.data().size();
  wire::UploadChunkRequest req;
  req.set_hash(chunk.hash());
  req.set_offset(chunk.offset());
  req.set_allocated_data(chunk.release_data());
  std::string hex;
  int64_t size = 0;
  auto got = uploads->Chunk(std::move(req), &hex, &size);
  if (!got.ok()) {
    // The upload starts again from what is held (a BEGIN says where).
    r->set_error(got.status().ToString());
    peer.output_uploads.erase(begun);
    spdlog::warn("output upload of {} for attempt {}: {}", peer.name, attempt,
                 got.status().ToString());
    Send(peer, std::move(f));
    return;
  }
  counters->upload_bytes_received += bytes;
  r->set_received(got->received());
  if (!hex.empty()) {
    Status s = store->RecordBlob(hex, size, /*collectable=*/true);
    if (!s.ok()) {
      r->set_error(s.ToString());
      Send(peer, std::move(f));
      return;
    }
    counters->output_uploads_completed++;
    peer.output_uploads.erase(begun);
    r->set_complete(true);
  } else if (got->complete()) {
    // Another worker's upload of the same bytes (a check of this shard,
    // say) completed it first: the blob is held.
    peer.output_uploads.erase(begun);
    r->set_complete(true);
  }
  Send(peer, std::move(f));
}

Result<std::optional<std::string>> CoordinatorServer::Impl::ResolveOutput(
    Peer& peer, const wire::ResultBody& body) {
  if (body.output_blob().empty()) return std::optional<std::string>();
  if (opts.max_output_blob_bytes <= 0) {
    return InvalidArgument("this coordinator takes result outputs inline only");
  }
  if (!body.output().empty()) {
    return InvalidArgument("a result names an output blob and carries an output");
  }
  if (body.output_size() == 0 || int64_t(body.output_size()) > opts.max_output_blob_bytes) {
    return InvalidArgument("an output blob of " + std::to_string(body.output_size()) +
                           " bytes is out of range");
  }
  auto hash = HashFromBytes(body.output_blob());
  if (!hash.ok()) return InvalidArgument("the output blob's hash must be 32 bytes");
  const std::string hex = HashToHex(*hash);
  auto size = blobs->Size(hex);
  if (!size.ok() || *size != int64_t(body.output_size())) {
    // Not held (yet): the worker uploads it, then sends the result again.
    wire::CoordinatorFrame f = OutputReplyFrame(body.attempt_id(), body.output_blob());
    f.mutable_output_reply()->set_received(0);
    Send(peer, std::move(f));
    return NotFound("output blob " + hex.substr(0, 16) + " is not stored");
  }
  PCFARM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(blobs->PathOf(hex), *size));
  if (int64_t(bytes.size()) != *size) {
    return IoError("output blob " + hex.substr(0, 16) + " changed size while read");
  }
  return std::optional<std::string>(std::move(bytes));
}

}  // namespace pcfarm
