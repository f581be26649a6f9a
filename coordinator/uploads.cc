#include "coordinator/uploads.h"

#include <sys/statvfs.h>

#include <cerrno>
#include <cstring>

#include "base/hex.h"
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
    : blobs_(blobs), options_(options), free_bytes_(std::move(free_bytes)) {
  writer_ = std::thread([this] { WriterLoop(); });
}

Uploads::~Uploads() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  writer_.join();
}

void Uploads::WriterLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    work_cv_.wait(l, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written
    QueuedChunk c = std::move(queue_.front());
    queue_.pop_front();
    Status s = c.open->failed;
    l.unlock();
    // The loop leaves the writer alone while chunks of it are pending.
    if (s.ok()) s = c.open->writer->Append(c.data);
    const int64_t bytes = int64_t(c.data.size());
    c.data = std::string();  // freed outside the lock
    l.lock();
    if (!s.ok() && c.open->failed.ok()) c.open->failed = s;
    c.open->pending--;
    queued_bytes_ -= bytes;
    done_cv_.notify_all();
  }
}

void Uploads::Enqueue(Open* o, std::string data) {
  const int64_t bytes = int64_t(data.size());
  std::unique_lock<std::mutex> l(mu_);
  done_cv_.wait(l, [&] {
    return queued_bytes_ == 0 || queued_bytes_ + bytes <= options_.writer_queue_bytes;
  });
  queued_bytes_ += bytes;
  o->pending++;
  queue_.push_back(QueuedChunk{o, std::move(data)});
  work_cv_.notify_one();
}

Status Uploads::Settle(Open* o) {
  std::unique_lock<std::mutex> l(mu_);
  done_cv_.wait(l, [o] { return o->pending == 0; });
  return o->failed;
}

void Uploads::Flush() {
  std::unique_lock<std::mutex> l(mu_);
  done_cv_.wait(l, [this] { return queued_bytes_ == 0; });
}

void Uploads::Close(const std::string& name) {
  auto it = open_.find(name);
  if (it == open_.end()) return;
  Settle(it->second.get()).IgnoreError();  // its bytes on disk are what counts
  open_.erase(it);
}

Status Uploads::CheckSpace(int64_t more_bytes) {
  if (more_bytes <= 0) return Status::Ok();
  PCFARM_ASSIGN_OR_RETURN(int64_t free, free_bytes_());
  {
    // Bytes accepted but not yet written are not in `free` yet.
    std::lock_guard<std::mutex> l(mu_);
    free -= queued_bytes_;
  }
  if (free - more_bytes < options_.min_free_disk_bytes) {
    return ResourceExhausted(
        "the coordinator's disk has " + Mib(free) + " free; " + Mib(more_bytes) +
        " more would leave less than its reserve of " +
        Mib(options_.min_free_disk_bytes) +
        " (pcfarm-coordinator serve --min-free-disk)");
  }
  return Status::Ok();
}

Result<std::string> Uploads::NameOf(const std::string& hash, const std::string& upload_id,
                                    bool* by_id) {
  *by_id = hash.empty();
  if (!hash.empty() && !upload_id.empty()) {
    return InvalidArgument("an upload is named by its hash or by an upload id, not both");
  }
  if (*by_id) {
    if (upload_id.size() != kUploadIdBytes) {
      return InvalidArgument("an upload names its hash or an upload id of " +
                             std::to_string(kUploadIdBytes) + " bytes");
    }
    return HexEncode(upload_id);
  }
  PCFARM_ASSIGN_OR_RETURN(Hash256 h, HashFromBytes(hash));
  return HashToHex(h);
}

void Uploads::RememberCompleted(const std::string& id, const std::string& hex, int64_t size) {
  constexpr size_t kRemembered = 64;
  if (completed_.emplace(id, std::make_pair(hex, size)).second) completed_order_.push_back(id);
  while (completed_order_.size() > kRemembered) {
    completed_.erase(completed_order_.front());
    completed_order_.pop_front();
  }
}

Result<wire::UploadBeginReply> Uploads::Begin(const wire::UploadBeginRequest& request) {
  bool by_id = false;
  PCFARM_ASSIGN_OR_RETURN(std::string name,
                          NameOf(request.hash(), request.upload_id(), &by_id));
  const int64_t size = int64_t(request.size());
  if (size < 0 || request.size() > (uint64_t(1) << 50)) {
    return InvalidArgument("upload of " + name + ": bad size");
  }
  wire::UploadBeginReply reply;
  reply.set_chunk_bytes(uint32_t(options_.chunk_bytes));
  std::string stored_hex = name;
  if (by_id) {
    auto done = completed_.find(name);
    stored_hex = done != completed_.end() && done->second.second == size ? done->second.first : "";
  }
  if (!stored_hex.empty() && blobs_->Has(stored_hex)) {
    auto held = blobs_->Size(stored_hex);
    if (held.ok() && *held == size) {
      reply.set_present(true);
      reply.set_offset(uint64_t(size));
      reply.set_hash(HashToBytes(*HashFromHex(stored_hex)));  // wire.proto: with present
      return reply;
    }
    return InvalidArgument("upload of " + stored_hex + ": the stored blob of that hash has " +
                           std::to_string(held.ok() ? *held : -1) + " bytes, not " +
                           std::to_string(size));
  }
  auto it = open_.find(name);
  if (by_id && it == open_.end() && size > 0 && blobs_->PartialSize(name) == 0 &&
      blobs_->HasBlobOfSize(size)) {
    // Perhaps this very file: worth a hash before the bytes are sent.
    reply.set_maybe_present(true);
    return reply;
  }
  if (it != open_.end() && !Settle(it->second.get()).ok()) {
    // A write failed: continue from what is on disk.
    Close(name);
    it = open_.end();
  }
  int64_t held = it != open_.end() ? it->second->accepted : blobs_->PartialSize(name);
  if (held > size) held = 0;  // ResumeWriter starts such a file over
  PCFARM_RETURN_IF_ERROR(CheckSpace(size - held));
  PCFARM_ASSIGN_OR_RETURN(Open * o, GetOpen(name, by_id, size));
  reply.set_offset(uint64_t(o->accepted));
  return reply;
}

