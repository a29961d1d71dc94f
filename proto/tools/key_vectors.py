#!/usr/bin/python3
"""Independent reimplementation of the cachesvc key contract (proto/KEYS.md) in Python.

It derives the published test vectors from their inputs with python3-xxhash, sharing no code with
the C++ implementation, and either prints the vector block or checks the one in KEYS.md:

    proto/tools/key_vectors.py            # print the vector block
    proto/tools/key_vectors.py --check proto/KEYS.md
"""
import argparse
import struct
import sys

import xxhash

DTYPES = {"fp16": 1, "bf16": 2, "fp8_e4m3": 3, "fp32": 4}
ATTENTION = {"mha_gqa": 1, "mla": 2}


def lcg_tokens(n, seed, vocab):
    """Deterministic pseudo-random token ids (numerical recipes LCG), to keep inputs short to state."""
    out, x = [], seed
    for _ in range(n):
        x = (1664525 * x + 1013904223) % 2**32
        out.append(x % vocab)
    return out


LAYOUTS = [
    dict(model_id="llama-3.1-8b", num_layers=32, num_kv_heads=8, head_dim=128, dtype="bf16",
         block_tokens=16, tp_rank=0, tp_size=1, attention="mha_gqa"),
    dict(model_id="llama-3.1-70b", num_layers=80, num_kv_heads=1, head_dim=128, dtype="fp16",
         block_tokens=16, tp_rank=3, tp_size=8, attention="mha_gqa"),
    dict(model_id="deepseek-v3", num_layers=61, num_kv_heads=1, head_dim=576, dtype="bf16",
         block_tokens=64, tp_rank=0, tp_size=1, attention="mla"),
]

KEY_VECTORS = [
    dict(layout=1, tenant_salt=b"", tokens=list(range(40))),
    dict(layout=1, tenant_salt=bytes(range(16)), tokens=list(range(40))),
    dict(layout=2, tenant_salt=b"tenant-b", tokens=[4294967295, 0, 1, 65536] + list(range(1000, 1016))),
    dict(layout=2, tenant_salt=b"tenant-b", tokens=[7, 8, 9]),
    dict(layout=3, tenant_salt=bytes.fromhex("9f1c2e3d4b5a69788796a5b4c3d2e1f0"),
         tokens=lcg_tokens(130, seed=2026, vocab=129280)),
]


def layout_encoding(l):
    mid = l["model_id"].encode()
    return (b"cachesvc/layout/v1" + struct.pack("<I", len(mid)) + mid +
            struct.pack("<8I", l["num_layers"], l["num_kv_heads"], l["head_dim"], DTYPES[l["dtype"]],
                        l["block_tokens"], l["tp_rank"], l["tp_size"], ATTENTION[l["attention"]]))


def fingerprint(l):
    return xxhash.xxh3_64_intdigest(layout_encoding(l))


def seed_key(salt, fp):
    return xxhash.xxh3_128_digest(b"cachesvc/v1" + salt + struct.pack("<Q", fp))


def block_keys(seed, tokens, block):
    keys, prev = [], seed
    for i in range(len(tokens) // block):
        prev = xxhash.xxh3_128_digest(prev + struct.pack(f"<{block}I", *tokens[i * block:(i + 1) * block]))
        keys.append(prev)
    return keys


def render():
    lines = []
    for i, l in enumerate(LAYOUTS, 1):
        lines.append(f"[layout {i}]")
        for k in ("model_id", "num_layers", "num_kv_heads", "head_dim", "dtype", "block_tokens",
                  "tp_rank", "tp_size", "attention"):
            lines.append(f"{k:<13}= {l[k]}")
        lines.append(f"{'encoding':<13}= {layout_encoding(l).hex()}")
        lines.append(f"{'fingerprint':<13}= {fingerprint(l):016x}")
        lines.append("")
    for i, v in enumerate(KEY_VECTORS, 1):
        l = LAYOUTS[v["layout"] - 1]
        seed = seed_key(v["tenant_salt"], fingerprint(l))
        lines.append(f"[keys {i}]")
        lines.append(f"{'layout':<13}= {v['layout']}")
        lines.append(f"{'tenant_salt':<13}= {v['tenant_salt'].hex()}")
        lines.append(f"{'tokens':<13}= {' '.join(map(str, v['tokens']))}")
        lines.append(f"{'seed':<13}= {seed.hex()}")
        keys = block_keys(seed, v["tokens"], l["block_tokens"])
        for j, key in enumerate(keys):
            lines.append(f"{'key.' + str(j):<13}= {key.hex()}")
        if not keys:
            lines.append(f"{'keys':<13}= none")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def published_block(path):
    text = open(path, encoding="utf-8").read()
    begin, end = "<!-- vectors:begin -->\n```text\n", "```\n<!-- vectors:end -->"
    if begin not in text or end not in text:
        sys.exit(f"{path}: vector block markers not found")
    return text.split(begin, 1)[1].split(end, 1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", metavar="KEYS_MD", help="compare with the block published in KEYS_MD")
    args = ap.parse_args()
    block = render()
    if not args.check:
        sys.stdout.write(block)
        return 0
    published = published_block(args.check)
    if published != block:
        for n, (a, b) in enumerate(zip(published.splitlines(), block.splitlines()), 1):
            if a != b:
                print(f"line {n} of the vector block differs:\n  published: {a}\n  derived:   {b}")
                break
        else:
            print("vector blocks differ in length")
        return 1
    print(f"{args.check}: {block.count('[layout')} layouts and {block.count('[keys')} key vectors agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
