# Training data: JSONL examples -> TokenSequences (used by `pcfarm local`).
target_sources(pcfarm_engine PRIVATE data.cc)
pcfarm_add_test(engine_data_test SOURCES data_test.cc LIBS pcfarm_engine TIMEOUT 120)
