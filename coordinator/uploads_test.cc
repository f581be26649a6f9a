#include "coordinator/uploads.h"

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "base/hex.h"
#include "crypto/hash.h"

namespace pcfarm {
namespace {

struct UploadFixture {
  std::string dir;
  std::unique_ptr<BlobStore> blobs;
  int64_t free_bytes = int64_t(10) << 30;
  size_t max_open = 16;
  std::unique_ptr<Uploads> uploads;
  UploadFixture() {
    CryptoInit();
    char tmpl[] = "/tmp/pcfarm_upload_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    blobs = std::move(BlobStore::Open(dir)).value();
    Reopen();
  }
  void Reopen() {
    UploadOptions o;
    o.chunk_bytes = 1000;
    o.min_free_disk_bytes = 1 << 20;
    o.writer_queue_bytes = 2000;  // two chunks: the loop waits for room
    o.max_open = max_open;
    uploads = std::make_unique<Uploads>(blobs.get(), o, [this]() -> Result<int64_t> {
      return free_bytes;
    });
  }
  ~UploadFixture() { std::filesystem::remove_all(dir); }

  static wire::UploadBeginRequest BeginById(const std::string& id, size_t size) {
    wire::UploadBeginRequest b;
    b.set_upload_id(id);
    b.set_size(size);
    return b;
  }
  Result<wire::UploadChunkReply> SendById(const std::string& id, const std::string& data,
                                          size_t offset, size_t len,
                                          std::string* stored = nullptr) {
    wire::UploadChunkRequest c;
    c.set_upload_id(id);
    c.set_offset(offset);
    c.set_data(data.substr(offset, len));
    std::string hex;
    int64_t size = 0;
    auto r = uploads->Chunk(c, &hex, &size);
    if (stored) *stored = hex;
    return r;
  }
  static wire::UploadBeginRequest Begin(const std::string& data) {
    wire::UploadBeginRequest b;
    b.set_hash(HashToBytes(Blake2b256(data)));
    b.set_size(data.size());
    return b;
  }
  Result<wire::UploadChunkReply> Send(const std::string& data, size_t offset, size_t len,
                                      std::string* stored = nullptr) {
    wire::UploadChunkRequest c;
    c.set_hash(HashToBytes(Blake2b256(data)));
    c.set_offset(offset);
    c.set_data(data.substr(offset, len));
    std::string hex;
    int64_t size = 0;
    auto r = uploads->Chunk(c, &hex, &size);
    if (stored) *stored = hex;
    return r;
  }
};

std::string Data(size_t n) {
  std::string d(n, '\0');
  for (size_t i = 0; i < n; ++i) d[i] = char(i * 31 + (i >> 7));
  return d;
}

TEST_CASE_METHOD(UploadFixture, "an upload in chunks is stored once", "[uploads]") {
  std::string data = Data(2500);
  auto b = uploads->Begin(Begin(data));
  REQUIRE(b.ok());
  CHECK_FALSE(b->present());
  CHECK(b->offset() == 0);
  CHECK(b->chunk_bytes() == 1000);
  REQUIRE(Send(data, 0, 1000)->received() == 1000);
  // A repeated chunk is acknowledged, not appended.
  CHECK(Send(data, 0, 1000)->received() == 1000);
  REQUIRE(Send(data, 1000, 1000)->received() == 2000);
  std::string stored;
  auto last = Send(data, 2000, 500, &stored);
  REQUIRE(last.ok());
  CHECK(last->complete());
  CHECK(stored == HashToHex(Blake2b256(data)));
  CHECK(*blobs->ReadChunk(stored, 0, 5000) == data);
  // Deduplicated: the second time there is nothing to send.
  auto again = uploads->Begin(Begin(data));
  REQUIRE(again.ok());
  CHECK(again->present());
}

TEST_CASE_METHOD(UploadFixture, "an interrupted upload resumes after a restart", "[uploads]") {
  std::string data = Data(2500);
  REQUIRE(uploads->Begin(Begin(data)).ok());
  REQUIRE(Send(data, 0, 1000).ok());
  Reopen();  // the coordinator restarted
  blobs = std::move(BlobStore::Open(dir)).value();
  Reopen();
  auto b = uploads->Begin(Begin(data));
  REQUIRE(b.ok());
  CHECK(b->offset() == 1000);
  REQUIRE(Send(data, 1000, 1000).ok());
  auto last = Send(data, 2000, 500);
  REQUIRE(last.ok());
  CHECK(last->complete());
}

TEST_CASE_METHOD(UploadFixture, "bad uploads are refused with nothing stored", "[uploads]") {
  std::string data = Data(2500);
  SECTION("a chunk past the held offset") {
    REQUIRE(uploads->Begin(Begin(data)).ok());
    auto r = Send(data, 1000, 1000);
    CHECK(r.status().code() == StatusCode::kFailedPrecondition);
    CHECK(r.status().message().find("holds 0 bytes") != std::string::npos);
  }
  SECTION("a chunk without a begin") {
    CHECK(Send(data, 0, 1000).status().code() == StatusCode::kFailedPrecondition);
  }
  SECTION("a chunk over the size limit") {
    REQUIRE(uploads->Begin(Begin(data)).ok());
    CHECK(Send(data, 0, 1001).status().code() == StatusCode::kInvalidArgument);
  }
  SECTION("corrupted bytes: the whole upload is discarded") {
    REQUIRE(uploads->Begin(Begin(data)).ok());
    std::string bad = data;
    bad[1500] ^= 1;
    wire::UploadChunkRequest c;
    c.set_hash(HashToBytes(Blake2b256(data)));
    std::string hex;
    int64_t size = 0;
    for (size_t off = 0; off < bad.size(); off += 1000) {
      c.set_offset(off);
      c.set_data(bad.substr(off, 1000));
      auto r = uploads->Chunk(c, &hex, &size);
      if (off < 2000) {
        REQUIRE(r.ok());
      } else {
        CHECK(r.status().code() == StatusCode::kCorruption);
      }
    }
    CHECK_FALSE(blobs->Has(HashToHex(Blake2b256(data))));
    CHECK(blobs->PartialSize(HashToHex(Blake2b256(data))) == 0);
  }
  SECTION("an upload that would eat the disk reserve") {
    free_bytes = (1 << 20) + 2000;
    auto r = uploads->Begin(Begin(data));
    CHECK(r.status().code() == StatusCode::kResourceExhausted);
    CHECK(r.status().message().find("--min-free-disk") != std::string::npos);
  }
  SECTION("a malformed hash") {
    wire::UploadBeginRequest b;
    b.set_hash("short");
    b.set_size(3);
    CHECK_FALSE(uploads->Begin(b).ok());
  }
  CHECK_FALSE(blobs->Has(HashToHex(Blake2b256(data))));
}

TEST_CASE_METHOD(UploadFixture, "chunks are written behind the acks, the last ack waits",
                 "[uploads]") {
  // Two uploads interleaved, more chunks than the writer's queue holds.
  std::string a = Data(9500), b = Data(7000).substr(0, 6999);
  REQUIRE(uploads->Begin(Begin(a)).ok());
  REQUIRE(uploads->Begin(Begin(b)).ok());
  std::string stored_a, stored_b;
  for (size_t off = 0; off < a.size(); off += 1000) {
    auto r = Send(a, off, 1000, &stored_a);
    REQUIRE(r.ok());
    CHECK(r->received() == std::min(off + 1000, a.size()));
    if (off < b.size()) REQUIRE(Send(b, off, 1000, &stored_b).ok());
  }
  // A last chunk's reply comes once the blob is stored, never before.
  REQUIRE(stored_a == HashToHex(Blake2b256(a)));
  REQUIRE(stored_b == HashToHex(Blake2b256(b)));
  CHECK(*blobs->ReadChunk(stored_a, 0, 1 << 20) == a);
  CHECK(*blobs->ReadChunk(stored_b, 0, 1 << 20) == b);
  CHECK(blobs->PartialSize(stored_a) == 0);
}

TEST_CASE_METHOD(UploadFixture, "an upload closed for another resumes from its written bytes",
                 "[uploads]") {
  max_open = 1;
  Reopen();
  std::string a = Data(3000), b = Data(2000).substr(1);
  REQUIRE(uploads->Begin(Begin(a)).ok());
  REQUIRE(Send(a, 0, 1000).ok());
  REQUIRE(Send(a, 1000, 1000).ok());
  REQUIRE(uploads->Begin(Begin(b)).ok());  // closes a once its chunks are written
  auto again = uploads->Begin(Begin(a));   // and b for a
  REQUIRE(again.ok());
  CHECK(again->offset() == 2000);
  auto last = Send(a, 2000, 1000);
  REQUIRE(last.ok());
  CHECK(last->complete());
  CHECK(*blobs->ReadChunk(HashToHex(Blake2b256(a)), 0, 5000) == a);
}

TEST_CASE_METHOD(UploadFixture, "a failed write reaches the client", "[uploads]") {
  // The partial file is the full device: every write(2) fails with ENOSPC.
  std::string data = Data(2500);
  const std::string hex = HashToHex(Blake2b256(data));
  REQUIRE(::symlink("/dev/full", (dir + "/partial/" + hex).c_str()) == 0);
  REQUIRE(uploads->Begin(Begin(data)).ok());
  REQUIRE(Send(data, 0, 1000).ok());  // accepted: the write comes later
  SECTION("in the reply to the next chunk") {
    uploads->Flush();
    auto r = Send(data, 1000, 1000);
    CHECK(r.status().code() == StatusCode::kIoError);
    CHECK(r.status().message().find("No space left") != std::string::npos);
  }
  SECTION("in the reply to the last chunk at the latest") {
    auto second = Send(data, 1000, 1000);  // refused if the first write failed already
    auto last = Send(data, 2000, 500);
    CHECK_FALSE(last.ok());
    if (second.ok()) CHECK(last.status().code() == StatusCode::kIoError);
  }
  SECTION("a new begin continues from the bytes on disk") {
    uploads->Flush();
    auto b = uploads->Begin(Begin(data));
    REQUIRE(b.ok());
    CHECK(b->offset() == 0);
  }
  CHECK_FALSE(blobs->Has(hex));
}

TEST_CASE_METHOD(UploadFixture, "an upload by id is named by the bytes that arrived",
                 "[uploads]") {
  std::string data = Data(2500);
  const std::string id(16, '\x07');
  const std::string hash = HashToBytes(Blake2b256(data));
  auto b = uploads->Begin(BeginById(id, data.size()));
  REQUIRE(b.ok());
  CHECK_FALSE(b->present());
  CHECK(b->offset() == 0);
  REQUIRE(SendById(id, data, 0, 1000).ok());
  SECTION("and resumes after a restart") {
    uploads.reset();
    blobs = std::move(BlobStore::Open(dir)).value();
    Reopen();
    auto again = uploads->Begin(BeginById(id, data.size()));
    REQUIRE(again.ok());
    CHECK(again->offset() == 1000);
  }
  REQUIRE(SendById(id, data, 1000, 1000).ok());
  std::string stored;
  auto last = SendById(id, data, 2000, 500, &stored);
  REQUIRE(last.ok());
  CHECK(last->complete());
  CHECK(last->hash() == hash);
  CHECK(stored == HashToHex(Blake2b256(data)));
  CHECK(*blobs->ReadChunk(stored, 0, 5000) == data);
  // A client that lost the last reply learns the hash, with nothing to send.
  auto retried = SendById(id, data, 2000, 500);
  REQUIRE(retried.ok());
  CHECK(retried->complete());
  CHECK(retried->hash() == hash);
  auto again = uploads->Begin(BeginById(id, data.size()));
  REQUIRE(again.ok());
  CHECK(again->present());
  CHECK(again->hash() == hash);
  // Named by its hash, the same file is stored already.
  CHECK(uploads->Begin(Begin(data))->present());
}

TEST_CASE_METHOD(UploadFixture, "a new upload by id of a stored size is asked for its hash",
                 "[uploads]") {
  std::string data = Data(1500);
  REQUIRE(uploads->Begin(Begin(data)).ok());
  REQUIRE(Send(data, 0, 1000).ok());
  REQUIRE(Send(data, 1000, 500)->complete());
  const std::string id(16, 'i');
  auto b = uploads->Begin(BeginById(id, data.size()));
  REQUIRE(b.ok());
  CHECK(b->maybe_present());
  CHECK_FALSE(b->present());
  CHECK(blobs->PartialSize(HexEncode(id)) == 0);  // nothing opened
  CHECK(SendById(id, data, 0, 1000).status().code() == StatusCode::kFailedPrecondition);
  auto other = uploads->Begin(BeginById(id, data.size() - 1));
  REQUIRE(other.ok());
  CHECK_FALSE(other->maybe_present());
}

TEST_CASE_METHOD(UploadFixture, "an upload by id of a blob stored meanwhile leaves one copy",
                 "[uploads]") {
  std::string data = Data(1500);
  const std::string id(16, 'i');
  REQUIRE(uploads->Begin(BeginById(id, data.size())).ok());
  REQUIRE(SendById(id, data, 0, 1000).ok());
  REQUIRE(uploads->Begin(Begin(data)).ok());
  REQUIRE(Send(data, 0, 1000).ok());
  REQUIRE(Send(data, 1000, 500)->complete());
  auto again = uploads->Begin(BeginById(id, data.size()));  // bytes held: no hint
  REQUIRE(again.ok());
  CHECK_FALSE(again->maybe_present());
  CHECK(again->offset() == 1000);
  std::string stored;
  auto last = SendById(id, data, 1000, 500, &stored);
  REQUIRE(last.ok());
  CHECK(last->complete());
  CHECK(stored == HashToHex(Blake2b256(data)));
  CHECK(blobs->PartialSize(HexEncode(id)) == 0);
  CHECK(blobs->Verify(stored).ok());
}

TEST_CASE_METHOD(UploadFixture, "an upload is named by its hash or by an id", "[uploads]") {
  std::string data = Data(100);
  SECTION("neither") {
    CHECK(uploads->Begin(BeginById("", 100)).status().code() ==
          StatusCode::kInvalidArgument);
  }
  SECTION("both") {
    auto b = Begin(data);
    b.set_upload_id(std::string(16, 'x'));
    CHECK(uploads->Begin(b).status().code() == StatusCode::kInvalidArgument);
  }
  SECTION("an id of the wrong size") {
    CHECK(uploads->Begin(BeginById(std::string(15, 'x'), 100)).status().code() ==
          StatusCode::kInvalidArgument);
    CHECK(SendById(std::string(17, 'x'), data, 0, 100).status().code() ==
          StatusCode::kInvalidArgument);
  }
  SECTION("a chunk of an id never begun") {
    CHECK(SendById(std::string(16, 'x'), data, 0, 100).status().code() ==
          StatusCode::kFailedPrecondition);
  }
}

TEST_CASE_METHOD(UploadFixture, "an empty file uploads with one empty chunk", "[uploads]") {
  std::string data;
  REQUIRE(uploads->Begin(Begin(data)).ok());
  auto r = Send(data, 0, 0);
  REQUIRE(r.ok());
  CHECK(r->complete());
  CHECK(blobs->Has(HashToHex(Blake2b256(data))));
}

}  // namespace
}  // namespace pcfarm
