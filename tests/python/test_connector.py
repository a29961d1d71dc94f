#!/usr/bin/python3
"""The Python engine connector (client/python/cachesvc) against a real daemon.

Starts $CACHESVC_BIN (the harness of test_sessions.py) and checks, on torch CPU tensors:
  - save and load round trips for every paged shape register_kv_caches accepts (K/V pairs in
    NHD and HND, vLLM's [2, pages, ...] per layer, shared K|V pages, MLA latents, pages with
    padded strides), across fp16, bf16 and fp32, into pages in another order, bit for bit;
  - lookup_prefix, partial blocks, skipped blocks, the TQ3 codec (close, not equal);
  - bad input: wrong dtype, shape, layer count, strides, tokens, page ids, layout, codec, order
    of calls: ValueError (cachesvc.InvalidArgument) or FailedPrecondition with a message that
    names the problem; a bad token: Unauthenticated;
  - a daemon that is unreachable, dies or freezes mid-load: an exception within the timeouts,
    pages untouched, and the GIL released while a call blocks;
  - loads through the same-host data plane (a daemon with a local socket), bit for bit;
  - CUDA pages when torch has CUDA (skipped otherwise).
Needs PYTHONPATH with <build>/client/python and client/python (ctest: test connector_python).
"""

import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

try:
    import torch
except ImportError:
    print("SKIP: torch is not importable (Debian: apt-get install python3-torch)")
    sys.exit(0)

import cachesvc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sessions import TOKEN_A, Daemon  # noqa: E402

DAEMON = None
_WORKDIRS = []


def setUpModule():
    global DAEMON
    DAEMON = start_daemon()
    unittest.addModuleCleanup(_stop, DAEMON)


def start_daemon(extra_args=()):
    binary = os.environ.get("CACHESVC_BIN")
    if not binary or not os.access(binary, os.X_OK):
        raise RuntimeError(f"CACHESVC_BIN must name the cachesvc binary, got {binary!r}")
    workdir = tempfile.TemporaryDirectory(prefix="test_connector_")
    _WORKDIRS.append(workdir)
    unittest.addModuleCleanup(workdir.cleanup)
    args = [a.replace("{workdir}", workdir.name) for a in extra_args]
    return Daemon(binary, workdir.name, args)


def _stop(daemon):
    if daemon.proc.poll() is None:
        os.kill(daemon.proc.pid, signal.SIGCONT)
        rc = daemon.stop()
        if rc != 0:
            raise AssertionError(f"cachesvc exited {rc}:\n{daemon.output()}")


_TOKEN_BASE = [1_000_000]


def fresh_tokens(n):
    """Token ids no other test used, so each test's blocks are its own."""
    first = _TOKEN_BASE[0]
    _TOKEN_BASE[0] += n + 1000
    return list(range(first, first + n))


def layout(**overrides):
    fields = dict(model_id="py-connector-test", num_layers=3, num_kv_heads=2, head_dim=64,
                  dtype="fp16", block_tokens=16)
    fields.update(overrides)
    return cachesvc.Layout(**fields)


TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def make_cache(shape_kind, lay, pages, fill=None, seed=0):
    """A paged cache of `shape_kind` for `lay`: (kv_caches argument, kv_layout, per-layer
    function page -> [T, H, D] K and V views for comparing)."""
    g = torch.Generator().manual_seed(seed)
    dt = TORCH_DTYPES[lay.dtype]
    T, H, D = lay.block_tokens, lay.num_kv_heads, lay.head_dim

    def new(*shape):
        if fill is not None:
            return torch.full(shape, fill, dtype=dt)
        return torch.randn(*shape, generator=g).to(dt)

    layers, views = [], []
    for _ in range(lay.num_layers):
        if shape_kind == "NHD":
            k, v = new(pages, T, H, D), new(pages, T, H, D)
            layers.append((k, v))
            views.append((lambda k, v: lambda p: (k[p], v[p]))(k, v))
        elif shape_kind == "HND":
            k, v = new(pages, H, T, D), new(pages, H, T, D)
            layers.append((k, v))
            views.append((lambda k, v: lambda p: (k[p].transpose(0, 1), v[p].transpose(0, 1)))(
                k, v))
        elif shape_kind == "vllm":  # [2, pages, T, H, D] per layer
            kv = new(2, pages, T, H, D)
            layers.append(kv)
            views.append((lambda kv: lambda p: (kv[0, p], kv[1, p]))(kv))
        elif shape_kind == "shared_NHD":  # [pages, 2, T, H, D]
            kv = new(pages, 2, T, H, D)
            layers.append(kv)
            views.append((lambda kv: lambda p: (kv[p, 0], kv[p, 1]))(kv))
        elif shape_kind == "padded":  # token stride padded by 8 values, pages padded too
            big_k, big_v = new(pages, T + 1, H, D + 8), new(pages, T + 1, H, D + 8)
            k, v = big_k[:, :T, :, :D], big_v[:, :T, :, :D]
            layers.append((k, v))
            views.append((lambda k, v: lambda p: (k[p], v[p]))(k, v))
        elif shape_kind == "mla":  # [pages, T, D]
            c = new(pages, T, D)
            layers.append(c)
            views.append((lambda c: lambda p: (c[p], None))(c))
        else:
            raise ValueError(shape_kind)
    kv_layout = {"HND": "HND", "shared_NHD": "shared_NHD"}.get(shape_kind, "NHD")
    return layers, kv_layout, views


