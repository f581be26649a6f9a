#!/usr/bin/python3
"""Writes tokenizer fixtures for tasks/model/tokenizer_fixture_test.cc.

Three tokenizer.json files in HF `tokenizers` format, each with the token ids
an independent reference gives for a list of tricky strings:

  gpt2/     byte-level BPE, ByteLevel pre-tokenizer (GPT-2 regex), "a b" merges.
  llama3/   byte-level BPE, Sequence[Split(Llama-3 regex), ByteLevel(no regex)],
            ["a","b"] merges, ignore_merges, <|begin_of_text|> added as BOS.
  sp_llama2/ SentencePiece BPE with byte fallback, trained here with the
            sentencepiece library and exported the way transformers'
            LlamaConverter does (legacy normalizer Prepend + Replace).

References:
  * byte-level: merges are learned here; encodings come from this file's own
    implementation of the HF algorithm (added tokens split out first, regex
    pre-tokenization with the `regex` module and the exact pattern strings,
    GPT-2's bytes_to_unicode, rank-ordered BPE as in GPT-2's encoder.py).
  * SentencePiece: the sentencepiece library's own Encode/Decode. A second,
    HF-semantics simulation over the exported tokenizer.json is run as a
    cross-check of the export; disagreements are printed and recorded.

Run with Debian's python3 (python3-regex, python3-sentencepiece):
  /usr/bin/python3 tools/make_tokenizer_fixtures.py [OUT_DIR]
OUT_DIR defaults to tests/fixtures/tokenizer. Deterministic.
"""

import collections
import io
import json
import os
import sys

import regex
import sentencepiece as spm

GPT2_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                r"""|\s+(?!\S)|\s+""")
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+"""
                  r"""|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

NUM_MERGES = 300
IGNORE_MERGES_WORD = "supercalifragilisticexpialidocious"
SP_VOCAB_SIZE = 640

CORPUS = """\
The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.
Hello world! Hello there, how are you doing today? I'm fine, thanks.
We don't know what they'll do, but I'll tell you what we've seen.
She'd said they're coming; you'd think it's the end of the world.
Tokenizers split text into tokens, and tokens into ids for the model.
The model reads the ids and predicts the next token in the sequence.
In 2024 there were 12345678 tokens in the training set, and 1000 more.
The price is $19.99 or 20% off; call 555-0100 before 10:30 on 3/14.
  Indented line with   multiple   spaces and a\ttab\tor two.
def main():\n    return 42  # the answer
Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade, r\u00e9sum\u00e9, \u00fcber, stra\u00dfe, se\u00f1or, co\u00f6perate.
\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac: \u03b1\u03b2\u03b3 \u03ba\u03b1\u03b9 \u03c4\u03bf \u03b1\u03bb\u03c6\u03ac\u03b2\u03b7\u03c4\u03bf \u03c4\u03b7\u03c2 \u03b3\u03bb\u03ce\u03c3\u03c3\u03b1\u03c2.
\u4e2d\u6587\u6d4b\u8bd5\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\u4e2d\u6587\u662f\u6d4b\u8bd5\u3002
Emoji: \U0001F600 \U0001F680 \U0001F44D and more \U0001F600\U0001F600.
The the the and and and of of to to in in is is it it that that.
Models learn from data; data comes from text; text comes from people.
Training, inference, tokens, merges, vocab, bytes, and spaces.
DON'T SHOUT: IT'S LOUD, WE'VE HEARD, THEY'RE HERE, I'LL GO.
\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u0928\u092e\u0938\u094d\u0924\u0947 \u092d\u093e\u0930\u0924.
\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8, \ud55c\uad6d\uc5b4 \ub9d0.
Family \U0001F468\u200d\U0001F469\u200d\U0001F467 and flags \U0001F1EB\U0001F1F7 \U0001F1E9\U0001F1EA.
Combining e\u0301 and cafe\u0301, x\u00b2 y\u00b3 \u00bd, \uff21\uff22\uff23 \uff11\uff12\uff13, \u0663\u0664\u0665.
Lines end here:\r\nand here\r\n\n\nthen   \t  more text.
"""

