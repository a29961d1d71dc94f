#!/usr/bin/python3
"""cachesvc.vllm_adapter's logic with fake vLLM objects, over real connectors and a real daemon.

vLLM is not installable here, so vLLM's side is faked: requests, KVCacheBlocks, SchedulerOutput
and the forward loop are SimpleNamespaces shaped like vLLM v1's (late 2025); the adapter's
connectors are real cachesvc.Connectors to a daemon this test starts. Checks: what the scheduler
side claims (never the whole prompt, nothing with a local prefix hit, nothing when the daemon
fails), the metadata it builds (loads at the first step, saves of newly full blocks, including
blocks filled by decoding), that the worker side saves layer by layer and loads bit-exact pages,
and that a block that fails to load is reported by get_block_ids_with_load_errors.
"""

import os
import sys
import unittest
from types import SimpleNamespace

try:
    import torch
except ImportError:
    print("SKIP: torch is not importable (Debian: apt-get install python3-torch)")
    sys.exit(0)

import cachesvc
from cachesvc import vllm_adapter
from cachesvc.vllm_adapter import CachesvcConnectorV1, KVConnectorRole

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sessions import TOKEN_A, start_module_daemon  # noqa: E402

LAYERS, B, PAGES = 3, 16, 32
NAMES = [f"model.layers.{i}.self_attn.attn" for i in range(LAYERS)]
LAYOUT = cachesvc.Layout(model_id="py-vllm-adapter", num_layers=LAYERS, num_kv_heads=2,
                         head_dim=64, dtype="fp16", block_tokens=B)
DAEMON = None


def setUpModule():
    global DAEMON
    DAEMON = start_module_daemon("test_connector_vllm_")


VLLM_CONFIG = SimpleNamespace(kv_transfer_config=SimpleNamespace(kv_connector_extra_config={}))


class Blocks:  # vLLM's KVCacheBlocks, one group
    def __init__(self, ids):
        self.ids = list(ids)

    def get_block_ids(self):
        return (self.ids,)


def request(req_id, tokens, session=""):
    return SimpleNamespace(request_id=req_id, prompt_token_ids=list(tokens),
                           all_token_ids=list(tokens), num_computed_tokens=0,
                           kv_transfer_params={"cachesvc_session_id": session} if session else None)


def new_step(req, pages, n):
    return SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=req.request_id,
                                            prompt_token_ids=req.prompt_token_ids,
                                            block_ids=(list(pages),),
                                            num_computed_tokens=req.num_computed_tokens)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[], new_block_ids=[]),
        num_scheduled_tokens={req.request_id: n})


def cached_step(req, new_pages, n):
    return SimpleNamespace(
        scheduled_new_reqs=[],
        scheduled_cached_reqs=SimpleNamespace(req_ids=[req.request_id],
                                              new_block_ids=[(list(new_pages),)
                                                             if new_pages else None]),
        num_scheduled_tokens={req.request_id: n})


