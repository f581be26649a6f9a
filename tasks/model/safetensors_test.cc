#include "tasks/model/safetensors.h"

#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "tasks/model/mapped_file.h"

namespace pcfarm {
namespace {

std::string MakeFile(const std::string& header, const std::string& buffer) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  return out + header + buffer;
}

std::string ParseError(const std::string& bytes) {
  auto r = SafetensorsFile::Parse(bytes, "t.safetensors", nullptr);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("t.safetensors") != std::string::npos);
  return r.status().message();
}

std::vector<NamedTensor> SampleTensors() {
  std::vector<NamedTensor> ts;
  ts.push_back({"a.weight", HostTensor::FromF32({2, 3}, {1, 2, 3, 4, 5, 6})});
  static const uint16_t half[4] = {0x3c00, 0xc000, 0x3800, 0x0000};  // 1 -2 .5 0
  ts.push_back({"b.half", HostTensor{DType::kF16, {4}, half, nullptr}});
  static const uint16_t bf[2] = {0x3f80, 0xc040};  // 1 -3
  ts.push_back({"c.bf16", HostTensor{DType::kBF16, {1, 2}, bf, nullptr}});
  return ts;
}

}  // namespace

TEST_CASE("safetensors write then read gives the same tensors", "[safetensors]") {
  auto dir = std::filesystem::temp_directory_path() / ("st_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "x.safetensors").string();
  REQUIRE(WriteSafetensors(path, SampleTensors(), {{"format", "pt"}}).ok());

  auto f = SafetensorsFile::Open(path);
  REQUIRE(f.ok());
  CHECK(f->metadata().at("format") == "pt");
  REQUIRE(f->entries().size() == 3);
  auto a = f->Tensor("a.weight");
  REQUIRE(a.ok());
  CHECK(a->dtype == DType::kF32);
  CHECK(a->shape == std::vector<int64_t>{2, 3});
  CHECK(a->ToF32() == std::vector<float>{1, 2, 3, 4, 5, 6});
  auto b = f->Tensor("b.half");
  REQUIRE(b.ok());
  CHECK(b->ToF32() == std::vector<float>{1, -2, 0.5f, 0});
  auto c = f->Tensor("c.bf16");
  REQUIRE(c.ok());
  CHECK(c->shape == std::vector<int64_t>{1, 2});
  CHECK(c->ToF32() == std::vector<float>{1, -3});
  CHECK(f->Tensor("nope").status().code() == StatusCode::kNotFound);

  // The header is padded to a multiple of 8 bytes.
  auto bytes = SerializeSafetensors(SampleTensors(), {{"format", "pt"}});
  REQUIRE(bytes.ok());
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t((*bytes)[i]);
  CHECK(n % 8 == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors writer rejects duplicate names", "[safetensors]") {
  auto ts = SampleTensors();
  ts.push_back(ts[0]);
  CHECK_FALSE(SerializeSafetensors(ts).ok());
}

TEST_CASE("safetensors truncated at every byte is an error, not a crash", "[safetensors]") {
  auto bytes = SerializeSafetensors(SampleTensors(), {{"k", "v"}});
  REQUIRE(bytes.ok());
  REQUIRE(SafetensorsFile::Parse(*bytes, "t.safetensors", nullptr).ok());
  for (size_t cut = 0; cut < bytes->size(); ++cut)
    ParseError(bytes->substr(0, cut));
}

TEST_CASE("safetensors with random corruption never crashes", "[safetensors]") {
  auto bytes = SerializeSafetensors(SampleTensors(), {{"k", "v"}});
  REQUIRE(bytes.ok());
  std::mt19937 rng(42);
  int parsed = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string bad = *bytes;
    int flips = 1 + int(rng() % 3);
    for (int k = 0; k < flips; ++k) bad[rng() % bad.size()] = char(rng());
    auto f = SafetensorsFile::Parse(bad, "fuzz.safetensors", nullptr);
    if (!f.ok()) continue;
    ++parsed;
    for (const auto& e : f->entries()) {
      auto t = f->Tensor(e.name);
      if (t.ok()) (void)t->ToF32();
    }
  }
  CHECK(parsed > 0);  // flips inside the data still parse
}

TEST_CASE("safetensors lying headers are errors naming the tensor", "[safetensors]") {
  std::string buf(16, '\0');  // four f32
  auto hdr = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };
  SECTION("offset past the buffer") {
    auto m = ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[4],"data_offsets":[0,32]})"), buf));
    CHECK(m.find("tensor w") != std::string::npos);
  }
  SECTION("begin after end") {
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[0],"data_offsets":[8,4]})"), buf));
  }
  SECTION("size does not match dtype and shape") {
    auto m = ParseError(MakeFile(hdr(R"({"dtype":"F16","shape":[4],"data_offsets":[0,16]})"), buf));
    CHECK(m.find("needs 8") != std::string::npos);
  }
  SECTION("hole in the buffer") {
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[2],"data_offsets":[8,16]})"), buf));
  }
  SECTION("overlap") {
    ParseError(MakeFile(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", buf));
  }
  SECTION("bytes after the last tensor") {
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), buf));
  }
  SECTION("shape product overflows") {
    auto m = ParseError(MakeFile(
        hdr(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]})"), buf));
    CHECK(m.find("overflow") != std::string::npos);
  }
  SECTION("negative dimension") {
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"), buf));
  }
  SECTION("unknown dtype") {
    ParseError(MakeFile(hdr(R"({"dtype":"Q4","shape":[4],"data_offsets":[0,16]})"), buf));
  }
  SECTION("missing fields and wrong types") {
    ParseError(MakeFile(hdr(R"({"shape":[4],"data_offsets":[0,16]})"), buf));
    ParseError(MakeFile(hdr(R"({"dtype":"F32","data_offsets":[0,16]})"), buf));
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"), buf));
    ParseError(MakeFile(hdr(R"({"dtype":"F32","shape":[4],"data_offsets":"x"})"), buf));
    ParseError(MakeFile(hdr("5"), buf));
    ParseError(MakeFile(R"({"__metadata__":{"a":1}})", ""));
  }
  SECTION("bad JSON, not an object, huge or lying header length") {
    ParseError(MakeFile("{\"w\":", buf));
    ParseError(MakeFile("[1,2]", ""));
    ParseError(MakeFile(" {}", ""));
    std::string huge(8, '\xff');
    ParseError(huge + "{}");
    std::string lying = MakeFile("{}", "");
    lying[0] = 100;
    ParseError(lying);
  }
  SECTION("unsupported dtype is listed but not loadable") {
    auto f = SafetensorsFile::Parse(
        MakeFile(hdr(R"({"dtype":"I64","shape":[2],"data_offsets":[0,16]})"), buf), "t.safetensors", nullptr);
    REQUIRE(f.ok());
    auto t = f->Tensor("w");
    REQUIRE_FALSE(t.ok());
    CHECK(t.status().message().find("tensor w has dtype I64") != std::string::npos);
  }
  SECTION("header padded with spaces and empty file are fine") {
    CHECK(SafetensorsFile::Parse(MakeFile(hdr(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})") + "   ", buf),
                                 "t", nullptr).ok());
    CHECK(SafetensorsFile::Parse(MakeFile("{}", ""), "t", nullptr).ok());
  }
}