# name, text. Every string is encoded by every style.
CASES = [
    ("plain", "Hello world"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("empty", ""),
    ("one_space", " "),
    ("three_spaces", "   "),
    ("leading_space", " leading space"),
    ("trailing_space", "trailing space "),
    ("multiple_spaces", "  multiple   spaces  "),
    ("two_newlines", "\n\n"),
    ("lines", "line one\nline two\n\nline four\n"),
    ("crlf", "x\r\ny\r\n"),
    ("tabs", "tab\tseparated\t\tvalues"),
    ("space_tab_mix", "I'm   \t  here \n  \n"),
    ("contractions", "don't I'll we've they're she'd it's"),
    ("contractions_upper", "DON'T I'LL WE'VE THEY'RE It'S"),
    ("apostrophes", "a'b 's 'x rock'n'roll"),
    ("digits8", "12345678"),
    ("digit_groups", "1 22 333 4444 55555 666666 7777777"),
    ("numbers_text", "Pi is 3.14159, year 2024, 1000000 users"),
    ("alnum", "ab12cd345ef6789"),
    ("money", "$100.00 & 50% off #hashtag @user"),
    ("punct", "!!!???... --- (x) [y] {z}"),
    ("code", "def f(x):\n    return x**2  # square\n"),
    ("accented", "caf\u00e9 na\u00efve fa\u00e7ade r\u00e9sum\u00e9 \u00c6r\u00f8sk\u00f8bing"),
    ("german", "\u00dcn\u00efc\u00f6d\u00e9 \u00dcBER stra\u00dfe"),
    ("greek", "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u03b3\u03c1\u03ac\u03bc\u03bc\u03b1\u03c4\u03b1: \u03b1\u03b2\u03b3\u03b4"),
    ("cjk", "\u4e2d\u6587\u6d4b\u8bd5\uff0c\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3002\ud55c\uad6d\uc5b4"),
    ("mixed_scripts", "mixed: abc\u03b1\u03b2\u03b3\u4e2d\u6587123!?"),
    ("emoji", "emoji \U0001F600 rocket \U0001F680\U0001F680"),
    ("emoji_zwj", "family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 flag \U0001F1EB\U0001F1F7"),
    ("nbsp", "a\u00a0b \u00a0 c"),
    ("zero_width", "zero\u200bwidth \u200b"),
    ("combining", "e\u0301 cafe\u0301"),
    ("fullwidth", "\uff21\uff22\uff23 fullwidth \uff11\uff12\uff13"),
    ("superscript", "x\u00b2 + y\u00b3 = \u00bd"),
    ("arabic_indic", "\u0663\u0664\u0665 digits"),
    ("devanagari", "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e"),
    ("math_letters", "\u03a9mega \U0001D518\U0001D52B\U0001D526"),
    ("long_word", "supercalifragilisticexpialidocious"),
    ("byte_token_text", "<0x41> literal"),
    ("space_mark", "\u2581already marked"),
    ("unicode_spaces", "a\u0085b\u2028c\u3000d\u2009e"),
    ("space_before_newline", " \nx  \n\ny \t\n"),
    ("punct_then_newlines", "end...\n\nfoo!!\r\n\r\n  bar"),
    ("letter_prefix", "$hello \thello \nhello _x -y"),
    ("curly_apostrophe", "don\u2019t 'LL've"),
    ("thai", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u0e04\u0e23\u0e31\u0e1a"),
    ("arabic_harakat", "\u0645\u064e\u0631\u0652\u062d\u064e\u0628\u064b\u0627"),
    ("hebrew_niqqud", "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd"),
    ("cyrillic_vietnamese", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440, Ti\u1ebfng Vi\u1ec7t"),
    ("emoji_variation", "\u2764\ufe0f \u2714\ufe0f \u00a9\ufe0f ok"),
    ("latin1_edges", "\u00b5m \u00aa\u00ba soft\u00adhyphen \u00d7\u00f7"),
    ("letterlike", "\u2103 \u2116 \u2122 \u2113 \u2115 \u01c5"),
    ("cjk_marks", "\u3007\u4e00 \u4eba\u3005 \u30e9\u30fc\u30e1\u30f3\u30fb\u3046\u3069\u3093"),
    ("number_forms", "\u216b \u2460\u2461 \u0967\u0968\u0969 \u00b9\u2070"),
    ("specials_adjacent", "<|begin_of_text|><|begin_of_text|><|eot_id|> <|eot_id"),
    ("special_alone", "<|endoftext|>"),
    ("special_inside", "text <|begin_of_text|> inside<|end_of_text|>after"),
    ("special_gpt2_inside", "a <|endoftext|> b"),
    ("special_s", "before <s> after</s>"),
]

# Cases the SentencePiece reference cannot speak for: the library does not
# match added tokens inside text, HF does.
SP_SKIP = {"special_s"}


# ----------------------------------------------------------------- byte-level

def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) +
                 list(range(0xAE, 0xFF + 1)))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def byte_alphabet_order():
    """Byte chars in GPT-2 vocab order: printable ones first, then the rest."""
    printable = [b for b in range(256) if BYTE_CHAR[b] == chr(b)]
    others = [b for b in range(256) if BYTE_CHAR[b] != chr(b)]
    return [BYTE_CHAR[b] for b in printable + others]


def regex_split(pattern, text):
    """HF Split with behavior Isolated: matches and the gaps between them."""
    pieces = []
    last = 0
    for m in regex.finditer(pattern, text):
        if m.start() > last:
            pieces.append(text[last:m.start()])
        if m.end() > m.start():
            pieces.append(m.group(0))
        last = m.end()
    if last < len(text):
        pieces.append(text[last:])
    return pieces


def to_byte_chars(piece):
    return "".join(BYTE_CHAR[b] for b in piece.encode("utf-8"))


def learn_merges(corpus, pattern, num_merges):
    """Classic BPE training: most frequent adjacent pair each step; ties go to
    the pair that sorts first."""
    words = collections.Counter(to_byte_chars(p) for p in regex_split(pattern, corpus))
    seqs = {w: list(w) for w in words}
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            s = seqs[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for w in words:
            s = seqs[w]
            out = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == best[0] and s[i + 1] == best[1]:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return merges


def bpe_word(word, ranks):
    """GPT-2 encoder.py's bpe(): merge the lowest-ranked adjacent pair, all
    its non-overlapping occurrences left to right, until none is ranked."""
    symbols = list(word)
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        out = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                out.append(best[0] + best[1])
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        symbols = out
    return symbols


def split_added(text, added):
    """Splits out added tokens, leftmost match first, longest at a position."""
    by_len = sorted(added, key=len, reverse=True)
    segments = []
    start = pos = 0
    while pos < len(text):
        hit = next((a for a in by_len if text.startswith(a, pos)), None)
        if hit is None:
            pos += 1
            continue
        segments.append((False, text[start:pos]))
        segments.append((True, hit))
        pos += len(hit)
        start = pos
    segments.append((False, text[start:]))
    return [(is_added, s) for is_added, s in segments if is_added or s]


class ByteLevelReference:
    def __init__(self, pattern, vocab, merges, added, ignore_merges, bos):
        self.pattern = pattern
        self.vocab = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.added = added  # content -> id
        self.ignore_merges = ignore_merges
        self.bos = bos

    def encode(self, text, add_special):
        ids = [self.bos] if add_special and self.bos is not None else []
        for is_added, seg in split_added(text, self.added):
            if is_added:
                ids.append(self.added[seg])
                continue
            for piece in regex_split(self.pattern, seg):
                word = to_byte_chars(piece)
                if self.ignore_merges and word in self.vocab:
                    ids.append(self.vocab[word])
                    continue
                ids.extend(self.vocab[s] for s in bpe_word(word, self.ranks))
        return ids

    def decode(self, ids):
        inv = {i: t for t, i in self.vocab.items()}
        inv.update({i: t for t, i in self.added.items()})
        out = bytearray()
        for i in ids:
            tok = inv[i]
            if tok in self.added:
                out += tok.encode("utf-8")
            else:
                out += bytes(CHAR_BYTE[c] for c in tok)
        return out.decode("utf-8", errors="replace")


def byte_level_vocab(merges):
    vocab = {}
    for c in byte_alphabet_order():
        vocab[c] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab


def added_token(content, id_, special=True):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def make_gpt2():
    merges = learn_merges(CORPUS, GPT2_PATTERN, NUM_MERGES)
    vocab = byte_level_vocab(merges)
    eot = len(vocab)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token("<|endoftext|>", eot)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    ref = ByteLevelReference(GPT2_PATTERN, vocab, merges, {"<|endoftext|>": eot},
                             ignore_merges=False, bos=None)
    return doc, ref


def make_llama3():
    merges = learn_merges(CORPUS, LLAMA3_PATTERN, NUM_MERGES)
    vocab = byte_level_vocab(merges)
    # A whole-word token no merge sequence builds: only ignore_merges (as in
    # the real Llama-3 tokenizer.json) reaches it.
    vocab[IGNORE_MERGES_WORD] = len(vocab)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    added = {s: len(vocab) + i for i, s in enumerate(specials)}
    bos = added["<|begin_of_text|>"]
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(s, i) for s, i in added.items()],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
                                                      "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    ref = ByteLevelReference(LLAMA3_PATTERN, vocab, merges, added, ignore_merges=True, bos=bos)
    return doc, ref


def byte_level_cases(ref):
    cases = []
    for name, text in CASES:
        ids = ref.encode(text, False)
        case = {"name": name, "text": text, "ids": ids,
                "ids_with_special": ref.encode(text, True),
                "round_trip": ref.decode(ids) == text}
        case["has_added"] = any(is_added for is_added, _ in split_added(text, ref.added))
        # The regex split alone, for texts without added tokens in them.
        if not case["has_added"]:
            case["pre_tokens"] = regex_split(ref.pattern, text)
        cases.append(case)
    return cases


# -------------------------------------------------------------- SentencePiece

SPACE_MARK = "\u2581"


def train_sp():
    """Trains in memory (no file names land in the model's trainer spec, so
    the model bytes are reproducible); returns the serialized model."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.split("\n")), model_writer=model, model_type="bpe",
        vocab_size=SP_VOCAB_SIZE, byte_fallback=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=0.9995, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    return model.getvalue()


def sp_merges(pieces):
    """Merges from a vocab the way transformers' SentencePieceExtractor does:
    every split of every piece into two vocab pieces, ordered within a piece
    by (left id, right id), then stably by the piece's score, highest first."""
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    found = []
    for piece, score in pieces:
        local = []
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        found.extend(local)
    found.sort(key=lambda m: m[2], reverse=True)
    return [(a, b) for a, b, _ in found]


def make_sp(model_proto):
    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    n = sp.get_piece_size()
    pieces = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(n)]
    # LlamaConverter.vocab: the three control pieces get score 0.
    for i in range(3):
        pieces[i] = (pieces[i][0], 0.0)
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    merges = sp_merges(pieces)
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(sp.id_to_piece(i), i) for i in range(3)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE_MARK},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE_MARK}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE_MARK}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    return sp, doc, vocab, merges


