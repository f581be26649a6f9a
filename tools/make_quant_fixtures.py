#!/usr/bin/python3
"""Reference blocks for pcfarm's GGML quantized formats (tasks/backend/ggml_quants).

An encoder and decoder for Q8_0, Q4_0, Q4_K, Q6_K, F16 and BF16 written from
the GGUF spec (ggml-org/ggml docs/gguf.md, the block layouts in gguf-py) with
numpy alone, sharing no code with the C++ engine. For every case it records
the f32 input, the encoded bytes and the values this decoder gets back, so
the C++ test can decode the same bytes and compare bit for bit.

The Q8_0 and Q4_0 encoders follow gguf-py's reference quantizers (the C++
QuantizeBlocks must produce the same bytes). The K-quant encoders are our
own simple ones (per-sub-block range, 6-bit or 8-bit sub-scales over one
super-block scale): any valid block is fine for a decoding test, and the
round trip still bounds their error. Cases: random data, boundary values
(zeros, the f16 maximum, a single outlier, -128/127 and 0/15 codes), blocks
of random bytes with a finite scale (every bit of the layout exercised), and
blocks whose scale is Inf or NaN (decoded as the spec's formula says: d·q
in IEEE f32, so Inf·0 is NaN).

All decoding is in float32, one rounding per operation, in the order of the
spec's formulas (numpy never fuses a multiply-add).

File format (little-endian): b"PCQF", u32 case count; per case: u32 name
length, name, u32 ggml type (F16 = 1, BF16 = 30), u32 value count n,
f32 input[n], u32 byte count, bytes, f32 decoded[n].

Usage (Debian's python3-numpy):
  /usr/bin/python3 tools/make_quant_fixtures.py --out tests/fixtures/quant/blocks.bin
"""

import argparse
import struct

import numpy as np

F32 = np.float32
F16, Q4_0, Q8_0, Q4_K, Q6_K, BF16 = 1, 2, 8, 12, 14, 30


def round_half_away(v):
    """C's roundf in f32: exact (no +0.5 overflow into the next integer)."""
    a = np.abs(v)
    f = np.floor(a)
    r = f + (a - f >= F32(0.5)).astype(F32)
    return np.copysign(r, v).astype(F32)


def f16_bytes(v):
    return np.asarray(v, dtype=F32).astype(np.float16).tobytes()


def f16_value(b, off):
    return F32(np.frombuffer(b[off:off + 2], dtype=np.float16)[0])


# ---- Q8_0: f16 d, int8 q[32]; x = d*q ---------------------------------------

def enc_q8_0(x):
    out = b""
    for blk in x.reshape(-1, 32):
        d = F32(np.max(np.abs(blk)) / F32(127))
        idv = F32(1) / d if d != 0 else F32(0)
        q = round_half_away(blk * idv).astype(np.int8)
        out += f16_bytes(d) + q.tobytes()
    return out


