#!/usr/bin/python3
"""Independent Python implementation of kernels/FORMAT.md (TQ3/TQ4, format version 1).

Written from FORMAT.md alone, sharing no code with the C++: fp32 arithmetic is emulated by
rounding every double result to fp32 (exact for +, -, *, /, sqrt, since double has more than
2*24+2 bits), fp16 by struct's 'e' format (round to nearest-even). It writes and checks the golden
vectors that the scalar, AVX2 and CUDA implementations must reproduce byte for byte:

    kernels/tools/tq_reference.py --write kernels/testdata/golden.txt
    kernels/tools/tq_reference.py --check kernels/testdata/golden.txt
"""
import argparse
import math
import re
import struct
import sys

TABLES_H = __file__.rsplit("/tools/", 1)[0] + "/tq_tables.h"


def load_tables():
    text = open(TABLES_H).read()
    tables = {}
    for kind, d, b, body in re.findall(r"k(Centroids|Thresholds)D(\d+)B(\d)\[\d+\] = \{(.*?)\};", text, re.S):
        vals = [struct.unpack("<f", struct.pack("<I", int(h, 16)))[0] for h in re.findall(r"// (0x[0-9a-f]{8})", body)]
        tables[(kind, int(d), int(b))] = vals
    return tables


TABLES = load_tables()


def f32(x):
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def add(a, b):
    return f32(a + b)


def mul(a, b):
    return f32(a * b)