// Resident pages of this process (/proc/self/statm's second field).
long ResidentPages() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  REQUIRE(f != nullptr);
  long size = 0, resident = 0;
  REQUIRE(std::fscanf(f, "%ld %ld", &size, &resident) == 2);
  std::fclose(f);
  return resident;
}

TEST_CASE("a mapped tensor's pages can be dropped: out of RSS, the bytes unchanged",
          "[safetensors]") {
  auto dir = std::filesystem::temp_directory_path() / ("st_drop_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "big.safetensors").string();
  std::vector<float> values(1 << 20);  // 4 MiB: about 1000 pages
  for (size_t i = 0; i < values.size(); ++i) values[i] = float(i % 1000) - 500.0f;
  REQUIRE(WriteSafetensors(path, {{"w", HostTensor::FromF32({1024, 1024}, values)}}, {}).ok());
  auto f = SafetensorsFile::Open(path);
  REQUIRE(f.ok());
  auto t = f->Tensor("w");
  REQUIRE(t.ok());
  REQUIRE(t->mapped != nullptr);
  const long page = ::sysconf(_SC_PAGESIZE);
  const long pages = long(t->nbytes()) / page;
  CHECK(t->ToF32() == values);  // every page touched
  const long before = ResidentPages();
  t->mapped->DropPages(t->data, t->nbytes());
  const long after = ResidentPages();
  INFO("resident pages " << before << " -> " << after << ", tensor " << pages);
  CHECK(before - after >= pages * 9 / 10);  // statm moves with other memory too
  CHECK(t->ToF32() == values);         // read from the file again
  // A range outside the mapping (an owned buffer) is left alone.
  HostTensor owned = HostTensor::FromF32({2}, {1, 2});
  t->mapped->DropPages(owned.data, owned.nbytes());
  CHECK(owned.ToF32() == std::vector<float>{1, 2});
  // Parsed from memory: no mapped file.
  auto bytes = SerializeSafetensors(SampleTensors(), {});
  REQUIRE(bytes.ok());
  auto mem = SafetensorsFile::Parse(*bytes, "mem", nullptr);
  REQUIRE(mem.ok());
  CHECK(mem->Tensor("a.weight")->mapped == nullptr);
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors open of a missing file is NotFound", "[safetensors]") {
  auto f = SafetensorsFile::Open("/nonexistent/dir/model.safetensors");
  CHECK(f.status().code() == StatusCode::kNotFound);
}

}  // namespace pcfarm