def hf_sp_simulation(text, vocab, merges):
    """HF semantics over the exported json (cross-check only): added tokens
    split out, each segment Prepend '▁' + Replace ' ', chars (byte fallback
    for unknown ones), rank-ordered BPE."""
    ranks = {m: i for i, m in enumerate(merges)}
    ids = []
    for is_added, seg in split_added(text, ["<unk>", "<s>", "</s>"]):
        if is_added:
            ids.append(vocab[seg])
            continue
        s = SPACE_MARK + seg.replace(" ", SPACE_MARK)
        symbols = []
        for ch in s:
            if ch in vocab:
                symbols.append(ch)
            else:
                symbols.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
        # Byte tokens never merge (no merge names them), so BPE over the
        # whole sequence equals BPE between them.
        ids.extend(vocab[t] for t in bpe_word(symbols, ranks))
    return ids


def sp_cases(sp, vocab, merges):
    cases = []
    for name, text in CASES:
        if name in SP_SKIP:
            continue
        ids = sp.encode(text)
        with_bos = sp.encode(text, add_bos=True)
        sim = hf_sp_simulation(text, vocab, merges)
        if sim != ids:
            print("sp_llama2 %s: sentencepiece %s != HF simulation %s" % (name, ids, sim))
        has_added = any(is_added for is_added, _ in split_added(text, ["<unk>", "<s>", "</s>"]))
        cases.append({"name": name, "text": text, "ids": ids, "ids_with_special": with_bos,
                      "round_trip": sp.decode(ids) == text, "has_added": has_added})
    return cases


