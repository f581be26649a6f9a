# Training data: JSONL examples -> TokenSequences (used by `pcfarm local`),
# the order of fine-tuning steps, and token data blobs (the farm's).
target_sources(pcfarm_engine PRIVATE data.cc token_data.cc)
pcfarm_add_test(engine_data_test SOURCES data_test.cc token_data_test.cc LIBS pcfarm_engine
                TIMEOUT 120)