def same_bits(a, b):
    return torch.equal(a.contiguous().view(torch.uint8 if a.element_size() == 1 else
                                           {2: torch.int16, 4: torch.int32}[a.element_size()]),
                       b.contiguous().view(torch.uint8 if b.element_size() == 1 else
                                           {2: torch.int16, 4: torch.int32}[b.element_size()]))


class ConnectorTestCase(unittest.TestCase):
    def connect(self, lay, daemon=None, **kwargs):
        kwargs.setdefault("rpc_timeout_s", 3.0)
        c = cachesvc.Connector((daemon or DAEMON).address, lay, token=TOKEN_A, **kwargs)
        self.addCleanup(c.close)
        return c

    def save_all(self, conn, tokens, pages, first_block=0, session_id=""):
        conn.begin_save(tokens, pages, first_block=first_block, session_id=session_id)
        for l in range(conn.num_layers):
            conn.save_layer(l)
        return conn.wait_for_save()


class RoundTrips(ConnectorTestCase):

    def test_every_paged_shape_round_trips_bit_for_bit(self):
        cases = [("NHD", "fp16", 2), ("HND", "bf16", 2), ("vllm", "fp32", 2),
                 ("shared_NHD", "fp16", 4), ("padded", "fp16", 2), ("NHD", "fp32", 1),
                 ("mla", "fp16", 1)]
        for shape_kind, dtype, heads in cases:
            with self.subTest(shape=shape_kind, dtype=dtype, heads=heads):
                mla = shape_kind == "mla"
                lay = layout(model_id=f"py-rt-{shape_kind}-{dtype}-{heads}", dtype=dtype,
                             num_kv_heads=heads, attention="mla" if mla else "mha_gqa",
                             head_dim=128 if mla else 64)
                blocks, pages = 5, 8
                tokens = fresh_tokens(blocks * lay.block_tokens + 7)  # + a partial block
                src, kv_layout, src_view = make_cache(shape_kind, lay, pages, seed=len(tokens))
                saver = self.connect(lay)
                saver.register_kv_caches(src, kv_layout=kv_layout)
                src_pages = [6, 1, 7, 0, 3]
                self.assertEqual(saver.lookup_prefix(tokens), 0)
                saved = self.save_all(saver, tokens, src_pages)
                self.assertEqual((saved.blocks_committed, saved.blocks_skipped), (blocks, 0))
                self.assertEqual(saver.lookup_prefix(tokens), blocks * lay.block_tokens)

                dst, _, dst_view = make_cache(shape_kind, lay, pages, fill=float("nan"))
                loader = self.connect(lay)
                loader.register_kv_caches(dst, kv_layout=kv_layout)
                dst_pages = [2, 4, 0, 5, 1]
                got = loader.load(tokens[: blocks * lay.block_tokens], dst_pages)
                self.assertEqual(got, cachesvc.LoadResult(blocks, blocks * lay.block_tokens, ""))
                for i in range(blocks):
                    for l in range(lay.num_layers):
                        sk, sv = src_view[l](src_pages[i])
                        dk, dv = dst_view[l](dst_pages[i])
                        self.assertTrue(same_bits(sk, dk), f"block {i} layer {l} K")
                        if sv is not None:
                            self.assertTrue(same_bits(sv, dv), f"block {i} layer {l} V")
                for p in set(range(pages)) - set(dst_pages):  # other pages untouched
                    for l in range(lay.num_layers):
                        self.assertTrue(torch.isnan(dst_view[l](p)[0]).all())

    def test_saving_again_skips_and_first_block_skips_reading(self):
        lay = layout(model_id="py-skip")
        tokens = fresh_tokens(4 * 16)
        src, _, _ = make_cache("NHD", lay, 4, seed=3)
        conn = self.connect(lay)
        conn.register_kv_caches(src)
        self.assertEqual(self.save_all(conn, tokens[:32], [0, 1]).blocks_committed, 2)
        again = self.save_all(conn, tokens, [0, 1, 2, 3], first_block=1)
        self.assertEqual((again.blocks_committed, again.blocks_skipped), (2, 1))
        self.assertEqual(conn.lookup_prefix(tokens), 64)
        self.assertEqual(len(conn.block_keys(tokens)), 4)
        self.assertEqual(conn.block_keys(tokens)[:2], conn.block_keys(tokens[:40]))
        # Tokens as a tensor or an array work the same as a list.
        self.assertEqual(conn.lookup_prefix(torch.tensor(tokens)), 64)

    def test_tq3_is_close_but_lossy(self):
        lay = layout(model_id="py-tq3", head_dim=128)
        tokens = fresh_tokens(3 * 16)
        src, _, src_view = make_cache("NHD", lay, 3, seed=11)
        saver = self.connect(lay, codec="tq3")
        self.assertEqual(saver.codec, "tq3")
        saver.register_kv_caches(src)
        self.assertEqual(self.save_all(saver, tokens, [0, 1, 2]).blocks_committed, 3)
        dst, _, dst_view = make_cache("NHD", lay, 3, fill=float("nan"))
        loader = self.connect(lay)
        loader.register_kv_caches(dst)
        self.assertEqual(loader.load(tokens, [2, 1, 0]).blocks, 3)
        for i, j in ((0, 2), (1, 1), (2, 0)):
            for l in range(lay.num_layers):
                a, b = src_view[l](i)[0].float(), dst_view[l](j)[0].float()
                rel = ((a - b).norm() / a.norm()).item()
                self.assertGreater(rel, 1e-4)   # the codec ran
                self.assertLess(rel, 0.25)      # TQ3: ~0.18 relative L2 error on Gaussian data

    def test_a_corrupted_block_ends_the_load_and_leaves_its_pages(self):
        lay = layout(model_id="py-corrupt")
        tokens = fresh_tokens(4 * 16)
        src, _, _ = make_cache("NHD", lay, 4, seed=5)
        saver = self.connect(lay)
        saver.register_kv_caches(src)
        self.save_all(saver, tokens, [0, 1, 2, 3])
        dst, _, dst_view = make_cache("NHD", lay, 4, fill=float("nan"))
        loader = self.connect(lay)
        loader.register_kv_caches(dst)
        loader.TEST_corrupt_on_read(2)
        got = loader.load(tokens, [0, 1, 2, 3])
        self.assertEqual((got.blocks, got.tokens), (2, 32))
        self.assertNotEqual(got.miss_reason, "")
        for p in (2, 3):
            for l in range(lay.num_layers):
                self.assertTrue(torch.isnan(dst_view[l](p)[0]).all())
                self.assertTrue(torch.isnan(dst_view[l](p)[1]).all())
        loader.TEST_corrupt_on_read(-1)
        self.assertEqual(loader.load(tokens, [0, 1, 2, 3]).blocks, 4)

    def test_loads_from_several_threads_at_once(self):
        lay = layout(model_id="py-threads")
        tokens = fresh_tokens(4 * 16)
        src, _, src_view = make_cache("NHD", lay, 4, seed=21)
        saver = self.connect(lay)
        saver.register_kv_caches(src)
        self.assertEqual(self.save_all(saver, tokens, [0, 1, 2, 3]).blocks_committed, 4)
        dst, _, dst_view = make_cache("NHD", lay, 16, fill=float("nan"))
        loader = self.connect(lay)
        loader.register_kv_caches(dst)
        results, errors = {}, []

        def load(t):  # thread t loads into pages [4t, 4t + 4), reversed, five times
            try:
                pages = [4 * t + 3, 4 * t + 2, 4 * t + 1, 4 * t]
                results[t] = [loader.load(tokens, pages).blocks for _ in range(5)]
                results[t].append(loader.lookup_prefix(tokens))
            except Exception as e:  # reported below, with the thread's number
                errors.append((t, e))

        threads = [threading.Thread(target=load, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(errors, [])
        self.assertEqual(results, {t: [4] * 5 + [64] for t in range(4)})
        for t in range(4):
            for i in range(4):
                for l in range(lay.num_layers):
                    self.assertTrue(same_bits(src_view[l](i)[0], dst_view[l](4 * t + 3 - i)[0]))
                    self.assertTrue(same_bits(src_view[l](i)[1], dst_view[l](4 * t + 3 - i)[1]))

    def test_a_sessions_layout_is_accepted_and_fingerprints_agree(self):
        import cachesvc_sessions
        lay = cachesvc_sessions.Layout(model_id="py-fp", num_layers=3, num_kv_heads=2,
                                       head_dim=64, dtype="bf16", block_tokens=32)
        conn = self.connect(lay)
        self.assertEqual(conn.fingerprint, lay.fingerprint())  # proto/KEYS.md, both sides
        self.assertEqual(conn.block_tokens, 32)
        self.assertEqual(conn.raw_block_bytes, 3 * 2 * 32 * 2 * 64 * 2)

    @unittest.skipUnless(torch.cuda.is_available(), "torch has no CUDA device here")
    def test_cuda_pages_round_trip(self):  # pragma: no cover - needs a GPU
        lay = layout(model_id="py-cuda")
        tokens = fresh_tokens(2 * 16)
        src, _, _ = make_cache("NHD", lay, 2, seed=9)
        src = [(k.cuda(), v.cuda()) for k, v in src]
        saver = self.connect(lay)
        saver.register_kv_caches(src)
        self.assertEqual(self.save_all(saver, tokens, [0, 1]).blocks_committed, 2)
        dst = [(torch.zeros_like(k), torch.zeros_like(v)) for k, v in src]
        loader = self.connect(lay)
        loader.register_kv_caches(dst)
        self.assertEqual(loader.load(tokens, [1, 0]).blocks, 2)
        for (sk, sv), (dk, dv) in zip(src, dst):
            self.assertTrue(torch.equal(sk[0], dk[1]) and torch.equal(sv[1], dv[0]))


class SameHostPath(ConnectorTestCase):
    """A daemon with a local socket (docs/local.md): the connector loads by copying out of the
    mapped host tier, with the same bits and no LeaseBlocks or LookupPrefix call."""

    def test_loads_through_the_local_socket_bit_for_bit(self):
        daemon = start_daemon(["--local-socket", "{workdir}/local.sock"])
        self.addCleanup(_stop, daemon)
        lay = layout(model_id="py-local")
        tokens = fresh_tokens(3 * 16)
        src, _, src_view = make_cache("NHD", lay, 3, seed=21)
        saver = self.connect(lay, daemon)
        saver.register_kv_caches(src)
        self.assertEqual(self.save_all(saver, tokens, [0, 1, 2]).blocks_committed, 3)
        dst, _, dst_view = make_cache("NHD", lay, 3, fill=float("nan"))
        loader = self.connect(lay, daemon)
        loader.register_kv_caches(dst)
        self.assertEqual(loader.lookup_prefix(tokens), 48)
        self.assertEqual(loader.load(tokens, [2, 0, 1]).blocks, 3)
        for i, j in ((0, 2), (1, 0), (2, 1)):
            for l in range(lay.num_layers):
                self.assertTrue(same_bits(src_view[l](i)[0], dst_view[l](j)[0]))
                self.assertTrue(same_bits(src_view[l](i)[1], dst_view[l](j)[1]))
        metrics = _metrics(daemon)
        self.assertIn('cachesvc_rpc_requests_total{code="OK",method="local.Lease"} 1', metrics)
        self.assertNotIn('method="LeaseBlocks"', metrics)
        self.assertNotIn('method="LookupPrefix"', metrics)


def _metrics(daemon):
    address = None
    for line in daemon.lines:
        m = re.search(r"metrics (\S+)\)", line)
        if m:
            address = m.group(1)
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        return r.read().decode()


class BadInput(ConnectorTestCase):

    def setUp(self):
        self.lay = layout(model_id="py-bad")
        self.conn = self.connect(self.lay)

    def assertInvalid(self, fn, *words):
        with self.assertRaises(ValueError) as ctx:
            fn()
        self.assertIsInstance(ctx.exception, cachesvc.InvalidArgument)
        for w in words:
            self.assertIn(w, str(ctx.exception))
        return ctx.exception

    def test_wrong_dtype_shape_layers_strides(self):
        good, _, _ = make_cache("NHD", self.lay, 4)
        f32 = [(k.float(), v.float()) for k, v in good]
        self.assertInvalid(lambda: self.conn.register_kv_caches(f32), "layer 0 K", "float32",
                           "fp16")
        heads = [(k[:, :, :1], v[:, :, :1]) for k, v in good]
        self.assertInvalid(lambda: self.conn.register_kv_caches(heads), "shape", "[*, 16, 2, 64]")
        self.assertInvalid(lambda: self.conn.register_kv_caches(good[:2]), "2 layers",
                           "layout 3")
        strided = [(k.transpose(2, 3), v.transpose(2, 3)) for k, v in good]  # [P,T,D,H]
        self.assertInvalid(lambda: self.conn.register_kv_caches(strided), "shape")
        every_other = torch.zeros(4, 16, 2, 128, dtype=torch.float16)[..., ::2]  # [4,16,2,64]
        dim_strided = [(every_other, every_other)] * 3
        self.assertInvalid(lambda: self.conn.register_kv_caches(dim_strided), "contiguous")
        uneven = [good[0], good[1], (good[2][0][:3], good[2][1][:3])]
        self.assertInvalid(lambda: self.conn.register_kv_caches(uneven), "3 pages")
        self.assertInvalid(lambda: self.conn.register_kv_caches([good[0][0]] * 3), "[2, pages")
        self.assertInvalid(lambda: self.conn.register_kv_caches(good, kv_layout="NDH"),
                           "kv_layout")
        self.assertInvalid(lambda: self.conn.register_kv_caches([(k, k) for k, _ in good]),
                           "share memory")
        overlapping = [tuple(t.as_strided(t.shape, (16, *t.stride()[1:])) for t in kv)
                       for kv in good]  # page b starts 32 bytes after page b-1
        self.assertInvalid(lambda: self.conn.register_kv_caches(overlapping), "overlap")

    def test_calls_before_a_paged_cache_and_out_of_order(self):
        tokens = fresh_tokens(32)
        with self.assertRaises(cachesvc.FailedPrecondition) as ctx:
            self.conn.load(tokens, [0, 1])
        self.assertIn("paged", str(ctx.exception).lower())
        good, _, _ = make_cache("NHD", self.lay, 4)
        self.conn.register_kv_caches(good)
        self.assertInvalid(lambda: self.conn.load(tokens, [0, 9]), "9")           # page range
        self.assertInvalid(lambda: self.conn.load(tokens, [1, 1]))                 # page twice
        self.assertInvalid(lambda: self.conn.load(tokens, [0, 1, 2]))              # > blocks
        self.assertInvalid(lambda: self.conn.save_layer(3), "3")
        self.assertInvalid(lambda: self.conn.save_layer(-1), "layer")
        self.conn.begin_save(tokens, [0, 1])
        self.conn.save_layer(0)
        with self.assertRaises(cachesvc.FailedPrecondition):
            self.conn.save_layer(0)  # already copied in this step
        with self.assertRaises(cachesvc.FailedPrecondition):
            self.conn.begin_save(tokens, [2, 3])  # after SaveLayer in this step
        with self.assertRaises(cachesvc.FailedPrecondition):
            self.conn.wait_for_save()  # the open step is dropped
        self.conn.close()
        with self.assertRaises(cachesvc.FailedPrecondition) as ctx:
            self.conn.lookup_prefix(tokens)
        self.assertIn("closed", str(ctx.exception))

    def test_bad_tokens_and_page_ids(self):
        good, _, _ = make_cache("NHD", self.lay, 4)
        self.conn.register_kv_caches(good)
        self.assertInvalid(lambda: self.conn.lookup_prefix([1, -1]), "tokens[1] = -1")
        self.assertInvalid(lambda: self.conn.lookup_prefix([2 ** 32]), "out of range")
        self.assertInvalid(lambda: self.conn.lookup_prefix([1.5]), "not an int")
        self.assertInvalid(lambda: self.conn.lookup_prefix("abc"), "sequence of ints")
        self.assertInvalid(lambda: self.conn.lookup_prefix(torch.ones(2, 2, dtype=torch.long)),
                           "1-d integer")
        self.assertInvalid(lambda: self.conn.load(fresh_tokens(16), [-3]), "page_ids[0]")
        self.assertInvalid(lambda: self.conn.begin_save(fresh_tokens(16), [0], first_block=-1),
                           "first_block")

    def test_bad_layout_codec_and_token(self):
        self.assertInvalid(lambda: self.connect(layout(num_layers=0)), "num_layers")
        self.assertInvalid(lambda: self.connect(layout(dtype="int8")), "int8")
        self.assertInvalid(lambda: self.connect(self.lay, codec="tq5"), "tq5")
        self.assertInvalid(lambda: self.connect(layout(dtype="fp32"), codec="tq3"))
        self.assertInvalid(lambda: self.connect(self.lay, key_mode="mine"), "key_mode")
        with self.assertRaises(cachesvc.Unauthenticated):
            cachesvc.Connector(DAEMON.address, self.lay, token="not-a-token")


class DaemonGone(ConnectorTestCase):

    def test_unreachable_daemon_is_unavailable_quickly(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        start = time.monotonic()
        with self.assertRaises((cachesvc.Unavailable, cachesvc.DeadlineExceeded)):
            cachesvc.Connector(f"127.0.0.1:{port}", layout(), token=TOKEN_A, rpc_timeout_s=2)
        self.assertLess(time.monotonic() - start, 10)

    def test_a_daemon_that_dies_or_freezes_mid_load_is_an_error_not_a_hang(self):
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            with self.subTest(signal=sig.name):
                daemon = start_daemon()
                self.addCleanup(_stop_quietly, daemon)
                lay = layout(model_id="py-gone")
                tokens = fresh_tokens(6 * 16)
                src, _, _ = make_cache("NHD", lay, 6, seed=1)
                saver = self.connect(lay, daemon)
                saver.register_kv_caches(src)
                self.assertEqual(self.save_all(saver, tokens, list(range(6))).blocks_committed, 6)
                dst, _, dst_view = make_cache("NHD", lay, 6, fill=float("nan"))
                loader = self.connect(lay, daemon)
                loader.register_kv_caches(dst)
                loader.TEST_set_before_read_hook(lambda: _signal_and_wait(daemon.proc, sig))
                # The GIL is free while the call blocks: a Python thread keeps counting.
                ticks = [0]
                stop = threading.Event()

                def tick():
                    while not stop.is_set():
                        ticks[0] += 1
                        time.sleep(0.01)

                ticker = threading.Thread(target=tick)
                ticker.start()
                start = time.monotonic()
                try:
                    with self.assertRaises((cachesvc.Unavailable, cachesvc.DeadlineExceeded)):
                        loader.load(tokens, list(range(6)))
                finally:
                    took = time.monotonic() - start
                    stop.set()
                    ticker.join()
                self.assertLess(took, 15)  # UCX op timeout 5 s + the lease release RPC 3 s
                self.assertGreater(ticks[0], took * 5)  # ~100/s when the GIL is released, ~0 if not
                for p in range(6):
                    for l in range(lay.num_layers):
                        self.assertTrue(torch.isnan(dst_view[l](p)[0]).all())
                loader.TEST_set_before_read_hook(None)
                start = time.monotonic()
                with self.assertRaises(cachesvc.ConnectorError):
                    loader.lookup_prefix(tokens)
                self.assertLess(time.monotonic() - start, 15)
                if sig == signal.SIGSTOP:  # it runs again: the connector reconnects
                    os.kill(daemon.proc.pid, signal.SIGCONT)
                    self.assertEqual(loader.load(tokens, list(range(6))).blocks, 6)


def _signal_and_wait(proc, sig):
    """Sends `sig` and returns once it took effect: every thread stopped (SIGSTOP) or the
    process gone (SIGKILL). kill() only queues the signal; without the wait, a daemon thread that
    is running on another core could still serve the read (a race seen under ctest -j4)."""
    os.kill(proc.pid, sig)
    if sig == signal.SIGKILL:
        proc.wait(10)
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            try:
                with open(f"/proc/{proc.pid}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that just exited
                pass
        if states and all(st in "tT" for st in states):
            return
        time.sleep(0.001)
    raise AssertionError(f"cachesvc (pid {proc.pid}) did not stop within 10 s")


def _stop_quietly(daemon):
    if daemon.proc.poll() is None:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    daemon.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
