#include "crypto/hash.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

namespace pcfarm {
namespace {

TEST_CASE("BLAKE2b-256 matches a published vector", "[crypto]") {
  // BLAKE2b-256("abc"), from the BLAKE2 reference implementation.
  CHECK(HashToHex(Blake2b256("abc")) ==
        "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
  CHECK(HashToHex(Blake2b256("")) ==
        "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

TEST_CASE("incremental hashing equals one-shot hashing", "[crypto]") {
  std::string data(10000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 31 + 7);
  Blake2bHasher h;
  for (size_t at = 0; at < data.size(); at += 777) {
    h.Update(std::string_view(data).substr(at, 777));
  }
  CHECK(h.Final() == Blake2b256(data));
}

TEST_CASE("a file is hashed as its bytes", "[crypto]") {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("pcfarm_hash_file_" + std::to_string(::getpid())))
                               .string();
  // Over the 1 MiB read at a time, and not a multiple of it.
  std::string data((3 << 20) + 5, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i * 131 + (i >> 12));
  std::ofstream(path, std::ios::binary) << data;
  auto h = Blake2b256File(path);
  REQUIRE(h.ok());
  CHECK(*h == Blake2b256(data));
  std::ofstream(path, std::ios::binary | std::ios::trunc).flush();
  CHECK(*Blake2b256File(path) == Blake2b256(""));
  std::filesystem::remove(path);
  CHECK(Blake2b256File(path).status().code() == StatusCode::kNotFound);
  CHECK(Blake2b256File(std::filesystem::temp_directory_path().string()).status().code() ==
        StatusCode::kIoError);  // a directory: read fails
}

TEST_CASE("hash hex and byte forms round trip and check sizes", "[crypto]") {
  Hash256 h = Blake2b256("x");
  CHECK(HashFromHex(HashToHex(h)).value() == h);
  CHECK(HashFromBytes(HashToBytes(h)).value() == h);
  CHECK_FALSE(HashFromHex("abc").ok());
  CHECK_FALSE(HashFromHex(std::string(64, 'g')).ok());
  CHECK_FALSE(HashFromBytes("short").ok());
}

}  // namespace
}  // namespace pcfarm
