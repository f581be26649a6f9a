#include "worker/output_uploader.h"

#include <algorithm>
#include <utility>

namespace pcfarm {

OutputUploader::OutputUploader(Send send, int window, int64_t retry_ms)
    : send_(std::move(send)), window_(std::max(1, window)), retry_ms_(retry_ms) {}

void OutputUploader::SetChunkBytes(uint64_t chunk_bytes) {
  if (chunk_bytes > 0) chunk_bytes_ = chunk_bytes;
}

bool OutputUploader::Has(uint64_t attempt) const {
  return std::any_of(queue_.begin(), queue_.end(),
                     [&](const Upload& u) { return u.attempt == attempt; });
}

std::vector<uint64_t> OutputUploader::Attempts() const {
  std::vector<uint64_t> out;
  out.reserve(queue_.size());
  for (const Upload& u : queue_) out.push_back(u.attempt);
  return out;
}

void OutputUploader::Start(uint64_t attempt, std::string hash,
                           std::shared_ptr<const std::string> bytes, int64_t now_ms) {
  if (Has(attempt) || !bytes) return;
  Upload u;
  u.attempt = attempt;
  u.hash = std::move(hash);
  u.bytes = std::move(bytes);
  queue_.push_back(std::move(u));
  Begin(now_ms);
}

void OutputUploader::Begin(int64_t now_ms) {
  if (queue_.empty() || begin_sent_) return;
  // The first upload whose wait is over goes to the front.
  auto it = std::find_if(queue_.begin(), queue_.end(),
                         [&](const Upload& u) { return u.not_before_ms <= now_ms; });
  if (it == queue_.end()) return;
  if (it != queue_.begin()) std::iter_swap(it, queue_.begin());
  Upload& u = queue_.front();
  u.begun = false;
  u.in_flight = 0;
  wire::WorkerFrame f;
  auto* b = f.mutable_output_begin();
  b->set_attempt_id(u.attempt);
  b->set_hash(u.hash);
  b->set_size(u.bytes->size());
  begin_sent_ = true;
  send_(std::move(f));
}

void OutputUploader::Fill(Upload& u) {
  while (u.in_flight < window_ && u.next_offset < u.bytes->size()) {
    uint64_t n = std::min<uint64_t>(chunk_bytes_, u.bytes->size() - u.next_offset);
    wire::WorkerFrame f;
    auto* c = f.mutable_output_chunk();
    c->set_attempt_id(u.attempt);
    c->set_hash(u.hash);
    c->set_offset(u.next_offset);
    c->set_data(u.bytes->data() + u.next_offset, n);
    u.next_offset += n;
    u.in_flight++;
    bytes_sent_ += n;
    send_(std::move(f));
  }
}

OutputUploader::Reply OutputUploader::OnReply(const wire::OutputReply& r, int64_t now_ms) {
  Reply out;
  out.attempt = r.attempt_id();
  const bool current = begin_sent_ && !queue_.empty() && queue_.front().attempt == r.attempt_id() &&
                       queue_.front().hash == r.hash();
  if (!current) {
    // The answer to a RESULT whose output the coordinator does not hold.
    if (r.error().empty() && !r.complete() && r.received() == 0 && !Has(r.attempt_id())) {
      out.kind = Reply::kUploadAgain;
    }
    return out;
  }
  Upload& u = queue_.front();
  if (!r.error().empty()) {
    out.kind = Reply::kRefused;
    out.error = r.error();
    u.not_before_ms = now_ms + retry_ms_;
    u.next_offset = 0;
    begin_sent_ = false;
    // To the back: the others may still go.
    queue_.push_back(std::move(u));
    queue_.pop_front();
    Begin(now_ms);
    return out;
  }
  if (r.complete()) {
    out.kind = Reply::kComplete;
    queue_.pop_front();
    begin_sent_ = false;
    Begin(now_ms);
    return out;
  }
  if (!u.begun) {
    // The BEGIN's answer: send from what the coordinator holds.
    u.begun = true;
    u.next_offset = std::min<uint64_t>(r.received(), u.bytes->size());
  } else if (u.in_flight > 0) {
    u.in_flight--;
  }
  if (u.in_flight == 0 && r.received() >= u.bytes->size()) {
    // Every byte is held but the blob is not said complete (an older
    // coordinator, or a chunk answered as a repeat): a BEGIN asks again,
    // and is answered `complete` once the blob is stored.
    begin_sent_ = false;
    Begin(now_ms);
    return out;
  }
  Fill(u);
  return out;
}

void OutputUploader::Tick(int64_t now_ms) { Begin(now_ms); }

void OutputUploader::Drop(uint64_t attempt, int64_t now_ms) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->attempt != attempt) continue;
    // Replies to the dropped one's chunks may still come; they no longer
    // match the front and are ignored.
    if (it == queue_.begin()) begin_sent_ = false;
    queue_.erase(it);
    Begin(now_ms);
    return;
  }
}

void OutputUploader::Reset() {
  queue_.clear();
  begin_sent_ = false;
}

}  // namespace pcfarm
