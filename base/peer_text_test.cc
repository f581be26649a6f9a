#include "base/peer_text.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("EscapePeerText keeps printable text and escapes the rest") {
  CHECK(EscapePeerText("worker-1 on desk") == "worker-1 on desk");
  CHECK(EscapePeerText("caf\xc3\xa9 \xe6\x97\xa5") ==
        "caf\xc3\xa9 \xe6\x97\xa5");
  // A terminal escape: ESC [ 2 J clears the screen.
  CHECK(EscapePeerText("a\x1b[2Jb") == "a\\x1b[2Jb");
  CHECK(EscapePeerText("line\nnext\r\t") == "line\\x0anext\\x0d\\x09");
  CHECK(EscapePeerText("back\\slash") == "back\\\\slash");
  CHECK(EscapePeerText(std::string("nul\0x", 5)) == "nul\\x00x");
  CHECK(EscapePeerText("\x7f") == "\\x7f");
  // C1 control U+009B (CSI) in UTF-8, a lone continuation byte, an overlong
  // '/', a surrogate, a truncated sequence.
  CHECK(EscapePeerText("\xc2\x9b") == "\\xc2\\x9b");
  CHECK(EscapePeerText("\x80") == "\\x80");
  CHECK(EscapePeerText("\xc0\xaf") == "\\xc0\\xaf");
  CHECK(EscapePeerText("\xed\xa0\x80") == "\\xed\\xa0\\x80");
  CHECK(EscapePeerText("\xe6\x97") == "\\xe6\\x97");
}

TEST_CASE("EscapePeerText cuts long text and says how much was left out") {
  std::string big(60 * 1024, 'x');
  std::string out = EscapePeerText(big, 256);
  CHECK(out == std::string(256, 'x') + "...(+61184 bytes)");
  // An escape is never split: 3 + 4 = 7 bytes fit in 8, the next does not.
  CHECK(EscapePeerText("abc\x01\x02", 8) == "abc\\x01...(+1 bytes)");
  // Nor a UTF-8 sequence.
  CHECK(EscapePeerText("ab\xc3\xa9", 3) == "ab...(+2 bytes)");
  CHECK(EscapePeerText("", 0) == "");
}

TEST_CASE("HasControlCharacters") {
  CHECK_FALSE(HasControlCharacters("desk-pc \xc3\xa9t\xc3\xa9"));
  CHECK_FALSE(HasControlCharacters("a\\b"));
  CHECK(HasControlCharacters("a\x1b[31mred"));
  CHECK(HasControlCharacters("tab\there"));
  CHECK(HasControlCharacters("\xff"));
  CHECK(HasControlCharacters("\xc2\x85"));  // NEL, a C1 control
}

}  // namespace
}  // namespace pcfarm
