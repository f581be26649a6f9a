// Tokenized training data as one binary blob: the farm's coordinator
// tokenizes a data file once and sends the sequences to workers as a
// content-addressed blob; a `train` shard names the blob and the indices of
// its sequences (tasks/kinds/llm_kinds.h).
//
// Format (all integers and floats little-endian):
//   4 bytes   magic "PTD1"
//   u32       version, 1
//   u32       count: sequences, >= 0
//   count times:
//     u32         n: tokens of the sequence, >= 1
//     n × i32     token ids, each >= 0 (and < the vocabulary when checked)
//     n × f32     weights, each finite and >= 0 (weights[0] is never used)
// and nothing after the last sequence.
//
// Weights are always stored: a TokenSequence with empty `weights` (every
// token after the first counts) is written as weights [0, 1, 1, ...], which
// trains the same. So DecodeTokenData(EncodeTokenData(x)) equals x except
// that every sequence has n weights, and EncodeTokenData(DecodeTokenData(b))
// == b for every blob b that decodes.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/engine/llama.h"

namespace pcfarm {

// The blob of `seqs`. REQUIRES: every sequence has >= 1 token (ids >= 0),
// `weights` empty or one per token, and fewer than 2^32 of each.
std::string EncodeTokenData(const std::vector<TokenSequence>& seqs);

// The sequences of a blob, every one with n weights. `vocab_size` > 0
// checks every id against [0, vocab_size); 0 checks only ids >= 0.
// InvalidArgument "token data: ..." naming what is wrong and where (the
// sequence, token and byte offset): a bad magic or version, a count or
// length the remaining bytes cannot hold, an empty sequence, an id out of
// range, a non-finite or negative weight, bytes after the last sequence, or
// a negative vocab_size. Never reads out of bounds, and allocates no more
// than a small multiple of bytes.size().
Result<std::vector<TokenSequence>> DecodeTokenData(std::string_view bytes, int64_t vocab_size);

}  // namespace pcfarm