Result<Uploads::Open*> Uploads::GetOpen(const std::string& name, bool by_id, int64_t size) {
  auto it = open_.find(name);
  if (it != open_.end() && it->second->size != size) {
    Close(name);  // announced with another size: start over
    PCFARM_RETURN_IF_ERROR(blobs_->DropPartial(name));
    it = open_.end();
  }
  if (it == open_.end()) {
    if (open_.size() >= options_.max_open) {
      auto lru = open_.begin();
      for (auto j = open_.begin(); j != open_.end(); ++j) {
        if (j->second->last_use < lru->second->last_use) lru = j;
      }
      Close(lru->first);  // its bytes stay in DIR/partial
    }
    PCFARM_ASSIGN_OR_RETURN(auto writer, by_id ? blobs_->ResumeUnnamedWriter(name, size)
                                               : blobs_->ResumeWriter(name, size));
    auto o = std::make_unique<Open>();
    o->name = name;
    o->by_id = by_id;
    o->writer = std::move(writer);
    o->size = size;
    o->accepted = o->writer->written();
    it = open_.emplace(name, std::move(o)).first;
  }
  it->second->last_use = ++uses_;
  return it->second.get();
}

Result<wire::UploadChunkReply> Uploads::Chunk(wire::UploadChunkRequest&& request,
                                              std::string* stored_hex,
                                              int64_t* stored_size) {
  bool by_id = false;
  PCFARM_ASSIGN_OR_RETURN(const std::string name,
                          NameOf(request.hash(), request.upload_id(), &by_id));
  if (int64_t(request.data().size()) > options_.chunk_bytes) {
    return InvalidArgument("upload chunk of " + std::to_string(request.data().size()) +
                           " bytes is over the limit of " +
                           std::to_string(options_.chunk_bytes));
  }
  wire::UploadChunkReply reply;
  auto it = open_.find(name);
  if (it == open_.end()) {
    // Completed by an earlier chunk (a retried last chunk, say)?
    std::string stored = name;
    if (by_id) {
      auto done = completed_.find(name);
      stored = done != completed_.end() ? done->second.first : "";
    }
    if (!stored.empty() && blobs_->Has(stored)) {
      auto size = blobs_->Size(stored);
      reply.set_received(uint64_t(size.ok() ? *size : 0));
      reply.set_complete(true);
      reply.set_hash(HashToBytes(*HashFromHex(stored)));
      return reply;
    }
    return FailedPrecondition("no upload of " + name +
                              " is open: begin it (again) with UploadBegin");
  }
  Open* o = it->second.get();
  o->last_use = ++uses_;
  Status failed;
  {
    std::lock_guard<std::mutex> l(mu_);
    failed = o->failed;
  }
  if (!failed.ok()) {
    Close(name);
    return failed.WithContext("upload of " + name + ": writing an earlier chunk failed; " +
                              "begin again to continue from the bytes on disk");
  }
  const int64_t held = o->accepted;
  const int64_t offset = int64_t(request.offset());
  const int64_t len = int64_t(request.data().size());
  if (offset + len <= held && len > 0) {
    reply.set_received(uint64_t(held));  // a repeat of bytes already held
    return reply;
  }
  if (offset != held) {
    return FailedPrecondition("upload of " + name + ": a chunk at offset " +
                              std::to_string(offset) + ", but the coordinator holds " +
                              std::to_string(held) + " bytes; resume from there");
  }
  if (held + len > o->size) {
    return InvalidArgument("upload of " + name + ": more bytes than the announced " +
                           std::to_string(o->size));
  }
  PCFARM_RETURN_IF_ERROR(CheckSpace(len));
  if (len > 0) Enqueue(o, std::move(*request.mutable_data()));
  o->accepted += len;
  reply.set_received(uint64_t(o->accepted));
  if (o->accepted == o->size) {
    // The last chunk: its reply waits for every byte and the commit.
    Status written = Settle(o);
    if (!written.ok()) {
      Close(name);
      return written.WithContext("upload of " + name);
    }
    auto committed = o->writer->Commit();
    const int64_t size = o->size;
    open_.erase(it);
    if (!committed.ok()) {
      return Corruption("upload of " + name + " refused: " + committed.status().message() +
                        "; the bytes were discarded, upload the file again");
    }
    reply.set_complete(true);
    reply.set_hash(HashToBytes(*HashFromHex(*committed)));
    if (by_id) RememberCompleted(name, *committed, size);
    *stored_hex = *committed;
    *stored_size = size;
  }
  return reply;
}

}  // namespace pcfarm
