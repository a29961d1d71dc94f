"""A vLLM (v1) KV-connector adapter over cachesvc.Connector.

UNTESTED AGAINST vLLM ITSELF: vLLM is not installable where cachesvc is built and tested (Debian
packages only). The adapter follows vLLM's KVConnectorBase_V1 interface as of late 2025
(vllm/distributed/kv_transfer/kv_connector/v1/base.py) and is unit-tested with fake vLLM objects
(tests/python/test_connector_vllm.py) against a real cachesvc daemon; expect to adjust attribute
names to the vLLM version you run. It imports without vLLM (it then derives from `object`).

Configure it as vLLM's KV connector, e.g.::

    --kv-transfer-config '{"kv_connector": "CachesvcConnectorV1",
        "kv_connector_module_path": "cachesvc.vllm_adapter", "kv_role": "kv_both",
        "kv_connector_extra_config": {"address": "127.0.0.1:50051", "token": "...",
                                      "codec": "tq3", "model_id": "my-model"}}'

and pass a session with a request as kv_transfer_params={"cachesvc_session_id": session.id}.

What it does, per engine step:
  scheduler side  get_num_new_matched_tokens: Connector.lookup_prefix on the prompt (always
                  leaving at least one token to compute); update_state_after_alloc: remembers the
                  pages the external tokens go to; build_connector_meta: for each scheduled
                  request, what to load (first step) and which newly full blocks to save.
  worker side     start_load_kv: Connector.load, synchronously, for every request (a block that
                  fails to load is reported by get_block_ids_with_load_errors, and vLLM
                  recomputes it); wait_for_layer_load: nothing (the load is complete before the
                  forward); save_kv_layer: begin_save for the step's requests at the first layer,
                  then Connector.save_layer (copies the layer's blocks out of the pages, so the
                  forward may go on); wait_for_save: Connector.wait_for_save.
  request_finished returns (False, None): saves never hold vLLM's pages past the step.

Limits (kept thin on purpose): one KV-cache group (no hybrid allocator), every layer in one
registered paged cache of one layout (vLLM's [2, pages, block, heads, dim] flash-attn tensors,
kv_layout "NHD", or "HND" via kv_connector_extra_config["kv_layout"]), loads only at a request's
first scheduled step and only when vLLM's own prefix cache had no hit for it (Connector.load
writes from block 0 and must not overwrite pages shared with other requests).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

try:  # pragma: no cover - only where vLLM is installed
    from vllm.distributed.kv_transfer.kv_connector.v1.base import (  # type: ignore
        KVConnectorBase_V1 as _Base, KVConnectorMetadata as _MetaBase, KVConnectorRole)
    HAVE_VLLM = True
except ImportError:
    import enum

    class _Base:  # type: ignore[no-redef]
        pass

    class _MetaBase:  # type: ignore[no-redef]
        pass

    class KVConnectorRole(enum.Enum):  # type: ignore[no-redef]
        SCHEDULER = 0
        WORKER = 1

    HAVE_VLLM = False

from .connector import Connector
from .errors import ConnectorError

log = logging.getLogger("cachesvc.vllm_adapter")
SESSION_PARAM = "cachesvc_session_id"


@dataclasses.dataclass
class LoadSpec:
    req_id: str
    tokens: list[int]    # the prompt prefix to load: whole blocks
    page_ids: list[int]  # vLLM block ids the blocks go to, one per block


@dataclasses.dataclass
class SaveSpec:
    req_id: str
    tokens: list[int]    # the request's tokens from 0 through its last full block this step
    page_ids: list[int]  # vLLM block ids of those blocks
    first_block: int     # blocks before it are already saved (or were loaded)
    session_id: str


@dataclasses.dataclass
class CachesvcConnectorMetadata(_MetaBase):
    loads: list[LoadSpec] = dataclasses.field(default_factory=list)
    saves: list[SaveSpec] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Tracked:
    request: Any
    page_ids: list[int]
    load_tokens: int = 0      # external tokens to load at the first step
    load_sent: bool = False
    saved_blocks: int = 0     # blocks handed to a save (or loaded)


def _layout_from_vllm(vllm_config, extra: dict) -> dict:
    """The cachesvc layout of this TP rank from vLLM's config (or kv_connector_extra_config)."""
    if "layout" in extra:
        return dict(extra["layout"])
    model, parallel = vllm_config.model_config, vllm_config.parallel_config
    dtype = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[
        str(model.dtype).replace("torch.", "")]
    return {"model_id": extra.get("model_id", model.model),
            "num_layers": model.get_num_layers(parallel),
            "num_kv_heads": model.get_num_kv_heads(parallel),
            "head_dim": model.get_head_size(), "dtype": dtype,
            "block_tokens": vllm_config.cache_config.block_size,
            "tp_rank": getattr(parallel, "rank", 0) % parallel.tensor_parallel_size,
            "tp_size": parallel.tensor_parallel_size}