def dec_q8_0(b, n):
    y = []
    for i in range(n // 32):
        blk = b[34 * i:34 * i + 34]
        d = f16_value(blk, 0)
        q = np.frombuffer(blk[2:], dtype=np.int8).astype(F32)
        y.append(d * q)
    return np.concatenate(y).astype(F32)


# ---- Q4_0: f16 d, 16 bytes of nibbles; x = d*(nibble-8) ----------------------

def enc_q4_0(x):
    out = b""
    for blk in x.reshape(-1, 32):
        i = int(np.argmax(np.abs(blk)))
        d = F32(blk[i] / F32(-8))
        idv = F32(1) / d if d != 0 else F32(0)
        q = np.minimum(F32(15), np.trunc(blk * idv + F32(8.5))).astype(np.uint8)
        out += f16_bytes(d) + (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()
    return out


def dec_q4_0(b, n):
    y = []
    for i in range(n // 32):
        blk = b[18 * i:18 * i + 18]
        d = f16_value(blk, 0)
        qs = np.frombuffer(blk[2:], dtype=np.uint8)
        q = np.concatenate([qs & 15, qs >> 4]).astype(F32) - F32(8)
        y.append(d * q)
    return np.concatenate(y).astype(F32)


# ---- Q4_K: f16 d, f16 dmin, scales[12], qs[128]; x = (d*sc)*q - (dmin*m) ----

def pack_q4k_scales(sc, m):
    s = [0] * 12
    for i in range(8):
        if i < 4:
            s[i] |= sc[i] & 63
            s[i + 4] |= m[i] & 63
        else:
            s[i + 4] |= (sc[i] & 15) | ((m[i] & 15) << 4)
            s[i - 4] |= (sc[i] >> 4) << 6
            s[i] |= (m[i] >> 4) << 6
    return bytes(s)


def unpack_q4k_scale(s, i):
    if i < 4:
        return s[i] & 63, s[i + 4] & 63
    return (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4), (s[i + 4] >> 4) | ((s[i] >> 6) << 4)


def enc_q4_k(x):
    out = b""
    for sb in x.reshape(-1, 256):
        subs = sb.reshape(8, 32)
        lo = np.minimum(subs.min(axis=1), F32(0))
        scale = (subs.max(axis=1) - lo) / F32(15)
        d = F32(scale.max() / F32(63))
        dmin = F32(-lo.min() / F32(63))
        d16, dmin16 = F32(np.float16(d)), F32(np.float16(dmin))
        sc = np.clip(round_half_away(scale / d16) if d16 else np.zeros(8, F32), 0, 63).astype(int)
        m = np.clip(round_half_away(-lo / dmin16) if dmin16 else np.zeros(8, F32), 0, 63).astype(int)
        qs = np.zeros(128, dtype=np.uint8)
        for j in range(8):
            step = d16 * F32(sc[j])
            if step == 0:
                q = np.zeros(32, dtype=np.uint8)
            else:
                q = np.clip(round_half_away((subs[j] + dmin16 * F32(m[j])) / step), 0, 15).astype(np.uint8)
            if j % 2 == 0:
                qs[32 * (j // 2):32 * (j // 2) + 32] |= q
            else:
                qs[32 * (j // 2):32 * (j // 2) + 32] |= q << 4
        out += f16_bytes(d) + f16_bytes(dmin) + pack_q4k_scales(sc, m) + qs.tobytes()
    return out


def dec_q4_k(b, n):
    y = np.zeros(n, dtype=F32)
    for i in range(n // 256):
        blk = b[144 * i:144 * i + 144]
        d, dmin = f16_value(blk, 0), f16_value(blk, 2)
        s = blk[4:16]
        qs = np.frombuffer(blk[16:], dtype=np.uint8)
        for j in range(8):
            sc, m = unpack_q4k_scale(s, j)
            chunk = qs[32 * (j // 2):32 * (j // 2) + 32]
            q = (chunk & 15) if j % 2 == 0 else (chunk >> 4)
            y[256 * i + 32 * j:256 * i + 32 * j + 32] = (d * F32(sc)) * q.astype(F32) - (dmin * F32(m))
    return y


# ---- Q6_K: ql[128], qh[64], int8 scales[16], f16 d; x = (d*sc)*(q-32) --------

def enc_q6_k(x):
    out = b""
    for sb in x.reshape(-1, 256):
        subs = sb.reshape(16, 16)
        scale = np.abs(subs).max(axis=1) / F32(31)
        d = F32(scale.max() / F32(127))
        d16 = F32(np.float16(d))
        sc = np.clip(round_half_away(scale / d16) if d16 else np.zeros(16, F32), -128, 127).astype(np.int8)
        q = np.zeros(256, dtype=np.int64)
        for j in range(16):
            step = d16 * F32(sc[j])
            if step != 0:
                q[16 * j:16 * j + 16] = np.clip(round_half_away(subs[j] / step), -32, 31)
        q += 32
        ql = np.zeros(128, dtype=np.uint8)
        qh = np.zeros(64, dtype=np.uint8)
        for h in range(2):
            for l in range(32):
                for t in range(4):
                    v = int(q[128 * h + l + 32 * t])
                    idx = 64 * h + l + 32 * (t & 1)
                    ql[idx] |= (v & 15) << (4 if t & 2 else 0)
                    qh[32 * h + l] |= (v >> 4) << (2 * t)
        out += ql.tobytes() + qh.tobytes() + sc.tobytes() + f16_bytes(d)
    return out


def dec_q6_k(b, n):
    y = np.zeros(n, dtype=F32)
    for i in range(n // 256):
        blk = b[210 * i:210 * i + 210]
        ql = np.frombuffer(blk[0:128], dtype=np.uint8)
        qh = np.frombuffer(blk[128:192], dtype=np.uint8)
        sc = np.frombuffer(blk[192:208], dtype=np.int8)
        d = f16_value(blk, 208)
        for h in range(2):
            for l in range(32):
                for t in range(4):
                    lo = int(ql[64 * h + l + 32 * (t & 1)])
                    nib = lo >> 4 if t & 2 else lo & 15
                    q = (nib | (((int(qh[32 * h + l]) >> (2 * t)) & 3) << 4)) - 32
                    ds = d * F32(sc[8 * h + l // 16 + 2 * t])
                    y[256 * i + 128 * h + l + 32 * t] = ds * F32(q)
    return y


# ---- F16 / BF16 ----------------------------------------------------------------

def enc_f16(x):
    return x.astype(np.float16).tobytes()


def dec_f16(b, n):
    return np.frombuffer(b, dtype=np.float16).astype(F32)


def enc_bf16(x):
    u = x.view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where(nan, (u >> 16) | 0x40, r)
    return r.astype(np.uint16).tobytes()


def dec_bf16(b, n):
    return (np.frombuffer(b, dtype=np.uint16).astype(np.uint32) << 16).view(F32)


CODECS = {
    Q8_0: (enc_q8_0, dec_q8_0, 32, 34),
    Q4_0: (enc_q4_0, dec_q4_0, 32, 18),
    Q4_K: (enc_q4_k, dec_q4_k, 256, 144),
    Q6_K: (enc_q6_k, dec_q6_k, 256, 210),
    F16: (enc_f16, dec_f16, 1, 2),
    BF16: (enc_bf16, dec_bf16, 1, 2),
}
NAMES = {Q8_0: "q8_0", Q4_0: "q4_0", Q4_K: "q4_k", Q6_K: "q6_k", F16: "f16", BF16: "bf16"}


def with_scale(raw, t, value):
    """Blocks of `raw` bytes with every scale field set to the f16 `value`."""
    _, _, bv, bb = CODECS[t]
    raw = bytearray(raw)
    h = f16_bytes(value)
    for off in range(0, len(raw), bb):
        if t in (Q8_0, Q4_0):
            raw[off:off + 2] = h
        elif t == Q4_K:
            raw[off:off + 2] = h
            raw[off + 2:off + 4] = h
        elif t == Q6_K:
            raw[off + 208:off + 210] = h
    return bytes(raw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    np.seterr(all="ignore")  # Inf/NaN scales are cases, not accidents
    rng = np.random.default_rng(16)
    cases = []

    def add(name, t, x, data=None):
        enc, dec, bv, bb = CODECS[t]
        x = np.asarray(x, dtype=F32)
        if data is None:
            data = enc(x)
        n = len(data) // bb * bv
        assert len(data) == n // bv * bb
        if x.size != n:
            x = np.zeros(n, dtype=F32)  # hand-made bytes: no input
        cases.append((name, t, x, data, dec(data, n).astype(F32)))

    for t in (Q8_0, Q4_0, Q4_K, Q6_K, F16, BF16):
        nm = NAMES[t]
        bv = CODECS[t][2]
        big = max(bv, 32) * 4
        add(nm + "/normal", t, rng.standard_normal(big) * 0.05)
        add(nm + "/wide", t, rng.standard_normal(big) * 1000.0)
        add(nm + "/zeros", t, np.zeros(big))
        add(nm + "/positive", t, rng.random(big) * 3.0)
        add(nm + "/negative", t, -rng.random(big) * 3.0)
        outlier = rng.standard_normal(big) * 0.01
        outlier[5] = 40.0
        add(nm + "/outlier", t, outlier)
        add(nm + "/f16_max", t, np.linspace(-65504.0 / 2, 65504.0 / 2, big))
        add(nm + "/tiny", t, rng.standard_normal(big) * 1e-6)
        if t in (F16, BF16):
            add(nm + "/specials", t, [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0,
                                      1e-8, -6e-8, 3.0e38, 1.0 + 2.0 ** -8, 1.0 + 2.0 ** -11])
            continue
        bb = CODECS[t][3]
        raw = rng.integers(0, 256, size=bb * 3, dtype=np.uint8).tobytes()
        add(nm + "/random_bytes", t, None, with_scale(raw, t, 0.5))
        add(nm + "/subnormal_scale", t, None, with_scale(raw, t, 6e-8))
        add(nm + "/max_scale", t, None, with_scale(raw, t, 65504.0))
        add(nm + "/inf_scale", t, None, with_scale(raw, t, np.inf))
        add(nm + "/nan_scale", t, None, with_scale(raw, t, np.nan))
        if t == Q8_0:
            add(nm + "/extreme_codes", t, None, f16_bytes(1.0) + bytes([0x80, 0x7F] * 16))
        if t == Q4_0:
            add(nm + "/extreme_codes", t, None, f16_bytes(-2.0) + bytes([0x0F, 0xF0] * 8))

    with open(args.out, "wb") as f:
        f.write(b"PCQF" + struct.pack("<I", len(cases)))
        for name, t, x, data, y in cases:
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<II", t, x.size))
            f.write(x.astype("<f4").tobytes())
            f.write(struct.pack("<I", len(data)) + data)
            f.write(y.astype("<f4").tobytes())
    print(f"{args.out}: {len(cases)} cases")


if __name__ == "__main__":
    main()
