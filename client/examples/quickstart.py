#!/usr/bin/python3
"""The README's quick start: an engine saves a prompt's KV blocks through the connector, the agent
framework opens the session and starts a tool call, and the daemon holds the session's blocks
while it waits (look at them with `cachectl sessions show ID` or `cachectl blocks show KEY`).

    PYTHONPATH=build/release/client/python:client/python \\
        python3 client/examples/quickstart.py [--address 127.0.0.1:50051] [--token T]
        [--tool-seconds 30] [--end]

It prints the session id and the block keys, and leaves the tool call running (the daemon keeps
holding the blocks until the call's expected end, or a later EndToolCall); with --end it ends the
tool call, loads the prefix back into fresh pages and checks the bytes. Exit codes: 0 done,
1 the daemon said no, 3 the daemon cannot be reached.
"""

import argparse
import sys

import torch

import cachesvc
import cachesvc_sessions

# A tiny model's KV: 2 layers, 2 KV heads of 64 values, fp16, 16 tokens per block.
LAYOUT = cachesvc.Layout(model_id="quickstart-tiny", num_layers=2, num_kv_heads=2, head_dim=64,
                         dtype="fp16", block_tokens=16)
PAGES = 8


def kv_pages(seed):
    g = torch.Generator().manual_seed(seed)
    shape = (PAGES, LAYOUT.block_tokens, LAYOUT.num_kv_heads, LAYOUT.head_dim)
    return [(torch.randn(shape, generator=g).half(), torch.randn(shape, generator=g).half())
            for _ in range(LAYOUT.num_layers)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", default="127.0.0.1:50051")
    ap.add_argument("--token", default="")
    ap.add_argument("--tool-seconds", type=float, default=30.0)
    ap.add_argument("--end", action="store_true", help="end the tool call and load the blocks back")
    args = ap.parse_args()

    prompt = list(range(1000, 1000 + 4 * LAYOUT.block_tokens))  # 4 full blocks
    pages = [0, 1, 2, 3]
    try:
        conn = cachesvc.Connector(args.address, LAYOUT, token=args.token)
        engine_kv = kv_pages(seed=1)
        conn.register_kv_caches(engine_kv, "NHD")
        agents = cachesvc_sessions.Client(args.address, token=args.token or None)
        session = agents.open_session(conn.fingerprint, client_session_id="quickstart",
                                      tokens=prompt)
        # The engine has just run the prefill: save its blocks, layer by layer.
        conn.begin_save(prompt, pages, session_id=session.id)
        for layer in range(LAYOUT.num_layers):
            conn.save_layer(layer)
        saved = conn.wait_for_save()
        # The model's turn ended in a tool call: the daemon holds the session's blocks.
        session.begin_tool_call("web_search", expected_s=args.tool_seconds)
        print(f"session {session.id}: {saved.blocks_committed} blocks saved, waiting on "
              f"web_search (expected {args.tool_seconds:g} s)")
        for key in conn.block_keys(prompt):
            print(f"  block {key.hex()}")
        if args.end:
            session.end_tool_call()
            fresh = kv_pages(seed=2)
            conn.register_kv_caches(fresh, "NHD")
            got = conn.load(prompt, pages)
            same = all(torch.equal(fresh[l][p][i], engine_kv[l][p][i])
                       for l in range(LAYOUT.num_layers) for p in (0, 1) for i in pages)
            print(f"loaded {got.tokens} tokens back; bytes identical: {same}")
            session.close()
            return 0 if same and got.tokens == len(prompt) else 1
        return 0
    except (cachesvc.Unavailable, cachesvc_sessions.Unavailable) as e:
        print(f"quickstart: cannot reach {args.address}: {e}", file=sys.stderr)
        return 3
    except (cachesvc.ConnectorError, cachesvc_sessions.CachesvcError) as e:
        print(f"quickstart: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
