// Text that came from a peer (a worker's name, a BYE reason, an error a
// worker reported, a device name) before it is stored, logged or printed.
//
// Peers may send any bytes: terminal escape codes, invalid UTF-8, megabytes.
// EscapePeerText makes such text safe to put in a log line, a database row
// or a terminal: every byte that is not printable ASCII or part of valid
// UTF-8 (and every control character, including DEL and C1 controls) is
// written as \xNN, a backslash as \\, and the result is cut to `max_bytes`
// with a note of how much was left out. HasControlCharacters says whether
// text has anything EscapePeerText would escape (enrollment refuses such
// names rather than storing them escaped).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pcfarm {

// How much peer text one log line or event row keeps by default.
inline constexpr size_t kPeerTextMaxBytes = 256;

// `text` escaped as described above, at most `max_bytes` bytes plus a
// "...(+N bytes)" note when it was cut. Never splits an escape or a UTF-8
// sequence.
std::string EscapePeerText(std::string_view text,
                           size_t max_bytes = kPeerTextMaxBytes);

// True iff `text` holds a control character (C0, DEL, C1), a backslash-free
// byte that is not valid UTF-8, or anything else EscapePeerText escapes
// other than the backslash.
bool HasControlCharacters(std::string_view text);

}  // namespace pcfarm
