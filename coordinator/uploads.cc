#include "coordinator/uploads.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "crypto/hash.h"

namespace pcfarm {
namespace {

std::string Mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  return buf;
}

}  // namespace

Result<int64_t> FreeDiskBytes(const std::string& dir) {
  struct statvfs st;
  if (::statvfs(dir.c_str(), &st) != 0) {
    return IoError("statvfs " + dir + ": " + std::strerror(errno));
  }
  return int64_t(st.f_bavail) * int64_t(st.f_frsize);
}

Uploads::Uploads(BlobStore* blobs, UploadOptions options,
                 std::function<Result<int64_t>()> free_bytes)
    : blobs_(blobs), options_(options), free_bytes_(std::move(free_bytes)) {}

Status Uploads::CheckSpace(int64_t more_bytes) const {
  if (more_bytes <= 0) return Status::Ok();
  PCFARM_ASSIGN_OR_RETURN(int64_t free, free_bytes_());
  if (free - more_bytes < options_.min_free_disk_bytes) {
    return ResourceExhausted(
        "the coordinator's disk has " + Mib(free) + " free; " + Mib(more_bytes) +
        " more would leave less than its reserve of " +
        Mib(options_.min_free_disk_bytes) +
        " (pcfarm-coordinator serve --min-free-disk)");
  }
  return Status::Ok();
}

Result<wire::UploadBeginReply> Uploads::Begin(const wire::UploadBeginRequest& request) {
  PCFARM_ASSIGN_OR_RETURN(Hash256 hash, HashFromBytes(request.hash()));
  const std::string hex = HashToHex(hash);
  const int64_t size = int64_t(request.size());
  if (size < 0 || request.size() > (uint64_t(1) << 50)) {
    return InvalidArgument("upload of " + hex + ": bad size");
  }
  wire::UploadBeginReply reply;
  reply.set_chunk_bytes(uint32_t(options_.chunk_bytes));
  if (blobs_->Has(hex)) {
    auto held = blobs_->Size(hex);
    if (held.ok() && *held == size) {
      reply.set_present(true);
      reply.set_offset(uint64_t(size));
      return reply;
    }
    return InvalidArgument("upload of " + hex + ": the stored blob of that hash has " +
                           std::to_string(held.ok() ? *held : -1) + " bytes, not " +
                           std::to_string(size));
  }
  auto it = open_.find(hex);
  int64_t held = it != open_.end() ? it->second.writer->written() : blobs_->PartialSize(hex);
  if (held > size) held = 0;  // ResumeWriter starts such a file over
  PCFARM_RETURN_IF_ERROR(CheckSpace(size - held));
  PCFARM_ASSIGN_OR_RETURN(Open * o, GetOpen(hex, size));
  reply.set_offset(uint64_t(o->writer->written()));
  return reply;
}

Result<Uploads::Open*> Uploads::GetOpen(const std::string& hex, int64_t size) {
  auto it = open_.find(hex);
  if (it != open_.end() && it->second.size != size) {
    open_.erase(it);  // announced with another size: start over
    PCFARM_RETURN_IF_ERROR(blobs_->DropPartial(hex));
    it = open_.end();
  }
  if (it == open_.end()) {
    if (open_.size() >= options_.max_open) {
      auto lru = open_.begin();
      for (auto j = open_.begin(); j != open_.end(); ++j) {
        if (j->second.last_use < lru->second.last_use) lru = j;
      }
      open_.erase(lru);  // its bytes stay in DIR/partial
    }
    PCFARM_ASSIGN_OR_RETURN(auto writer, blobs_->ResumeWriter(hex, size));
    it = open_.emplace(hex, Open{std::move(writer), size, 0}).first;
  }
  it->second.last_use = ++uses_;
  return &it->second;
}

Result<wire::UploadChunkReply> Uploads::Chunk(const wire::UploadChunkRequest& request,
                                              std::string* stored_hex,
                                              int64_t* stored_size) {
  PCFARM_ASSIGN_OR_RETURN(Hash256 hash, HashFromBytes(request.hash()));
  const std::string hex = HashToHex(hash);
  if (int64_t(request.data().size()) > options_.chunk_bytes) {
    return InvalidArgument("upload chunk of " + std::to_string(request.data().size()) +
                           " bytes is over the limit of " +
                           std::to_string(options_.chunk_bytes));
  }
  wire::UploadChunkReply reply;
  auto it = open_.find(hex);
  if (it == open_.end()) {
    if (blobs_->Has(hex)) {
      // Completed by an earlier chunk (a retried last chunk, say).
      auto size = blobs_->Size(hex);
      reply.set_received(uint64_t(size.ok() ? *size : 0));
      reply.set_complete(true);
      return reply;
    }
    return FailedPrecondition("no upload of " + hex +
                              " is open: begin it (again) with UploadBegin");
  }
  Open& o = it->second;
  o.last_use = ++uses_;
  const int64_t held = o.writer->written();
  const int64_t offset = int64_t(request.offset());
  const int64_t len = int64_t(request.data().size());
  if (offset + len <= held && len > 0) {
    reply.set_received(uint64_t(held));  // a repeat of bytes already held
    return reply;
  }
  if (offset != held) {
    return FailedPrecondition("upload of " + hex + ": a chunk at offset " +
                              std::to_string(offset) + ", but the coordinator holds " +
                              std::to_string(held) + " bytes; resume from there");
  }
  if (held + len > o.size) {
    return InvalidArgument("upload of " + hex + ": more bytes than the announced " +
                           std::to_string(o.size));
  }
  PCFARM_RETURN_IF_ERROR(CheckSpace(len));
  PCFARM_RETURN_IF_ERROR(o.writer->Append(request.data()));
  reply.set_received(uint64_t(o.writer->written()));
  if (o.writer->written() == o.size) {
    auto committed = o.writer->Commit();
    int64_t size = o.size;
    open_.erase(it);
    if (!committed.ok()) {
      return Corruption("upload of " + hex + " refused: " + committed.status().message() +
                        "; the bytes were discarded, upload the file again");
    }
    reply.set_complete(true);
    *stored_hex = *committed;
    *stored_size = size;
  }
  return reply;
}

}  // namespace pcfarm