class CachesvcConnectorV1(_Base):
    """vLLM KVConnectorBase_V1 over cachesvc (see the module docstring).

    connector: an existing cachesvc.Connector (tests); otherwise one is made from
    kv_connector_extra_config (address, token, codec, key_mode, model_id or layout).
    """

    def __init__(self, vllm_config, role, kv_cache_config=None, *, connector=None):
        if HAVE_VLLM:  # pragma: no cover
            try:
                super().__init__(vllm_config, role, kv_cache_config)
            except TypeError:  # vLLM versions before kv_cache_config
                super().__init__(vllm_config, role)
        self._role = role
        extra = dict(getattr(vllm_config.kv_transfer_config, "kv_connector_extra_config", None)
                     or {})
        self._kv_layout = extra.get("kv_layout", "NHD")
        if connector is None:
            connector = Connector(extra["address"], _layout_from_vllm(vllm_config, extra),
                                  token=extra.get("token", ""), codec=extra.get("codec", "raw"),
                                  key_mode=extra.get("key_mode", "service"))
        self.conn = connector
        self.block_tokens = connector.block_tokens
        # Scheduler side.
        self._requests: dict[str, _Tracked] = {}
        # Worker side.
        self._layer_index: dict[str, int] = {}
        self._meta: CachesvcConnectorMetadata | None = None
        self._save_begun = False
        self._load_errors: set[int] = set()

    # ---- scheduler side ---------------------------------------------------------------------
    def get_num_new_matched_tokens(self, request, num_computed_tokens: int) -> tuple[int, bool]:
        """Cached prompt tokens beyond num_computed_tokens, loaded synchronously (False). Side
        effect free; a daemon error counts as nothing cached."""
        prompt = list(request.prompt_token_ids)
        # vLLM must compute at least one token to sample from: never claim the whole prompt.
        usable = ((len(prompt) - 1) // self.block_tokens) * self.block_tokens
        # Connector.load writes from block 0: with a local prefix-cache hit it would overwrite
        # pages other requests share (with lossy-decoded values under TQ3). Recompute instead.
        if num_computed_tokens > 0 or usable == 0:
            return 0, False
        try:
            hit = self.conn.lookup_prefix(prompt[:usable])
        except ConnectorError as e:
            log.warning("cachesvc lookup for %s failed, recomputing: %s", request.request_id, e)
            return 0, False
        return hit, False

    def update_state_after_alloc(self, request, blocks, num_external_tokens: int) -> None:
        page_ids = list(blocks.get_block_ids()[0]) if blocks is not None else []
        tracked = self._requests.get(request.request_id)
        if tracked is None:
            tracked = self._requests[request.request_id] = _Tracked(request, page_ids)
        else:
            tracked.page_ids = page_ids
        tracked.load_tokens = num_external_tokens

    def build_connector_meta(self, scheduler_output) -> CachesvcConnectorMetadata:
        meta = CachesvcConnectorMetadata()
        B = self.block_tokens
        for new in scheduler_output.scheduled_new_reqs:
            tracked = self._requests.setdefault(new.req_id, _Tracked(None, []))
            tracked.page_ids = list(new.block_ids[0])
            if tracked.request is None:
                tracked.request = new
        cached = scheduler_output.scheduled_cached_reqs
        for i, req_id in enumerate(getattr(cached, "req_ids", [])):
            new_ids = cached.new_block_ids[i]
            if req_id in self._requests and new_ids is not None:
                self._requests[req_id].page_ids.extend(new_ids[0])
        for req_id, n_scheduled in scheduler_output.num_scheduled_tokens.items():
            tracked = self._requests.get(req_id)
            if tracked is None:
                continue
            request = tracked.request
            tokens = list(getattr(request, "all_token_ids", None) or request.prompt_token_ids)
            if tracked.load_tokens and not tracked.load_sent:
                n_blocks = tracked.load_tokens // B
                meta.loads.append(LoadSpec(req_id, tokens[:n_blocks * B],
                                           tracked.page_ids[:n_blocks]))
                tracked.load_sent = True
                tracked.saved_blocks = n_blocks
            done = request.num_computed_tokens + n_scheduled  # tokens whose KV exists after it
            full = min(done // B, len(tracked.page_ids), len(tokens) // B)
            if full > tracked.saved_blocks:
                params = getattr(request, "kv_transfer_params", None) or {}
                session_id = str(params.get(SESSION_PARAM, ""))
                meta.saves.append(SaveSpec(req_id, tokens[:full * B], tracked.page_ids[:full],
                                           tracked.saved_blocks, session_id))
                tracked.saved_blocks = full
        return meta

    def request_finished(self, request, block_ids) -> tuple[bool, dict | None]:
        """Nothing holds vLLM's pages after a step: free them now."""
        self._requests.pop(request.request_id, None)
        return False, None

    # ---- worker side ------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict) -> None:
        """vLLM's per-layer caches, name -> tensor, in layer order."""
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}
        self.conn.register_kv_caches(kv_caches, kv_layout=self._kv_layout)

    def bind_connector_metadata(self, connector_metadata) -> None:
        self._meta = connector_metadata
        self._save_begun = False

    def clear_connector_metadata(self) -> None:
        self._meta = None

    def start_load_kv(self, forward_context, **kwargs) -> None:
        """Loads every request's cached prefix before the forward (synchronously). A block that
        did not load (missing, failed a check, the daemon failed) is reported through
        get_block_ids_with_load_errors, never left as if loaded."""
        for spec in self._meta.loads if self._meta else []:
            try:
                got = self.conn.load(spec.tokens, spec.page_ids)
                loaded = got.blocks
                if got.miss_reason:
                    log.info("cachesvc load of %s stopped at block %d: %s", spec.req_id, loaded,
                             got.miss_reason)
            except ConnectorError as e:
                log.warning("cachesvc load of %s failed, recomputing: %s", spec.req_id, e)
                loaded = 0
            self._load_errors.update(spec.page_ids[loaded:])

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Nothing to wait for: start_load_kv loaded every layer before the forward."""

    def save_kv_layer(self, layer_name: str, kv_layer, attn_metadata, **kwargs) -> None:
        """After layer `layer_name` wrote its KV into the pages: copies that layer of the step's
        newly full blocks out (begin_save for the step's requests at its first layer)."""
        if not self._meta or not self._meta.saves:
            return
        try:
            if not self._save_begun:
                self._save_begun = True
                for spec in self._meta.saves:
                    self.conn.begin_save(spec.tokens, spec.page_ids, spec.first_block,
                                         spec.session_id)
            self.conn.save_layer(self._layer_index[layer_name])
        except ConnectorError as e:  # a lost save is a future miss, never an engine failure
            log.warning("cachesvc save of layer %s failed: %s", layer_name, e)

    def wait_for_save(self):
        if not self._meta or not self._meta.saves:
            return None
        try:
            return self.conn.wait_for_save()
        except ConnectorError as e:
            log.warning("cachesvc save failed (those blocks are not cached): %s", e)
            return None

    def get_block_ids_with_load_errors(self) -> set[int]:
        errors, self._load_errors = self._load_errors, set()
        return errors

    def get_finished(self, finished_req_ids):
        return None, None

    def shutdown(self) -> None:
        self.conn.close()