def bits32(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def from_bits32(u):
    return struct.unpack("<f", struct.pack("<I", u))[0]


def neg(x):
    return from_bits32(bits32(x) ^ 0x80000000)


def fp16_to_f32(h):
    return struct.unpack("<e", struct.pack("<H", h))[0]


def f32_to_fp16(x):
    if math.isnan(x):
        return 0x7E00 | (0x8000 if bits32(x) >> 31 else 0)
    try:
        return struct.unpack("<H", struct.pack("<e", x))[0]
    except OverflowError:
        return 0xFC00 if x < 0 else 0x7C00


def bf16_to_f32(b):
    return from_bits32(b << 16)


def f32_to_bf16(x):
    u = bits32(x)
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return 0x7FC0
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def splitmix64_words(seed, n):
    state, out = seed, []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        out.append(z ^ (z >> 31))
    return out


def signs(seed, d):
    words = splitmix64_words(seed, d // 64)
    return [(words[j // 64] >> (j % 64)) & 1 for j in range(d)]


def reduce8(terms):
    p = [0.0] * 8
    for j, t in enumerate(terms):
        p[j % 8] = add(p[j % 8], t)
    q = [add(p[k], p[k + 4]) for k in range(4)]
    return add(add(q[0], q[2]), add(q[1], q[3]))


def wht(v):
    d, h = len(v), 1
    while h < d:
        for i in range(0, d, 2 * h):
            for j in range(i, i + h):
                a, b = v[j], v[j + h]
                v[j], v[j + h] = add(a, b), add(a, neg(b))
        h *= 2


def pack(codes, bits):
    out = bytearray()
    if bits == 4:
        for m in range(len(codes) // 2):
            out.append(codes[2 * m] | (codes[2 * m + 1] << 4))
    else:
        for g in range(len(codes) // 8):
            w = sum(codes[8 * g + k] << (3 * k) for k in range(8))
            out += bytes([w & 0xFF, (w >> 8) & 0xFF, (w >> 16) & 0xFF])
    return bytes(out)


def unpack(data, bits, d):
    if bits == 4:
        return [(data[j // 2] >> (4 * (j % 2))) & 0xF for j in range(d)]
    codes = []
    for g in range(d // 8):
        w = data[3 * g] | (data[3 * g + 1] << 8) | (data[3 * g + 2] << 16)
        codes += [(w >> (3 * k)) & 7 for k in range(8)]
    return codes


def encode_vector(x, sgn, bits, trace=None):
    """Returns (norm field, packed codes); appends the fp32 scale alpha (0 or NaN for the special
    vectors) to `trace` when given."""
    d = len(x)
    cent, thr = TABLES[("Centroids", d, bits)], TABLES[("Thresholds", d, bits)]
    finite = all(math.isfinite(v) for v in x)
    n2 = reduce8([mul(v, v) for v in x])
    if not finite or not math.isfinite(n2) or n2 == 0.0:
        nan = not finite or not math.isfinite(n2)
        if trace is not None:
            trace.append(math.nan if nan else 0.0)
        return (0x7E00 if nan else 0), pack([0] * d, bits)
    v = [neg(x[j]) if sgn[j] else x[j] for j in range(d)]
    wht(v)
    norm = f32(math.sqrt(n2))
    inv = f32(1.0 / norm)
    z = [mul(vj, inv) for vj in v]
    codes = [sum(1 for t in thr if zj > t) for zj in z]
    c = [cent[k] for k in codes]
    alpha = mul(norm, f32(reduce8([mul(z[j], c[j]) for j in range(d)]) / reduce8([mul(cj, cj) for cj in c])))
    if trace is not None:
        trace.append(alpha)
    field = f32_to_fp16(alpha)
    if (field & 0x7C00) == 0x7C00 and norm < 65520.0:
        field = 0x7BFF  # least-squares scale beyond fp16 while the norm fits: clamp
    return field, pack(codes, bits)


def decode_vector(norm_bits, code_bytes, sgn, bits, d, fp16_out):
    alpha = fp16_to_f32(norm_bits)
    if not math.isfinite(alpha):
        return [0x7E00 if fp16_out else 0x7FC0] * d
    cent = TABLES[("Centroids", d, bits)]
    y = [cent[k] for k in unpack(code_bytes, bits, d)]
    wht(y)
    beta = mul(alpha, 1.0 / d)
    out = []
    for j in range(d):
        t = mul(y[j], beta)
        t = neg(t) if sgn[j] else t
        out.append(f32_to_fp16(min(max(t, -65504.0), 65504.0)) if fp16_out else f32_to_bf16(t))
    return out


def fnv1a32(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) % 2**32
    return h


def encode_block(codec, fp16, d, seed, raw, trace=None):
    bits = 3 if codec == "tq3" else 4
    vals = struct.unpack(f"<{len(raw) // 2}H", raw)
    n = len(vals) // d
    sgn = signs(seed, d)
    norms, codes = [], b""
    for i in range(n):
        x = [(fp16_to_f32 if fp16 else bf16_to_f32)(h) for h in vals[i * d:(i + 1) * d]]
        nb, cb = encode_vector(x, sgn, bits, trace)
        norms.append(nb)
        codes += cb
    header = b"CSTQ" + bytes([1, bits, 1 if fp16 else 2, d.bit_length() - 1])
    header += struct.pack("<QIII", seed, n, 0, 0)
    header += struct.pack("<I", fnv1a32(header))
    norm_region = struct.pack(f"<{n}H", *norms)
    norm_region += bytes((-len(norm_region)) % 16)
    return header + norm_region + codes


def decode_block(block, fp16):
    bits, d = block[5], 1 << block[7]
    seed, n = struct.unpack("<QI", block[8:20])
    norms = struct.unpack(f"<{n}H", block[32:32 + 2 * n])
    off = 32 + (2 * n + 15) // 16 * 16
    cb = d * bits // 8
    sgn = signs(seed, d)
    out = []
    for i in range(n):
        out += decode_vector(norms[i], block[off + i * cb: off + (i + 1) * cb], sgn, bits, d, fp16)
    return struct.pack(f"<{len(out)}H", *out)


# ---- golden inputs: deterministic, and covering the special cases FORMAT.md defines ----

def gaussian_stream(seed):
    state = seed
    while True:
        u1, u2 = splitmix64_words(state, 2)
        state = (state + 2) % 2**64
        a = ((u1 >> 11) + 0.5) / 2**53
        b = (u2 >> 11) / 2**53
        yield math.sqrt(-2 * math.log(a)) * math.cos(2 * math.pi * b)


def golden_inputs(d, fp16, seed):
    g = gaussian_stream(seed)
    to = (lambda v: f32_to_fp16(v)) if fp16 else (lambda v: f32_to_bf16(f32(v)))
    vectors = []
    for _ in range(4):  # plain Gaussian vectors of a few scales
        scale = 0.05 + abs(next(g)) * 3
        vectors.append([to(next(g) * scale) for _ in range(d)])
    outl = [to(next(g)) for _ in range(d)]  # 20x outlier channels, as keys have
    for j in (3, d // 2 + 1, d - 5):
        outl[j] = to(fp16_to_f32(outl[j]) * 20 if fp16 else bf16_to_f32(outl[j]) * 20)
    vectors.append(outl)
    vectors.append([0] * d)  # zero vector
    tiny = [to(next(g) * 1e-6) for _ in range(d)]  # fp16 subnormals
    vectors.append(tiny)
    nan = [to(next(g)) for _ in range(d)]
    nan[7] = 0x7E00 if fp16 else 0x7FC0
    vectors.append(nan)
    inf = [to(next(g)) for _ in range(d)]
    inf[d - 1] = 0xFC00 if fp16 else 0xFF80
    vectors.append(inf)
    big = [to(40000.0 if j % 2 else -40000.0) for j in range(d)]  # norm beyond fp16
    vectors.append(big)
    return vectors


CASES = [(codec, d, fp16) for codec in ("tq3", "tq4") for d in (64, 128, 256) for fp16 in (True, False)]


# ---- digests: many vectors per case, checked through a 64-bit FNV-1a of the bytes ----
# A difference in reduction order or rounding shows in a few vectors out of thousands, too few
# for the golden bytes above to catch reliably; these cases encode DIGEST_VECTORS vectors each.
DIGEST_VECTORS = 256


def digest_inputs(case, d, fp16):
    """Value k: u = the k-th SplitMix64 output (state = 0xD16E57 + case); x = (((u >> 40) & 0xFFFFFF)
    - 2^23) / 2^23 * 2^(((u >> 32) & 7) - 3), exact in fp32; rounded to fp16 or bf16."""
    out = []
    state = 0xD16E57 + case
    for _ in range(DIGEST_VECTORS * d):
        state = (state + 0x9E3779B97F4A7C15) % 2**64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        u = z ^ (z >> 31)
        x = (((u >> 40) & 0xFFFFFF) - 2**23) / 2**23 * 2.0 ** (((u >> 32) & 7) - 3)
        out.append(f32_to_fp16(x) if fp16 else f32_to_bf16(x))
    return out


def fnv1a64(data, h=0xCBF29CE484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h


def render():
    out = []
    for n, (codec, d, fp16) in enumerate(CASES, 1):
        seed = 0x6361636865737663 if n % 2 else 0x0123456789ABCDEF + n
        vecs = golden_inputs(d, fp16, seed=1000 + n)
        raw = struct.pack(f"<{len(vecs) * d}H", *[h for v in vecs for h in v])
        alphas = []
        enc = encode_block(codec, fp16, d, seed, raw, alphas)
        dec = decode_block(enc, fp16)
        out.append(f"[golden {n}]")
        out.append(f"codec = {codec}")
        out.append(f"type = {'fp16' if fp16 else 'bf16'}")
        out.append(f"head_dim = {d}")
        out.append(f"seed = {seed:016x}")
        out.append(f"input = {raw.hex()}")
        out.append(f"encoded = {enc.hex()}")
        out.append(f"decoded = {dec.hex()}")
        out.append("alpha = " + " ".join("7fc00000" if math.isnan(a) else f"{bits32(a):08x}" for a in alphas))
        out.append("")
    for n, (codec, d, fp16) in enumerate(CASES, 1):
        vals = digest_inputs(n, d, fp16)
        raw = struct.pack(f"<{len(vals)}H", *vals)
        enc = encode_block(codec, fp16, d, 0x6361636865737663, raw)
        dec = decode_block(enc, fp16)
        out.append(f"[digest {n}]")
        out.append(f"codec = {codec}")
        out.append(f"type = {'fp16' if fp16 else 'bf16'}")
        out.append(f"head_dim = {d}")
        out.append(f"vectors = {DIGEST_VECTORS}")
        out.append(f"fnv64 = {fnv1a64(dec, fnv1a64(enc)):016x}")
        out.append("")
    head = ("# Golden vectors of kernels/FORMAT.md version 1, written by kernels/tools/tq_reference.py.\n"
            "# Each block: 10 vectors (4 Gaussian, 1 with 20x outliers, zero, fp16-subnormal, NaN, Inf,\n"
            "# norm beyond fp16). Every implementation must reproduce 'encoded' from 'input' and\n"
            "# 'decoded' from 'encoded' byte for byte; 'alpha' is each vector's fp32 scale before its\n"
            "# rounding to the fp16 norm field (FORMAT.md step 8). Each [digest N]: the FNV-1a-64 of the encoded\n"
            "# then decoded bytes of 256 vectors made by digest_inputs() (seed 0x6361636865737663).\n\n")
    return head + "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="FILE")
    g.add_argument("--check", metavar="FILE")
    args = ap.parse_args()
    text = render()
    if args.write:
        open(args.write, "w").write(text)
        print(f"wrote {len(CASES)} golden blocks to {args.write}")
        return 0
    have = open(args.check).read()
    if have != text:
        for i, (a, b) in enumerate(zip(have.splitlines(), text.splitlines()), 1):
            if a != b:
                print(f"{args.check}:{i}: differs from this implementation's output ({a[:40]}...)")
                break
        return 1
    print(f"{args.check}: {len(CASES)} golden blocks agree with the Python implementation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
