#!/usr/bin/env python3
"""An agent loop that tells cachesvc what it is doing, so its KV cache survives its tool calls.

The "model" and the "tools" are stand-ins (the tokenizer is UTF-8 bytes, the tools sleep); what
is real is every call to the daemon: open a session with the system prompt, append each turn,
wrap each tool call in `session.tool_call(...)`, fork a session for a sub-agent, pin the session
while waiting on the user, close.

Run it against a daemon started as in the README (open mode, no token):

    scripts/run-daemon.sh &
    PYTHONPATH=build/release/client/python:client/python \
        python3 client/examples/agent_loop.py --address 127.0.0.1:50051

With tenants, pass the tenant's token (--token, or CACHESVC_TOKEN in the environment). Sessions
belong to a model layout that an engine of the same tenant registered; without an engine running,
the example registers its demo layout itself, as the engine's connector would (pass
--layout-fingerprint to use the one your engine registered instead). --async runs the same loop
with the asyncio client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import cachesvc_sessions as cs

DEMO_LAYOUT = cs.Layout(model_id="demo-agent-model", num_layers=4, num_kv_heads=2, head_dim=64,
                        dtype="fp16", block_tokens=16)

SYSTEM_PROMPT = "You are a research agent. Tools: web_search(query), run_code(source)."


def tokenize(text: str) -> list[int]:
    """Stand-in tokenizer: one token per UTF-8 byte."""
    return list(text.encode("utf-8"))


def web_search(query: str, seconds: float) -> str:
    time.sleep(seconds)  # the tool's latency: this is when an engine would evict the KV cache
    return f"3 results for {query!r}: ..."


def run_code(source: str, seconds: float) -> str:
    time.sleep(seconds)
    return "stdout: 42"


def show(label: str, info: cs.SessionInfo) -> None:
    print(f"{label}: session {info.session_id} state={info.state.name} "
          f"context_tokens={info.context_tokens} blocks={len(info.blocks)}", flush=True)


def agent_loop(client: cs.Client, fingerprint: int, tool_s: float) -> None:
    with client.open_session(fingerprint, client_session_id="example-agent",
                             tokens=tokenize(SYSTEM_PROMPT)) as session:
        print(f"opened session {session.id}", flush=True)

        # Turn 1: the user asks; the model answers with a tool call.
        session.append(tokenize("User: what is the answer to everything?"))
        session.append(tokenize("Assistant: <call web_search('answer to everything')>"))

        # The tool call: the service holds the session's blocks and plans to have them back in
        # the fast tier by `expected_s`.
        with session.tool_call("web_search", expected_s=2 * tool_s) as call:
            show("during web_search", session.info())
            result = web_search("answer to everything", tool_s)
        print(f"tool web_search: planned {call.planned_s:.3f} s, took {call.elapsed_s:.3f} s",
              flush=True)
        session.append(tokenize(f"Tool: {result}"))

        # A sub-agent checks the result in parallel: a fork shares the context so far.
        with session.fork(client_session_id="example-agent/verifier") as sub:
            print(f"forked sub-agent {sub.id}", flush=True)
            sub.append(tokenize("Assistant (verifier): <call run_code('print(6*7)')>"))
            with sub.tool_call("run_code", expected_s=tool_s):
                output = run_code("print(6*7)", tool_s)
            sub.append(tokenize(f"Tool: {output}"))
            show("sub-agent done", sub.info())
        session.append(tokenize("Assistant: 42, confirmed by a sub-agent."))

        # Waiting on the human: keep the context warm for a while (a hint, not a promise).
        session.pin(60)
        show("waiting for the user", session.info())
    print(f"closed session {session.id}", flush=True)


async def agent_loop_async(client: cs.AsyncClient, fingerprint: int, tool_s: float) -> None:
    async with await client.open_session(fingerprint, client_session_id="example-agent-async",
                                         tokens=tokenize(SYSTEM_PROMPT)) as session:
        print(f"opened session {session.id}", flush=True)
        await session.append(tokenize("User: what is the answer to everything?"))
        async with session.tool_call("web_search", expected_s=2 * tool_s) as call:
            show("during web_search", await session.info())
            await asyncio.sleep(tool_s)  # the tool, awaited: other sessions run meanwhile
        print(f"tool web_search: planned {call.planned_s:.3f} s, took {call.elapsed_s:.3f} s",
              flush=True)
        await session.append(tokenize("Tool: 3 results"))
        async with await session.fork(client_session_id="example-agent-async/verifier") as sub:
            print(f"forked sub-agent {sub.id}", flush=True)
            async with sub.tool_call("run_code", expected_s=tool_s):
                await asyncio.sleep(tool_s)
            await sub.append(tokenize("Tool: stdout: 42"))
        await session.pin(60)
        show("waiting for the user", await session.info())
    print(f"closed session {session.id}", flush=True)


def parse_fingerprint(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") or len(text) == 16 else int(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="127.0.0.1:50051", help="the daemon's gRPC address")
    p.add_argument("--token", default=os.environ.get("CACHESVC_TOKEN"),
                   help="the tenant's bearer token (default $CACHESVC_TOKEN; none in open mode)")
    p.add_argument("--tls-root", help="PEM file of the CA that signed the daemon's certificate")
    p.add_argument("--layout-fingerprint", type=parse_fingerprint,
                   help="the layout your engine registered (16 hex digits or an int); default: "
                        "register the demo layout")
    p.add_argument("--tool-seconds", type=float, default=0.2, help="how long each tool sleeps")
    p.add_argument("--async", dest="use_async", action="store_true", help="use AsyncClient")
    args = p.parse_args()

    try:
        if args.use_async:
            async def run() -> None:
                async with cs.AsyncClient(args.address, token=args.token,
                                          tls_root=args.tls_root) as client:
                    fingerprint = (args.layout_fingerprint
                                   or await client.register_layout(DEMO_LAYOUT))
                    await agent_loop_async(client, fingerprint, args.tool_seconds)
            asyncio.run(run())
        else:
            with cs.Client(args.address, token=args.token, tls_root=args.tls_root) as client:
                fingerprint = args.layout_fingerprint or client.register_layout(DEMO_LAYOUT)
                agent_loop(client, fingerprint, args.tool_seconds)
    except cs.CachesvcError as e:
        print(f"agent_loop: {e}", file=sys.stderr)
        return 3 if isinstance(e, cs.Unavailable) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
