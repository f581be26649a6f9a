# Tokenizer encodings checked against fixtures made by independent references
# (tools/make_tokenizer_fixtures.py, tests/fixtures/tokenizer/README.md).
pcfarm_add_test(tokenizer_fixture_test
  SOURCES tokenizer_fixture_test.cc
  LIBS pcfarm_tasks_model)
target_compile_definitions(tokenizer_fixture_test PRIVATE
  PCFARM_TOKENIZER_FIXTURE_DIR="${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer")
