#!/usr/bin/python3
"""The Python session client (client/python/cachesvc_sessions) against a real daemon.

Starts the cachesvc binary named by $CACHESVC_BIN (CMake passes the build tree's) on a temporary
data dir with two tenants, a and b (b: at most 2 open sessions), on 127.0.0.1:0, and drives it
through Client and AsyncClient as an agent framework does: open, append, tool calls (the state
inside and after the `with`, an exception inside, a learned expectation), fork, truncate, pin,
info, close; the errors (a bad token, another tenant's session, bad arguments, the quota, an
unreachable daemon); and the example agent loop as a subprocess. The daemon is stopped at the end,
also on failure, and must drain and exit 0.

Needs PYTHONPATH with <build>/client/python (the generated stubs) and client/python; ctest sets
both (tests/CMakeLists.txt, test sessions_python).
"""

import asyncio
import ctypes
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import cachesvc_sessions as cs

SOURCE_DIR = os.environ.get("CACHESVC_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOKEN_A = "python-sessions-token-a"
TOKEN_B = "python-sessions-token-b"
LAYOUT = cs.Layout(model_id="python-session-test", num_layers=2, num_kv_heads=2, head_dim=64,
                   dtype="fp16", block_tokens=16)


def tokens(n, first=1000):
    return list(range(first, first + n))


class Daemon:
    """The cachesvc child process: started on construction, address parsed from its
    "listening on" line, stopped with SIGTERM (SIGKILL if it does not drain in time)."""

    def __init__(self, binary, workdir, extra_args=()):
        config = os.path.join(workdir, "cachesvc.toml")
        with open(config, "w") as f:
            f.write('lease_timeout_ms = 5000\n'
                    f'[[tenants]]\nname = "a"\ntoken_sha256 = ["{sha256(TOKEN_A)}"]\n'
                    f'[[tenants]]\nname = "b"\ntoken_sha256 = ["{sha256(TOKEN_B)}"]\n'
                    'quota_sessions = 2\n')
        argv = [binary, "--config", config, "--listen", "127.0.0.1:0",
                "--data-dir", os.path.join(workdir, "data"), "--metrics-listen", "127.0.0.1:0",
                "--drain-timeout-s", "5", "--tiers-host-capacity-bytes", "67108864",
                "--tiers-nvme-capacity-bytes", "67108864", *extra_args]
        self.lines = []
        self._listening = threading.Event()
        self.address = None
        # The daemon refuses CACHESVC_* variables that are not config keys, like this test's own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHESVC_")}
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, preexec_fn=_die_with_parent)
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(20) or self.address is None:
            rc = self.stop()
            raise RuntimeError(f"cachesvc printed no 'listening on' line (exit code {rc}):\n"
                               + self.output())

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on (\S+)", line)
            if m and self.address is None:
                self.address = m.group(1)
                self._listening.set()
        self.proc.stdout.close()
        self._listening.set()  # it exited (or closed its output) without listening

    def output(self):
        return "".join(self.lines[-60:])

    def stop(self):
        """SIGTERM and the exit code of the drain; SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def _die_with_parent():
    # PR_SET_PDEATHSIG: if this test is killed (ctest's timeout), the daemon goes too.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


DAEMON = None


def start_module_daemon(prefix):
    """A daemon ($CACHESVC_BIN) in a fresh folder for one test module; stopped at the module's
    end, which fails unless it exits 0 after SIGTERM. The other Python tests use it too."""
    binary = os.environ.get("CACHESVC_BIN")
    if not binary or not os.access(binary, os.X_OK):
        raise RuntimeError(f"CACHESVC_BIN must name the cachesvc binary, got {binary!r}")
    workdir = tempfile.TemporaryDirectory(prefix=prefix)
    unittest.addModuleCleanup(workdir.cleanup)
    daemon = Daemon(binary, workdir.name)

    def stop():
        rc = daemon.stop()
        if rc != 0:
            raise AssertionError(f"cachesvc exited {rc} after SIGTERM:\n{daemon.output()}")

    unittest.addModuleCleanup(stop)
    return daemon


def setUpModule():
    global DAEMON
    DAEMON = start_module_daemon("test_sessions_")


class SessionTestCase(unittest.TestCase):
    """Each test gets clients of tenants a and b, closed after it, and layout registered for
    both."""

    def setUp(self):
        self.a = self.client(TOKEN_A)
        self.b = self.client(TOKEN_B)
        self.fp = self.a.register_layout(LAYOUT)
        self.assertEqual(self.b.register_layout(LAYOUT), self.fp)

    def client(self, token, **kwargs):
        c = cs.Client(DAEMON.address, token=token, **kwargs)
        self.addCleanup(c.close)
        return c

    def open(self, client=None, **kwargs):
        s = (client or self.a).open_session(self.fp, **kwargs)
        self.addCleanup(_close_quietly, s)
        return s


def _close_quietly(session):
    try:
        session.close()
    except cs.CachesvcError:
        pass  # closed by the test already, through another handle


class LayoutTest(SessionTestCase):
    def test_fingerprint_matches_keys_md_and_the_daemon(self):
        with open(os.path.join(SOURCE_DIR, "proto", "KEYS.md")) as f:
            text = f.read()
        vectors = re.findall(r"\[layout \d+\]\n(.*?)\n\n", text, re.S)
        self.assertGreaterEqual(len(vectors), 2)
        for block in vectors:
            v = dict(re.findall(r"^(\w+)\s*=\s*(\S+)$", block, re.M))
            layout = cs.Layout(v["model_id"], int(v["num_layers"]), int(v["num_kv_heads"]),
                               int(v["head_dim"]), v["dtype"], int(v["block_tokens"]),
                               int(v["tp_rank"]), int(v["tp_size"]), v["attention"])
            self.assertEqual(layout.canonical_encoding().hex(), v["encoding"])
            self.assertEqual(f"{layout.fingerprint():016x}", v["fingerprint"])
            self.assertEqual(self.a.register_layout(layout), layout.fingerprint())
        self.assertEqual(LAYOUT.fingerprint(), self.fp)

    def test_open_by_layout_computes_the_fingerprint(self):
        s = self.open(self.a)
        by_layout = self.a.open_session(LAYOUT)
        self.addCleanup(_close_quietly, by_layout)
        self.assertEqual(by_layout.info().layout_fingerprint, s.info().layout_fingerprint)

    def test_bad_layouts_fail_before_any_call(self):
        for bad, field in ((cs.Layout("", 1, 1, 1), "model_id"),
                           (cs.Layout("m", 0, 1, 1), "num_layers"),
                           (cs.Layout("m", 1, 1, 1, dtype="int8"), "dtype"),
                           (cs.Layout("m", 1, 1, 1, tp_rank=1, tp_size=1), "tp_rank"),
                           (cs.Layout("m", 1, 2, 1, attention="mla"), "num_kv_heads")):
            with self.subTest(field=field):
                with self.assertRaisesRegex(cs.InvalidArgument, field):
                    self.a.register_layout(bad)

    def test_a_layout_no_engine_registered_is_not_found(self):
        unknown = cs.Layout("never-registered", 1, 1, 8)
        with self.assertRaisesRegex(cs.NotFound, "no engine of this tenant registered"):
            self.a.open_session(unknown)
        # Registered by tenant a only: unknown to tenant b.
        self.a.register_layout(unknown)
        with self.assertRaises(cs.NotFound):
            self.b.open_session(unknown)


class SessionTest(SessionTestCase):
    def test_open_append_and_info(self):
        s = self.open(client_session_id="agent-1", tokens=tokens(20))
        info = s.info()
        self.assertEqual(info.session_id, s.id)
        self.assertEqual(info.client_session_id, "agent-1")
        self.assertEqual(info.layout_fingerprint, self.fp)
        self.assertEqual(info.state, cs.SessionState.RUNNING)
        self.assertEqual(info.context_tokens, 20)
        self.assertIsNone(info.tokens)  # only with include_tokens
        self.assertEqual(len(info.blocks), 1)
        self.assertRegex(info.blocks[0].key, r"^[0-9a-f]{32}$")
        self.assertEqual(info.parent_session_id, "")
        self.assertIsNone(info.pinned_until_unix_s)

        appended = s.append(tokens(30, 5000))
        self.assertEqual(appended, cs.Appended(context_tokens=50, full_blocks=3))
        full = s.info(include_tokens=True)
        self.assertEqual(full.tokens, tokens(20) + tokens(30, 5000))
        self.assertEqual(len(full.blocks), 3)
        self.assertEqual(full.blocks[0].key, info.blocks[0].key)  # the chain only grows

    def test_tool_call_waits_inside_the_with_and_not_after(self):
        s = self.open(tokens=tokens(8))
        with s.tool_call("web_search", expected_s=4) as call:
            self.assertEqual(call.planned_s, 4.0)
            inside = s.info()
            self.assertEqual(inside.state, cs.SessionState.WAITING_TOOL)
            self.assertEqual(inside.tool_name, "web_search")
            self.assertEqual(inside.expected_s, 4.0)
            with self.assertRaises(cs.FailedPrecondition):
                s.append([1])  # no tokens while the tool runs
            time.sleep(0.05)
        self.assertGreaterEqual(call.elapsed_s, 0.04)
        after = s.info()
        self.assertEqual(after.state, cs.SessionState.IDLE)
        self.assertEqual(after.tool_name, "")
        self.assertIsNone(after.expected_s)
        s.append([7, 8, 9])
        self.assertEqual(s.info().state, cs.SessionState.RUNNING)

    def test_an_exception_inside_the_tool_call_still_ends_it(self):
        class ToolFailed(Exception):
            pass

        s = self.open(tokens=tokens(8))
        with self.assertRaises(ToolFailed):
            with s.tool_call("run_code", expected_s=1):
                raise ToolFailed("the tool crashed")
        self.assertEqual(s.info().state, cs.SessionState.IDLE)
        with s.tool_call("run_code", expected_s=1):  # FailedPrecondition if still waiting
            pass

    def test_a_failed_end_does_not_hide_the_tools_exception(self):
        s = self.open(tokens=tokens(8))
        with self.assertRaises(KeyError) as raised:
            with s.tool_call("web_search", expected_s=1):
                self.a.session(s.id).close()  # someone closes it meanwhile
                raise KeyError("the tool's own error")
        self.assertTrue(any("EndToolCall" in n for n in getattr(raised.exception, "__notes__", [])))
        # Without an exception of its own, the failed EndToolCall is what the block raises.
        t = self.open(tokens=tokens(8))
        with self.assertRaisesRegex(cs.FailedPrecondition, "EndToolCall"):
            with t.tool_call("web_search", expected_s=1):
                self.a.session(t.id).close()

    def test_without_expected_s_the_service_uses_what_it_learned(self):
        s = self.open(tokens=tokens(8))
        tool = f"learned-tool-{time.monotonic_ns()}"
        with s.tool_call(tool) as first:
            self.assertEqual(first.planned_s, 4.0)  # before any call of it has ended
            time.sleep(0.3)
        with s.tool_call(tool) as second:
            # The median of one call: the same duration, up to the ms the two numbers round to.
            self.assertAlmostEqual(second.planned_s, first.elapsed_s, delta=0.0015)
        self.assertGreaterEqual(first.elapsed_s, 0.29)

    def test_begin_and_end_as_two_calls(self):
        s = self.open(tokens=tokens(8))
        self.assertEqual(s.begin_tool_call("sub_agent", expected_s=0.0001), 0.001)  # never 0
        with self.assertRaises(cs.FailedPrecondition):
            s.begin_tool_call("sub_agent", expected_s=1)  # already waiting
        self.assertGreaterEqual(s.end_tool_call(), 0.0)
        with self.assertRaises(cs.FailedPrecondition):
            s.end_tool_call()  # not waiting

    def test_fork_for_a_sub_agent(self):
        parent = self.open(client_session_id="lead", tokens=tokens(40))
        child = parent.fork(client_session_id="lead/sub-1")
        self.addCleanup(_close_quietly, child)
        self.assertNotEqual(child.id, parent.id)
        info = child.info(include_tokens=True)
        self.assertEqual(info.parent_session_id, parent.id)
        self.assertEqual(info.client_session_id, "lead/sub-1")
        self.assertEqual(info.tokens, tokens(40))
        self.assertEqual([b.key for b in info.blocks], [b.key for b in parent.info().blocks])
        child.append(tokens(8, 9000))
        self.assertEqual(child.info().context_tokens, 48)
        self.assertEqual(parent.info().context_tokens, 40)  # copy-on-write
        grandchild = child.fork()
        self.addCleanup(_close_quietly, grandchild)
        self.assertEqual(grandchild.info().parent_session_id, child.id)

    def test_truncate(self):
        s = self.open(tokens=tokens(40))
        self.assertEqual(s.truncate(17), 17)
        self.assertEqual(s.info(include_tokens=True).tokens, tokens(17))
        with self.assertRaises(cs.OutOfRange):
            s.truncate(18)
        with self.assertRaises(cs.InvalidArgument):
            s.truncate(-1)
        self.assertEqual(s.truncate(0), 0)
        self.assertEqual(s.info(include_tokens=True).tokens, [])  # asked for: a list, if empty

    def test_pin_and_unpin(self):
        s = self.open(tokens=tokens(8))
        before = time.time()
        s.pin(30)
        until = s.info().pinned_until_unix_s
        self.assertIsNotNone(until)
        self.assertAlmostEqual(until, before + 30, delta=5)
        s.pin(0)
        self.assertIsNone(s.info().pinned_until_unix_s)
        for bad in (-1, float("nan"), float("inf"), "30"):
            with self.subTest(seconds=bad), self.assertRaises(cs.InvalidArgument):
                s.pin(bad)
        with self.assertRaisesRegex(cs.InvalidArgument, "duration_ms"):
            s.pin(2 * 86400)  # the daemon's limit: a day

    def test_close_and_the_context_manager(self):
        with self.a.open_session(self.fp, tokens=tokens(8)) as s:
            s.append([1, 2, 3])
        info = s.info()
        self.assertEqual(info.state, cs.SessionState.CLOSED)
        self.assertEqual(info.context_tokens, 11)  # still readable
        with self.assertRaises(cs.FailedPrecondition):
            s.append([4])
        s.close()  # a second close through the same handle does nothing
        with self.assertRaises(cs.FailedPrecondition):
            self.a.session(s.id).close()  # through another handle: already closed

    def test_the_context_manager_closes_on_an_exception_too(self):
        with self.assertRaises(ZeroDivisionError):
            with self.a.open_session(self.fp) as s:
                1 / 0
        self.assertEqual(s.info().state, cs.SessionState.CLOSED)


class ErrorTest(SessionTestCase):
    def test_a_bad_token_is_unauthenticated(self):
        s = self.open(tokens=tokens(8))
        wrong = self.client("not-a-token-of-this-daemon")
        with self.assertRaisesRegex(cs.Unauthenticated, "unknown bearer token") as raised:
            wrong.open_session(self.fp)
        self.assertEqual(raised.exception.method, "OpenSession")
        self.assertEqual(raised.exception.message, "unknown bearer token")
        with self.assertRaises(cs.Unauthenticated):
            wrong.session(s.id).info()
        with self.assertRaisesRegex(cs.Unauthenticated, "missing 'authorization'"):
            self.client(None).session(s.id).info()
        with self.assertRaisesRegex(cs.InvalidArgument, "printable ASCII"):
            cs.Client(DAEMON.address, token="two words")

    def test_another_tenants_session_is_not_found(self):
        mine = self.open(tokens=tokens(8))
        theirs = self.b.session(mine.id)
        for call in (theirs.info, lambda: theirs.append([1]), lambda: theirs.pin(5),
                     theirs.fork, theirs.close, lambda: theirs.begin_tool_call("x", 1)):
            with self.assertRaises(cs.NotFound):
                call()
        info = mine.info()
        self.assertEqual((info.state, info.context_tokens, info.pinned_until_unix_s),
                         (cs.SessionState.RUNNING, 8, None))
        with self.assertRaises(cs.NotFound):
            self.a.session("no-such-session").info()

    def test_bad_arguments(self):
        s = self.open(tokens=tokens(8))
        for bad in ([-1], [2**32], ["7"], [1.5], "abc", 5, None):
            with self.subTest(tokens=bad), self.assertRaisesRegex(cs.InvalidArgument, "tokens"):
                s.append(bad)
        with self.assertRaisesRegex(cs.InvalidArgument, "tokens"):
            s.append([])  # the daemon's check: nothing to append
        for name in ("", "x" * 257, None):
            with self.subTest(tool_name=name), self.assertRaises(cs.InvalidArgument):
                s.tool_call(name)
        for expected in (0, -1, float("nan")):
            with self.subTest(expected_s=expected), self.assertRaises(cs.InvalidArgument):
                s.tool_call("web_search", expected_s=expected)
        with self.assertRaisesRegex(cs.InvalidArgument, "expected_ms"):
            with s.tool_call("web_search", expected_s=2 * 86400):  # the daemon's limit: a day
                self.fail("the tool call must not begin")
        self.assertEqual(s.info().state, cs.SessionState.RUNNING)
        for fp in (0, -5, 2**64, "0x1234", None):
            with self.subTest(layout=fp), self.assertRaises(cs.InvalidArgument):
                self.a.open_session(fp)
        with self.assertRaises(cs.InvalidArgument):
            self.a.open_session(self.fp, client_session_id="x" * 257)
        with self.assertRaises(cs.InvalidArgument):
            self.a.session("")
        with self.assertRaises(cs.InvalidArgument):
            cs.Client(DAEMON.address, tls_root="/nonexistent/ca.pem")
        self.assertTrue(issubclass(cs.InvalidArgument, ValueError))

    def test_the_session_quota_is_resource_exhausted(self):
        held = [self.open(self.b) for _ in range(2)]
        with self.assertRaisesRegex(cs.ResourceExhausted, "quota"):
            self.b.open_session(self.fp)
        held[0].close()
        self.open(self.b)  # a closed session no longer counts

    def test_an_unreachable_daemon_is_unavailable(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # nothing listens there once the socket closes
        gone = cs.Client(f"127.0.0.1:{port}", token=TOKEN_A, timeout_s=5)
        self.addCleanup(gone.close)
        with self.assertRaises(cs.Unavailable):
            gone.open_session(self.fp)


class TlsTest(unittest.TestCase):
    """A second daemon serving TLS with a certificate made here: a client trusting it (a PEM
    path or PEM bytes) gets in, a plaintext one does not."""

    def test_tls_root(self):
        workdir = tempfile.TemporaryDirectory(prefix="test_sessions_tls_")
        self.addCleanup(workdir.cleanup)
        cert, key = (os.path.join(workdir.name, n) for n in ("cert.pem", "key.pem"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert], check=True, capture_output=True)
        daemon = Daemon(os.environ["CACHESVC_BIN"], workdir.name,
                        ["--tls-cert-path", cert, "--tls-key-path", key])
        self.addCleanup(daemon.stop)
        with open(cert, "rb") as f:
            pem = f.read()
        for root in (cert, pem):
            with cs.Client(daemon.address, token=TOKEN_A, tls_root=root) as client:
                fp = client.register_layout(LAYOUT)
                with client.open_session(fp, tokens=tokens(16)) as s:
                    self.assertEqual(s.info().context_tokens, 16)
        async def secure_async():
            async with cs.AsyncClient(daemon.address, token=TOKEN_A, tls_root=pem) as client:
                return await client.register_layout(LAYOUT)
        self.assertEqual(asyncio.run(secure_async()), LAYOUT.fingerprint())
        with cs.Client(daemon.address, token=TOKEN_A, timeout_s=5) as plain:
            with self.assertRaises(cs.Unavailable):
                plain.register_layout(LAYOUT)
        self.assertEqual(daemon.stop(), 0, daemon.output())


class AsyncTest(SessionTestCase):
    def test_the_async_api(self):
        asyncio.run(self._async_api())

    async def _async_api(self):
        async with cs.AsyncClient(DAEMON.address, token=TOKEN_A) as a, \
                cs.AsyncClient(DAEMON.address, token=TOKEN_B) as b:
            self.assertEqual(await a.register_layout(LAYOUT), self.fp)
            async with await a.open_session(self.fp, client_session_id="async",
                                            tokens=tokens(20)) as s:
                self.assertEqual(await s.append(tokens(12, 3000)),
                                 cs.Appended(context_tokens=32, full_blocks=2))
                async with s.tool_call("web_search", expected_s=4) as call:
                    inside = await s.info()
                    self.assertEqual((inside.state, inside.tool_name, inside.expected_s),
                                     (cs.SessionState.WAITING_TOOL, "web_search", 4.0))
                    await asyncio.sleep(0.02)
                self.assertEqual(call.planned_s, 4.0)
                self.assertGreaterEqual(call.elapsed_s, 0.01)
                self.assertEqual((await s.info()).state, cs.SessionState.IDLE)

                with self.assertRaises(RuntimeError):
                    async with s.tool_call("run_code", expected_s=1):
                        raise RuntimeError("tool failed")
                self.assertEqual((await s.info()).state, cs.SessionState.IDLE)

                # Two sub-agents at once, each in its own tool call.
                subs = await asyncio.gather(s.fork("sub-1"), s.fork("sub-2"))
                for sub in subs:
                    self.assertEqual((await sub.info()).parent_session_id, s.id)

                async def work(sub):
                    async with sub:
                        async with sub.tool_call("run_code", expected_s=0.5):
                            await asyncio.sleep(0.05)
                        await sub.append([1, 2, 3])
                await asyncio.gather(*(work(sub) for sub in subs))
                for sub in subs:
                    info = await sub.info()
                    self.assertEqual((info.state, info.context_tokens),
                                     (cs.SessionState.CLOSED, 35))

                await s.pin(10)
                self.assertIsNotNone((await s.info()).pinned_until_unix_s)
                self.assertEqual(await s.truncate(16), 16)

                with self.assertRaises(cs.NotFound):
                    await b.session(s.id).info()
                with self.assertRaises(cs.InvalidArgument):
                    await s.append([-1])
            self.assertEqual((await s.info()).state, cs.SessionState.CLOSED)
            with self.assertRaises(cs.FailedPrecondition):
                await s.append([1])

        async with cs.AsyncClient(DAEMON.address, token="wrong-token") as wrong:
            with self.assertRaisesRegex(cs.Unauthenticated, "unknown bearer token"):
                await wrong.open_session(self.fp)


class ExampleTest(SessionTestCase):
    def run_example(self, *extra):
        example = os.path.join(SOURCE_DIR, "client", "examples", "agent_loop.py")
        return subprocess.run(
            [sys.executable, example, "--address", DAEMON.address, "--tool-seconds", "0.05",
             *extra], capture_output=True, text=True, timeout=60, env=dict(os.environ))

    def check_run(self, result, token):
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        out = result.stdout
        self.assertRegex(out, r"during web_search: session \S+ state=WAITING_TOOL")
        self.assertRegex(out, r"tool web_search: planned 0\.100 s, took 0\.\d+ s")
        self.assertRegex(out, r"waiting for the user: session \S+ state=RUNNING")
        opened = re.search(r"opened session (\S+)", out).group(1)
        sub = re.search(r"forked sub-agent (\S+)", out).group(1)
        self.assertIn(f"closed session {opened}", out)
        client = self.client(token)
        for session_id in (opened, sub):
            self.assertEqual(client.session(session_id).info().state, cs.SessionState.CLOSED)
        self.assertEqual(client.session(sub).info().parent_session_id, opened)

    def test_the_example_agent_loop_runs(self):
        self.check_run(self.run_example("--token", TOKEN_A), TOKEN_A)

    def test_the_example_agent_loop_runs_async(self):
        self.check_run(self.run_example("--async", "--token", TOKEN_B), TOKEN_B)

    def test_the_example_reports_a_bad_token(self):
        result = self.run_example("--token", "wrong-token")
        self.assertEqual(result.returncode, 1)
        self.assertIn("UNAUTHENTICATED: unknown bearer token", result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