# ----------------------------------------------------------------------- main

def write_json(path, doc):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer")
    for style, make in (("gpt2", make_gpt2), ("llama3", make_llama3)):
        doc, ref = make()
        os.makedirs(os.path.join(out, style), exist_ok=True)
        write_json(os.path.join(out, style, "tokenizer.json"), doc)
        cases = byte_level_cases(ref)
        write_json(os.path.join(out, style, "expected.json"), {"style": style, "cases": cases})
        print("%s: %d merges, %d cases" % (style, len(doc["model"]["merges"]), len(cases)))
    model_proto = train_sp()
    sp, doc, vocab, merges = make_sp(model_proto)
    os.makedirs(os.path.join(out, "sp_llama2"), exist_ok=True)
    write_json(os.path.join(out, "sp_llama2", "tokenizer.json"), doc)
    with open(os.path.join(out, "sp_llama2", "tokenizer.model"), "wb") as f:
        f.write(model_proto)
    cases = sp_cases(sp, vocab, merges)
    write_json(os.path.join(out, "sp_llama2", "expected.json"),
               {"style": "sp_llama2", "cases": cases})
    print("sp_llama2: %d pieces, %d merges, %d cases" % (len(vocab), len(merges), len(cases)))

if __name__ == "__main__":
    main()
