#include "worker/blob_fetcher.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace pcfarm {

BlobFetcher::BlobFetcher(BlobCache* cache, Send send, int credit,
                         int chunk_bytes)
    : cache_(cache), send_(std::move(send)), credit_(credit),
      chunk_bytes_(chunk_bytes) {}

void BlobFetcher::Request(const Hash256& hash, Transfer& t) {
  uint64_t size = t.download ? t.download->size() : UINT64_MAX;
  int limit = t.download ? credit_ : 1;  // one probe until the size is known
  while (t.in_flight < limit && t.next_offset < size) {
    wire::WorkerFrame f;
    auto* g = f.mutable_blob_get();
    g->set_hash(HashToBytes(hash));
    g->set_offset(t.next_offset);
    g->set_length(static_cast<uint32_t>(chunk_bytes_));
    send_(std::move(f));
    t.in_flight++;
    t.next_offset += static_cast<uint64_t>(chunk_bytes_);
  }
}

void BlobFetcher::Want(const Hash256& hash) {
  if (cache_->Has(hash) || transfers_.count(hash)) return;
  Transfer& t = transfers_[hash];
  Request(hash, t);
}

Result<std::optional<Hash256>> BlobFetcher::OnChunk(const wire::BlobChunk& c) {
  auto hash = HashFromBytes(c.hash());
  if (!hash.ok()) return hash.status();
  auto it = transfers_.find(*hash);
  if (it == transfers_.end()) return std::optional<Hash256>();  // stale chunk
  Transfer& t = it->second;
  t.in_flight = std::max(0, t.in_flight - 1);
  t.heard = true;
  auto abandon = [&](Status s) -> Result<std::optional<Hash256>> { return Abandon(it, s); };
  if (!t.download) {
    // The first answer tells the size; resume where a partial file ends.
    auto d = cache_->BeginDownload(*hash, c.total_size());
    if (!d.ok()) {
      if (d.status().code() == StatusCode::kAlreadyExists) {
        transfers_.erase(it);
        return std::optional<Hash256>(*hash);
      }
      return abandon(d.status());
    }
    t.download = std::move(*d);
    t.next_offset = t.download->offset();
    t.in_flight = 0;
    if (c.offset() == t.download->offset() && !c.data().empty()) {
      Status s = t.download->Append(c.offset(), c.data());
      if (!s.ok()) return abandon(s);
      bytes_received_ += c.data().size();
      t.next_offset = t.download->offset();
    }
  } else {
    if (c.total_size() != t.download->size()) {
      return abandon(Corruption("blob size changed during the transfer"));
    }
    if (c.offset() < t.download->offset()) {
      // Bytes written already: the same blob's bytes at the same offset.
      Request(*hash, t);
      return std::optional<Hash256>();
    }
    // Ask for the next chunk before writing and hashing this one, so the
    // coordinator works while we do.
    Request(*hash, t);
    Status s = t.download->Append(c.offset(), c.data());
    if (!s.ok()) return abandon(s);
    bytes_received_ += c.data().size();
  }
  if (t.download->offset() == t.download->size()) {
    Status s = t.download->Finish();
    if (!s.ok()) return abandon(s);
    Hash256 done = *hash;
    transfers_.erase(it);
    return std::optional<Hash256>(done);
  }
  Request(*hash, t);
  return std::optional<Hash256>();
}

Status BlobFetcher::Abandon(std::map<Hash256, Transfer>::iterator it, Status why) {
  const Hash256 h = it->first;
  const int tries = it->second.tries;
  transfers_.erase(it);
  if (tries >= kMaxTries) {
    why = why.WithContext("blob " + HashToHex(h).substr(0, 16) + " given up after " +
                          std::to_string(tries) + " tries");
    failed_.push_back({h, why.message()});
    return why;
  }
  Transfer& again = transfers_[h];  // the cache kept what was verified
  again.tries = tries + 1;
  Request(h, again);
  return why.WithContext("blob " + HashToHex(h).substr(0, 16) + " begun again");
}

std::vector<Status> BlobFetcher::Tick(int64_t now_ms) {
  std::vector<Status> stalled;
  for (auto it = transfers_.begin(); it != transfers_.end();) {
    Transfer& t = it->second;
    if (t.progress_ms < 0 || t.heard) {
      t.progress_ms = now_ms;
      t.heard = false;
    }
    if (now_ms - t.progress_ms < kStallMs) {
      ++it;
      continue;
    }
    auto next = std::next(it);
    const Hash256 h = it->first;
    stalled.push_back(Abandon(it, Timeout("no chunk of it arrived for " +
                                          std::to_string(kStallMs / 1000) + " s")));
    // Begun again: a new entry, measured from now.
    if (auto again = transfers_.find(h); again != transfers_.end()) {
      again->second.progress_ms = now_ms;
      next = std::next(again);
    }
    it = next;
  }
  return stalled;
}

void BlobFetcher::OnMissing(const Hash256& hash, const std::string& why) {
  if (transfers_.erase(hash) == 0) return;  // not ours, or over
  failed_.push_back({hash, why});
}

std::vector<BlobFetcher::Failure> BlobFetcher::TakeFailed() { return std::exchange(failed_, {}); }

void BlobFetcher::Reset() {
  for (auto& [hash, t] : transfers_) {
    t.download.reset();
    t.next_offset = 0;
    t.in_flight = 0;
    t.progress_ms = -1;  // a stall is measured from the next Tick on
  }
}

void BlobFetcher::Restart() {
  for (auto& [hash, t] : transfers_) Request(hash, t);
}

}  // namespace pcfarm
