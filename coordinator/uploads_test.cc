#include "coordinator/uploads.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "crypto/hash.h"

namespace pcfarm {
namespace {

struct UploadFixture {
  std::string dir;
  std::unique_ptr<BlobStore> blobs;
  int64_t free_bytes = int64_t(10) << 30;
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
    uploads = std::make_unique<Uploads>(blobs.get(), o, [this]() -> Result<int64_t> {
      return free_bytes;
    });
  }
  ~UploadFixture() { std::filesystem::remove_all(dir); }

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