class FakeWorker:
    """vLLM's worker side: per-layer [2, pages, B, heads, dim] caches and a forward that writes
    each scheduled token's KV (random, remembered per token id) and calls save_kv_layer."""

    def __init__(self, test):
        conn = cachesvc.Connector(DAEMON.address, LAYOUT, token=TOKEN_A, rpc_timeout_s=3)
        test.addCleanup(conn.close)
        self.adapter = CachesvcConnectorV1(VLLM_CONFIG, KVConnectorRole.WORKER, connector=conn)
        self.caches = {n: torch.full((2, PAGES, B, 2, 64), float("nan"), dtype=torch.float16)
                       for n in NAMES}
        self.adapter.register_kv_caches(self.caches)

    @staticmethod
    def kv_of(token, layer):
        g = torch.Generator().manual_seed(token * 31 + layer)
        return torch.randn(2, 2, 64, generator=g).half()

    def step(self, meta, req, pages, start, n):
        a = self.adapter
        a.bind_connector_metadata(meta)
        a.start_load_kv(None)
        for l, name in enumerate(NAMES):
            a.wait_for_layer_load(name)
            for p in range(start, start + n):
                self.caches[name][:, pages[p // B], p % B] = self.kv_of(req.all_token_ids[p], l)
            a.save_kv_layer(name, self.caches[name], None)
        saved = a.wait_for_save()
        a.clear_connector_metadata()
        return saved

    def page(self, layer, page):
        return self.caches[NAMES[layer]][:, page]


class VllmAdapter(unittest.TestCase):

    def scheduler(self):
        conn = cachesvc.Connector(DAEMON.address, LAYOUT, token=TOKEN_A, rpc_timeout_s=3)
        self.addCleanup(conn.close)
        return CachesvcConnectorV1(VLLM_CONFIG, KVConnectorRole.SCHEDULER, connector=conn)

    def test_save_then_load_through_the_adapter(self):
        self.assertIn("UNTESTED AGAINST vLLM", vllm_adapter.__doc__)
        sched = self.scheduler()
        worker_a = FakeWorker(self)
        prompt = list(range(50_000, 50_070))  # 4 full blocks + 6
        req = request("r1", prompt)
        self.assertEqual(sched.get_num_new_matched_tokens(req, 0), (0, False))
        pages = [3, 5, 7, 9, 11]
        sched.update_state_after_alloc(req, Blocks(pages), 0)
        meta = sched.build_connector_meta(new_step(req, pages, 70))
        self.assertEqual(meta.loads, [])
        self.assertEqual([(s.first_block, s.page_ids) for s in meta.saves], [(0, pages[:4])])
        saved = worker_a.step(meta, req, pages, 0, 70)
        self.assertEqual(saved.blocks_committed, 4)
        req.num_computed_tokens = 70

        # Decode 10 tokens: the step that fills block 4 saves it (and only it).
        for i in range(10):
            req.all_token_ids.append(60_000 + i)
            meta = sched.build_connector_meta(cached_step(req, None, 1))
            if req.num_computed_tokens + 1 == 80:
                self.assertEqual([(s.first_block, len(s.tokens)) for s in meta.saves], [(4, 80)])
            else:
                self.assertEqual(meta.saves, [])
            worker_a.step(meta, req, pages, req.num_computed_tokens, 1)
            req.num_computed_tokens += 1
        self.assertEqual(sched.request_finished(req, pages), (False, None))

        # A new request with that conversation and more: 80 tokens come from cachesvc.
        tokens2 = req.all_token_ids + list(range(70_000, 70_020))
        req2 = request("r2", tokens2, session="sess-1")
        self.assertEqual(sched.get_num_new_matched_tokens(req2, 0), (80, False))
        self.assertEqual(sched.get_num_new_matched_tokens(req2, 16), (0, False))  # local hit
        pages2 = [20, 21, 22, 23, 24, 25, 26]
        sched.update_state_after_alloc(req2, Blocks(pages2), 80)
        req2.num_computed_tokens = 80
        meta2 = sched.build_connector_meta(new_step(req2, pages2, 20))
        self.assertEqual([(s.page_ids, len(s.tokens)) for s in meta2.loads], [(pages2[:5], 80)])
        self.assertEqual([(s.first_block, s.session_id) for s in meta2.saves], [(5, "sess-1")])
        worker_b = FakeWorker(self)
        worker_b.step(meta2, req2, pages2, 80, 20)
        self.assertEqual(worker_b.adapter.get_block_ids_with_load_errors(), set())
        for i in range(5):
            for l in range(LAYERS):
                self.assertTrue(torch.equal(worker_b.page(l, pages2[i]),
                                            worker_a.page(l, pages[i])), (i, l))

        # The same load on a worker whose third block arrives corrupted: blocks 2.. are errors,
        # their pages untouched.
        worker_c = FakeWorker(self)
        worker_c.adapter.conn.TEST_corrupt_on_read(2)
        worker_c.adapter.bind_connector_metadata(vllm_adapter.CachesvcConnectorMetadata(
            loads=meta2.loads))
        worker_c.adapter.start_load_kv(None)
        self.assertEqual(worker_c.adapter.get_block_ids_with_load_errors(), set(pages2[2:5]))
        self.assertEqual(worker_c.adapter.get_block_ids_with_load_errors(), set())  # reported once
        self.assertTrue(torch.isnan(worker_c.page(0, pages2[2])).all())
        self.assertTrue(torch.equal(worker_c.page(0, pages2[1]), worker_a.page(0, pages[1])))

    def test_never_the_whole_prompt_and_nothing_when_the_daemon_fails(self):
        sched = self.scheduler()
        worker = FakeWorker(self)
        prompt = list(range(80_000, 80_032))  # exactly 2 blocks
        req = request("w1", prompt)
        sched.update_state_after_alloc(req, Blocks([0, 1]), 0)
        worker.step(sched.build_connector_meta(new_step(req, [0, 1], 32)), req, [0, 1], 0, 32)
        again = request("w2", prompt)
        # Both blocks are cached, but vLLM must compute at least one token: one block only.
        self.assertEqual(sched.get_num_new_matched_tokens(again, 0), (16, False))
        sched.conn.close()  # every call fails now: counted as nothing cached
        self.assertEqual(sched.get_num_new_matched_tokens(again, 0), (0, False))


if __name__ == "__main__":
    unittest.main(verbosity=2)
