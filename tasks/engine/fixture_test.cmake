# LlamaModel against the PyTorch reference fixtures in tests/fixtures/llama
# (made by tools/make_llama_fixtures.py). Include from tasks/engine/CMakeLists.txt
# after pcfarm_engine is defined:  include(fixture_test.cmake)
pcfarm_add_test(llama_fixture_test
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/llama_fixture_test.cc
  LIBS pcfarm_engine nlohmann_json::nlohmann_json TIMEOUT 300)
target_compile_definitions(llama_fixture_test PRIVATE
  PCFARM_LLAMA_FIXTURE_DIR="${PROJECT_SOURCE_DIR}/tests/fixtures/llama")
