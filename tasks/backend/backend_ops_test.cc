#include <catch2/catch.hpp>
#include "tasks/backend/registry.h"
TEST_CASE("smoke") { auto b = pcfarm::CreateBackend("cpu"); REQUIRE(b.ok()); }
