#include "coordinator/blob_store.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>
#include <fstream>

#include "base/file.h"

namespace pcfarm {
namespace {

struct BlobFixture {
  std::string dir;
  std::unique_ptr<BlobStore> blobs;
  BlobFixture() {
    CryptoInit();
    char tmpl[] = "/tmp/pcfarm_blob_test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto b = BlobStore::Open(dir);
    REQUIRE(b.ok());
    blobs = std::move(b).value();
  }
  ~BlobFixture() { std::filesystem::remove_all(dir); }
};

TEST_CASE_METHOD(BlobFixture, "put, has, size, chunks", "[blob]") {
  std::string data = "hello blob world";
  auto h = blobs->Put(data);
  REQUIRE(h.ok());
  CHECK(*h == HashToHex(Blake2b256(data)));
  CHECK(blobs->PathOf(*h) == dir + "/blobs/" + h->substr(0, 2) + "/" + *h);
  CHECK(std::filesystem::exists(blobs->PathOf(*h)));
  CHECK(blobs->Has(*h));
  CHECK(*blobs->Put(data) == *h);  // idempotent
  CHECK(*blobs->Size(*h) == int64_t(data.size()));
  CHECK(*blobs->ReadChunk(*h, 0, 5) == "hello");
  CHECK(*blobs->ReadChunk(*h, 6, 100) == "blob world");  // short at the end
  CHECK(*blobs->ReadChunk(*h, int64_t(data.size()), 10) == "");
  REQUIRE(blobs->Verify(*h).ok());
  // Uppercase names the same blob.
  std::string upper = *h;
  for (char& c : upper) c = char(toupper(c));
  CHECK(blobs->Has(upper));
}

TEST_CASE_METHOD(BlobFixture, "a blob is removed unless it was touched since", "[blob]") {
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  auto h = blobs->Put("old bytes");
  REQUIRE(h.ok());
  // Touched (stored) before the collector looked: removed.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int64_t looked = now_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto g = blobs->Put("kept bytes");
  REQUIRE(g.ok());
  CHECK(*blobs->RemoveUnlessTouched(*h, looked));
  CHECK_FALSE(blobs->Has(*h));
  CHECK_FALSE(*blobs->RemoveUnlessTouched(*h, looked));  // absent
  // Stored after it looked: kept.
  CHECK_FALSE(*blobs->RemoveUnlessTouched(*g, looked));
  CHECK(blobs->Has(*g));
  // Storing a present blob again touches it, so it is kept too.
  auto k = blobs->Put("stored twice");
  REQUIRE(k.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int64_t looked2 = now_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(*blobs->Put("stored twice") == *k);
  CHECK_FALSE(*blobs->RemoveUnlessTouched(*k, looked2));
  CHECK(*blobs->RemoveUnlessTouched(*k, now_ms() + 1000));
  CHECK(blobs->RemoveUnlessTouched("not-a-hash", 0).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE_METHOD(BlobFixture, "bad hashes, offsets and lengths", "[blob]") {
  auto h = blobs->Put("0123456789");
  REQUIRE(h.ok());
  std::string missing(64, 'e');
  CHECK_FALSE(blobs->Has(missing));
  CHECK_FALSE(blobs->Has("../../etc/passwd"));
  CHECK(blobs->Size(missing).status().code() == StatusCode::kNotFound);
  CHECK(blobs->ReadChunk(missing, 0, 1).status().code() == StatusCode::kNotFound);
  CHECK(blobs->Verify(missing).code() == StatusCode::kNotFound);
  CHECK(blobs->ReadChunk("xyz", 0, 1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->ReadChunk(std::string(63, 'a'), 0, 1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->ReadChunk(*h, 11, 1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->ReadChunk(*h, -1, 1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->ReadChunk(*h, 0, -1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->ReadChunk(*h, 0, kBlobMaxChunkBytes + 1).status().code() ==
        StatusCode::kResourceExhausted);
  CHECK(blobs->NewWriter("nothex", 1).status().code() ==
        StatusCode::kInvalidArgument);
  CHECK(blobs->NewWriter(*h, -1).status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE_METHOD(BlobFixture, "a corrupted file is detected", "[blob]") {
  auto h = blobs->Put("precious bytes");
  REQUIRE(h.ok());
  {
    std::ofstream f(blobs->PathOf(*h), std::ios::in | std::ios::out);
    f.seekp(3);
    f.put('X');
  }
  Status st = blobs->Verify(*h);
  CHECK(st.code() == StatusCode::kCorruption);
  CHECK(st.message().find(*h) != std::string::npos);
  // Set aside: out of the store, kept for a look, and stored afresh.
  auto aside = blobs->SetAside(*h);
  REQUIRE(aside.ok());
  CHECK(*aside == dir + "/damaged/" + *h);
  CHECK(std::filesystem::exists(*aside));
  CHECK_FALSE(blobs->Has(*h));
  CHECK(blobs->SetAside(*h).status().code() == StatusCode::kNotFound);
  REQUIRE(blobs->Put("precious bytes").ok());
  CHECK(blobs->Verify(*h).ok());
  CHECK(blobs->SetAside("zz").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE_METHOD(BlobFixture, "a large file is streamed in", "[blob]") {
  std::string data;
  for (int i = 0; i < 3'000'000; ++i) data.push_back(char('a' + i % 23));
  std::string src = dir + "/input.bin";
  REQUIRE(WriteFileAtomic(src, data).ok());
  auto h = blobs->PutFile(src);
  REQUIRE(h.ok());
  CHECK(*h == HashToHex(Blake2b256(data)));
  CHECK(*blobs->Size(*h) == int64_t(data.size()));
  CHECK(*blobs->ReadChunk(*h, 2'500'000, 10) == data.substr(2'500'000, 10));
  REQUIRE(blobs->Verify(*h).ok());
  CHECK(blobs->PutFile(dir + "/absent").status().code() == StatusCode::kNotFound);
  // No temp files are left behind.
  CHECK(std::filesystem::is_empty(dir + "/tmp"));
}

TEST_CASE_METHOD(BlobFixture, "a writer receives chunks and checks them",
                 "[blob]") {
  std::string data = "chunk-one|chunk-two|chunk-three";
  std::string hex = HashToHex(Blake2b256(data));

  SECTION("matching bytes commit") {
    auto w = blobs->NewWriter(hex, int64_t(data.size()));
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(data.substr(0, 10)).ok());
    REQUIRE((*w)->Append(data.substr(10)).ok());
    CHECK((*w)->written() == int64_t(data.size()));
    CHECK(*(*w)->Commit() == hex);
    CHECK(*blobs->ReadChunk(hex, 0, 100) == data);
    CHECK((*w)->Append("x").code() == StatusCode::kFailedPrecondition);
  }
  SECTION("wrong bytes are discarded") {
    auto w = blobs->NewWriter(hex, int64_t(data.size()));
    REQUIRE(w.ok());
    std::string bad = data;
    bad[4] = '!';
    REQUIRE((*w)->Append(bad).ok());
    CHECK((*w)->Commit().status().code() == StatusCode::kCorruption);
    CHECK_FALSE(blobs->Has(hex));
  }
  SECTION("more bytes than announced") {
    auto w = blobs->NewWriter(hex, 5);
    REQUIRE(w.ok());
    CHECK((*w)->Append(data).code() == StatusCode::kResourceExhausted);
  }
  SECTION("fewer bytes than announced") {
    auto w = blobs->NewWriter(hex, int64_t(data.size()));
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(data.substr(0, 5)).ok());
    CHECK((*w)->Commit().status().code() == StatusCode::kCorruption);
  }
  SECTION("an abandoned writer leaves nothing") {
    {
      auto w = blobs->NewWriter(hex, int64_t(data.size()));
      REQUIRE(w.ok());
      REQUIRE((*w)->Append("chunk").ok());
    }
    CHECK_FALSE(blobs->Has(hex));
  }
  CHECK(std::filesystem::is_empty(dir + "/tmp"));
}

TEST_CASE_METHOD(BlobFixture, "open clears stale temp files", "[blob]") {
  REQUIRE(WriteFileAtomic(dir + "/tmp/leftover", "half a blob").ok());
  auto again = BlobStore::Open(dir);
  REQUIRE(again.ok());
  CHECK(std::filesystem::is_empty(dir + "/tmp"));
}

TEST_CASE_METHOD(BlobFixture, "an upload resumes across writers and restarts",
                 "[blob]") {
  std::string data(300'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char((i * 7919) >> 3);
  std::string hex = HashToHex(Blake2b256(data));
  CHECK(blobs->PartialSize(hex) == 0);
  {
    auto w = blobs->ResumeWriter(hex, int64_t(data.size()));
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(data.substr(0, 100'000)).ok());
  }  // interrupted: the bytes stay
  CHECK(blobs->PartialSize(hex) == 100'000);
  auto reopened = BlobStore::Open(dir);  // a restart keeps them too
  REQUIRE(reopened.ok());
  auto w = (*reopened)->ResumeWriter(hex, int64_t(data.size()));
  REQUIRE(w.ok());
  CHECK((*w)->written() == 100'000);
  REQUIRE((*w)->Append(data.substr(100'000)).ok());
  CHECK(*(*w)->Commit() == hex);
  CHECK(*blobs->ReadChunk(hex, 0, int64_t(data.size())) == data);
  CHECK(blobs->PartialSize(hex) == 0);
}

TEST_CASE_METHOD(BlobFixture, "a corrupt upload is discarded whole", "[blob]") {
  std::string data = "0123456789abcdef";
  std::string hex = HashToHex(Blake2b256(data));
  std::string bad = data;
  bad[3] = 'X';
  {
    auto w = blobs->ResumeWriter(hex, int64_t(data.size()));
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(bad.substr(0, 8)).ok());
  }
  auto w = blobs->ResumeWriter(hex, int64_t(data.size()));
  REQUIRE(w.ok());
  REQUIRE((*w)->Append(bad.substr(8)).ok());
  CHECK((*w)->Commit().status().code() == StatusCode::kCorruption);
  CHECK_FALSE(blobs->Has(hex));
  CHECK(blobs->PartialSize(hex) == 0);  // the next try starts over
  SECTION("a partial file longer than announced starts over") {
    REQUIRE(WriteFileAtomic(dir + "/partial/" + hex, data + "extra").ok());
    auto again = blobs->ResumeWriter(hex, int64_t(data.size()));
    REQUIRE(again.ok());
    CHECK((*again)->written() == 0);
  }
  SECTION("bad arguments") {
    CHECK(blobs->ResumeWriter("zz", 4).status().code() == StatusCode::kInvalidArgument);
    CHECK(blobs->ResumeWriter(hex, -1).status().code() == StatusCode::kInvalidArgument);
    CHECK(blobs->DropPartial(hex).ok());
  }
}

TEST_CASE_METHOD(BlobFixture, "an upload by id is named by its bytes", "[blob]") {
  // Over the 8 MiB at which writeback starts, so that path runs too.
  std::string data(9 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char((i * 7919) >> 5);
  const std::string hex = HashToHex(Blake2b256(data));
  const std::string id(32, 'a');
  {
    auto w = blobs->ResumeUnnamedWriter(id, int64_t(data.size()));
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(data.substr(0, 5 << 20)).ok());
  }  // interrupted: the bytes stay, under the id
  CHECK(blobs->PartialSize(id) == 5 << 20);
  auto reopened = BlobStore::Open(dir);
  REQUIRE(reopened.ok());
  auto w = (*reopened)->ResumeUnnamedWriter(id, int64_t(data.size()));
  REQUIRE(w.ok());
  CHECK((*w)->written() == 5 << 20);
  REQUIRE((*w)->Append(data.substr(5 << 20)).ok());
  CHECK(*(*w)->Commit() == hex);
  CHECK(*blobs->ReadChunk(hex, 0, 1 << 20) == data.substr(0, 1 << 20));
  CHECK(blobs->Verify(hex).ok());
  CHECK(blobs->PartialSize(id) == 0);
  CHECK(blobs->HasBlobOfSize(int64_t(data.size())));
  CHECK_FALSE(blobs->HasBlobOfSize(int64_t(data.size()) - 1));
  SECTION("the same bytes again are dropped, the stored blob stays") {
    auto again = blobs->ResumeUnnamedWriter(id, int64_t(data.size()));
    REQUIRE(again.ok());
    REQUIRE((*again)->Append(data).ok());
    CHECK(*(*again)->Commit() == hex);
    CHECK(blobs->PartialSize(id) == 0);
    CHECK(blobs->Verify(hex).ok());
  }
  SECTION("a wrong size is refused and discarded") {
    auto again = blobs->ResumeUnnamedWriter(id, int64_t(data.size()) + 1);
    REQUIRE(again.ok());
    REQUIRE((*again)->Append("abc").ok());
    CHECK((*again)->Commit().status().code() == StatusCode::kCorruption);
    CHECK(blobs->PartialSize(id) == 0);
  }
  SECTION("ids that are not 32 hex digits name no file") {
    for (std::string bad : {std::string(31, 'a'), std::string("../../../../../../etc/x1"),
                            std::string(30, 'a') + "/x", hex}) {
      CHECK(blobs->ResumeUnnamedWriter(bad, 3).status().code() ==
            StatusCode::kInvalidArgument);
    }
    CHECK(blobs->DropPartial(std::string(30, 'a') + "/x").code() ==
          StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace pcfarm
