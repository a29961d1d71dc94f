"""Connector: the engine connector (client/kv_connector.h) on PyTorch tensors.

What this file adds to the C++ connector is the tensor side. The extension does not link
libtorch (so it builds without torch and works with whichever torch the engine brings, Debian's
python3-torch or a wheel in the engine's venv, with no C++ ABI to match): it takes page
addresses (tensor.data_ptr()), byte strides and a dtype name, and this file derives them from
the tensors, refusing (ValueError, as cachesvc.InvalidArgument) any tensor whose dtype, shape,
device or strides do not fit the layout. The C++ side checks the result again (ValidatePagedKv).

Paged caches accepted by register_kv_caches (one entry per layer, in layer order: a list, or a
dict name -> entry in insertion order as vLLM passes it). T = block_tokens, H = num_kv_heads,
D = head_dim, P = pages:
  kv_layout="NHD" (default):  (K, V), each [P, T, H, D]; or one tensor [2, P, T, H, D]
                              (vLLM's flash-attn layout: kv[0] is K, kv[1] is V)
  kv_layout="HND":            (K, V), each [P, H, T, D]; or one tensor [2, P, H, T, D]
  kv_layout="shared_NHD":     one tensor [P, 2, T, H, D] (K and V in one page, FlashInfer NHD)
  kv_layout="shared_HND":     one tensor [P, 2, H, T, D]
  MLA layouts (attention="mla"): one tensor [P, T, D] or [P, T, 1, D] per layer.
Any strides are fine as long as each (token, head) vector of D values is contiguous (stride 1 in
the last dimension) and every layer has the same strides. Pages on the CPU or on one CUDA device
(CUDA needs a build of cachesvc with CUDA; otherwise FailedPrecondition/Unimplemented).

The Connector keeps references to the registered tensors, so their memory stays valid while it
uses them; the engine must not reallocate them (re-register after it does).

Thread-safety: as KvConnector: lookup_prefix and load from any thread; begin_save/save_layer/
wait_for_save from one thread at a time; register_kv_caches and close with nothing else running.
Every call that may block releases the GIL.
"""

from __future__ import annotations

import array
import dataclasses
import operator
from typing import Any, Iterable

from .errors import InvalidArgument

try:
    from . import _cachesvc_connector as _ext  # type: ignore[attr-defined]
except ImportError:
    import _cachesvc_connector as _ext  # type: ignore[no-redef]

_DTYPE_NUMBERS = {1: "fp16", 2: "bf16", 3: "fp8_e4m3", 4: "fp32"}
_ATTENTION_NUMBERS = {1: "mha_gqa", 2: "mla"}
_KV_LAYOUTS = ("NHD", "HND", "shared_NHD", "shared_HND")


@dataclasses.dataclass(frozen=True)
class LoadResult:
    blocks: int        # leading blocks now in the pages
    tokens: int        # blocks * block_tokens
    miss_reason: str   # why the load stopped before the requested blocks; "" when it did not


@dataclasses.dataclass(frozen=True)
class SaveResult:
    blocks_committed: int  # newly stored
    blocks_skipped: int    # the daemon already had them, or had no room for them
    blocks_kept_raw: int   # a lossy codec was asked for but the block held NaN/Inf
    tag_error: str         # "" or why tagging blocks with their session failed (not a save error)


def _torch_dtype_name(dtype) -> str | None:
    import torch
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    fp8 = getattr(torch, "float8_e4m3fn", None)
    if fp8 is not None:
        names[fp8] = "fp8_e4m3"
    return names.get(dtype)


def _u32_buffer(values, what: str) -> array.array:
    """Token ids or page ids as array('I'); InvalidArgument naming the first bad value."""
    if isinstance(values, array.array) and values.typecode == "I":
        return values
    if hasattr(values, "dim") and hasattr(values, "tolist"):  # a torch tensor
        if values.dim() != 1 or values.is_floating_point() or values.is_complex():
            raise InvalidArgument(f"{what}: need a 1-d integer tensor, got {values.dtype} of "
                                  f"shape {tuple(values.shape)}")
        values = values.tolist()
    elif hasattr(values, "ndim") and hasattr(values, "tolist"):  # a numpy array
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise InvalidArgument(f"{what}: need a 1-d integer array, got {values.dtype} of "
                                  f"shape {values.shape}")
        values = values.tolist()
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InvalidArgument(f"{what}: need a sequence of ints, got {type(values).__name__}")
    out = array.array("I")
    for i, v in enumerate(values):
        try:
            v = operator.index(v)
        except TypeError:
            raise InvalidArgument(f"{what}[{i}] = {v!r}: not an int") from None
        if not 0 <= v <= 0xFFFFFFFF:
            raise InvalidArgument(f"{what}[{i}] = {v}: out of range [0, 2^32-1]")
        out.append(v)
    return out


def _field(layout, name: str, default=None):
    if isinstance(layout, dict):
        value = layout.get(name, default)
    else:
        value = getattr(layout, name, default)
    if value is None:
        raise InvalidArgument(f"layout.{name} is missing")
    return value


class Connector:
    """One engine's connection to a cachesvc daemon for one layout (one TP rank).

    address: the daemon's gRPC address; layout: cachesvc.Layout, cachesvc_sessions.Layout, a dict
    or any object with those fields; token: the tenant's bearer token; codec: how new blocks are
    stored ("raw"; "tq3"/"tq4" need an fp16/bf16 layout with head_dim 64, 128 or 256);
    key_mode: "service" (the daemon derives block keys with the tenant's salt: the blocks
    sessions name) or "client" (keys derived here, no RPC; not the sessions' keys).
    Connects and registers the layout; raises the daemon's error (Unavailable, Unauthenticated,
    InvalidArgument for a bad layout).
    """

    def __init__(self, address: str, layout: Any, *, token: str = "", codec: str = "raw",
                 key_mode: str = "service", rpc_timeout_s: float = 10.0,
                 ucx_transports: str = "", ucx_detect_peer_failure: bool = True):
        dtype = _field(layout, "dtype", "fp16")
        dtype = _DTYPE_NUMBERS.get(dtype, dtype) if isinstance(dtype, int) else str(dtype).lower()
        attention = _field(layout, "attention", "mha_gqa")
        attention = (_ATTENTION_NUMBERS.get(attention, attention) if isinstance(attention, int)
                     else str(attention).lower())
        fields = {}
        for name, default in (("num_layers", None), ("num_kv_heads", None), ("head_dim", None),
                              ("block_tokens", 16), ("tp_rank", 0), ("tp_size", 1)):
            value = _field(layout, name, default)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise InvalidArgument(f"layout.{name} = {value!r}: need an int in [0, 2^32)")
            fields[name] = value
        if not isinstance(rpc_timeout_s, (int, float)) or not rpc_timeout_s > 0:
            raise InvalidArgument(f"rpc_timeout_s = {rpc_timeout_s!r}: need a positive number")
        self._layout = {"model_id": str(_field(layout, "model_id")), "dtype": dtype,
                        "attention": attention, **fields}
        self._impl = _ext.Connector(
            address=address, token=token, codec=codec, key_mode=key_mode,
            rpc_timeout_s=float(rpc_timeout_s), ucx_transports=ucx_transports,
            ucx_detect_peer_failure=ucx_detect_peer_failure, **self._layout)
        engine = self._impl.engine()
        self.engine_id: str = engine["engine_id"]
        self.fingerprint: int = engine["layout_fingerprint"]
        self.raw_block_bytes: int = engine["raw_block_bytes"]
        self._kv_refs: list = []
        self.num_pages = 0
        self.device = None

    # -- properties -------------------------------------------------------------------------
    @property
    def block_tokens(self) -> int:
        return self._layout["block_tokens"]

    @property
    def num_layers(self) -> int:
        return self._layout["num_layers"]

    @property
    def codec(self) -> str:
        return self._impl.codec()

    @property
    def layout(self) -> dict:
        return dict(self._layout)

    # -- the paged cache --------------------------------------------------------------------
    def register_kv_caches(self, kv_caches, kv_layout: str = "NHD") -> None:
        """Registers the engine's paged KV cache (see the module docstring for the shapes).
        ValueError (InvalidArgument) naming the layer and what does not fit."""
        if kv_layout not in _KV_LAYOUTS:
            raise InvalidArgument(f"kv_layout {kv_layout!r}: not one of {_KV_LAYOUTS}")
        entries = list(kv_caches.values()) if isinstance(kv_caches, dict) else list(kv_caches)
        L = self._layout
        if len(entries) != L["num_layers"]:
            raise InvalidArgument(f"kv_caches has {len(entries)} layers, the layout "
                                  f"{L['num_layers']}")
        mla = L["attention"] == "mla"
        shared = kv_layout.startswith("shared_") and not mla
        head_major = kv_layout.endswith("HND")
        strides = None
        device = None
        num_pages = None
        k_pages, v_pages, refs = [], [], []
        for index, entry in enumerate(entries):
            k, v, part_bytes = self._split_layer(index, entry, mla, shared, head_major)
            for name, t in (("K", k), ("V", v)):
                if t is None:
                    continue
                where = f"layer {index} {name}"
                if _torch_dtype_name(t.dtype) != L["dtype"]:
                    raise InvalidArgument(f"{where}: dtype {t.dtype} but the layout is "
                                          f"{L['dtype']}")
                want = (t.shape[0], L["block_tokens"], L["num_kv_heads"], L["head_dim"])
                if tuple(t.shape) != want:
                    raise InvalidArgument(
                        f"{where}: shape [pages, tokens, heads, head_dim] = {list(t.shape)} "
                        f"(as {kv_layout}), the layout needs [*, {want[1]}, {want[2]}, {want[3]}]")
                if t.shape[0] == 0:
                    raise InvalidArgument(f"{where}: no pages")
                if num_pages is None:
                    num_pages = t.shape[0]
                elif t.shape[0] != num_pages:
                    raise InvalidArgument(f"{where}: {t.shape[0]} pages, layer 0 has {num_pages}")
                dev = (t.device.type, t.device.index if t.device.index is not None else 0)
                if dev[0] not in ("cpu", "cuda"):
                    raise InvalidArgument(f"{where}: device {t.device} (need cpu or cuda)")
                if device is None:
                    device = dev
                elif dev != device:
                    raise InvalidArgument(f"{where}: on {t.device}, layer 0 K on "
                                          f"{device[0]}:{device[1]}")
                if L["head_dim"] > 1 and t.stride(3) != 1:
                    raise InvalidArgument(f"{where}: head_dim must be contiguous (stride 1), "
                                          f"strides are {t.stride()}")
                elem = t.element_size()
                s = (t.stride(0) * elem, t.stride(1) * elem, t.stride(2) * elem, part_bytes)
                if strides is None:
                    strides = s
                elif s != strides:
                    raise InvalidArgument(f"{where}: byte strides (page, token, head, part) {s} "
                                          f"differ from layer 0 K's {strides}")
            elem = k.element_size()
            if v is not None and not shared and _spans_overlap(k, v, elem):
                raise InvalidArgument(f"layer {index}: K and V share memory (the same tensor "
                                      f"twice?); use kv_layout='shared_...' for K|V pages")
            k_pages.append([k.data_ptr() + b * strides[0] for b in range(num_pages)])
            if v is not None and not shared:  # shared pages: V is at part_bytes inside K's
                v_pages.append([v.data_ptr() + b * strides[0] for b in range(num_pages)])
            refs.append(entry)
        page_stride, token_bytes, head_bytes, part_bytes = strides
        vector = L["head_dim"] * elem
        # Bytes one page's vectors span (the C++ side checks they do not overlap).
        page_bytes = (vector + (L["block_tokens"] - 1) * token_bytes
                      + (L["num_kv_heads"] - 1) * head_bytes + (part_bytes if shared else 0))
        if page_stride < page_bytes and num_pages > 1:
            raise InvalidArgument(f"pages overlap: one page spans {page_bytes} bytes but the page "
                                  f"stride is {page_stride} bytes")
        self._impl.register_paged_cache(
            memory=device[0], cuda_device=device[1], dtype=L["dtype"], token_bytes=token_bytes,
            head_bytes=head_bytes, part_bytes=part_bytes if shared else 0, page_bytes=page_bytes,
            k_pages=k_pages, v_pages=v_pages)
        self._kv_refs = refs
        self.num_pages = num_pages
        self.device = device

    @staticmethod
    def _split_layer(index, entry, mla, shared, head_major):
        """(K, V or None, part_bytes) as [P, T, H, D] views of one layer's entry."""
        where = f"layer {index}"
        if mla:
            if isinstance(entry, (tuple, list)) or not hasattr(entry, "dim"):
                raise InvalidArgument(f"{where}: an MLA layer is one tensor [pages, tokens, dim]")
            if entry.dim() == 3:
                entry = entry.unsqueeze(2)
            if entry.dim() != 4:
                raise InvalidArgument(f"{where}: MLA pages need [pages, tokens, dim] or "
                                      f"[pages, tokens, 1, dim], got {list(entry.shape)}")
            return entry, None, 0
        if shared:
            if isinstance(entry, (tuple, list)) or not hasattr(entry, "dim") or entry.dim() != 5 \
                    or entry.shape[1] != 2:
                raise InvalidArgument(f"{where}: shared pages need one tensor [pages, 2, ...], "
                                      f"got {_describe(entry)}")
            k, v = entry[:, 0], entry[:, 1]
            part_bytes = v.data_ptr() - k.data_ptr()
        elif isinstance(entry, (tuple, list)):
            if len(entry) != 2 or not all(hasattr(t, "dim") for t in entry):
                raise InvalidArgument(f"{where}: need (K, V) tensors, got {_describe(entry)}")
            k, v = entry
            if k.dim() != 4 or v.dim() != 4:
                raise InvalidArgument(f"{where}: K and V need 4 dimensions, got "
                                      f"{list(k.shape)} and {list(v.shape)}")
            part_bytes = 0
        else:
            if not hasattr(entry, "dim") or entry.dim() != 5 or entry.shape[0] != 2:
                raise InvalidArgument(f"{where}: need (K, V) or one tensor [2, pages, ...], got "
                                      f"{_describe(entry)}")
            k, v = entry[0], entry[1]
            part_bytes = 0
        if head_major:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        return k, v, part_bytes

    # -- lookup, load, save -------------------------------------------------------------------
    def block_keys(self, tokens) -> list[bytes]:
        """16-byte keys of the full blocks of `tokens` (per key_mode)."""
        return self._impl.block_keys(_u32_buffer(tokens, "tokens"))

    def lookup_prefix(self, tokens) -> int:
        """How many leading tokens are cached (a multiple of block_tokens)."""
        return self._impl.lookup_prefix(_u32_buffer(tokens, "tokens"))

    def load(self, tokens, page_ids) -> LoadResult:
        """Loads the cached prefix of `tokens` into the pages: block i into page page_ids[i].
        Only a verified prefix is written (LoadResult.tokens); a missing or bad block and all
        after it stay untouched and must be recomputed. Raises on a daemon error (then nothing
        counts as loaded)."""
        blocks, tokens_loaded, reason = self._impl.load(_u32_buffer(tokens, "tokens"),
                                                        _u32_buffer(page_ids, "page_ids"))
        return LoadResult(blocks, tokens_loaded, reason)

    def begin_save(self, tokens, page_ids, first_block: int = 0, session_id: str = "") -> None:
        """Names the full blocks of one request to save in this step: block i of `tokens` is in
        page page_ids[i]; blocks [first_block, len(page_ids)) are saved, tagged with session_id."""
        if isinstance(first_block, bool) or not isinstance(first_block, int) or first_block < 0:
            raise InvalidArgument(f"first_block = {first_block!r}: need an int >= 0")
        self._impl.begin_save(_u32_buffer(tokens, "tokens"), _u32_buffer(page_ids, "page_ids"),
                              first_block, str(session_id))

    def save_layer(self, layer: int) -> None:
        """Copies layer `layer` of the named blocks out of the pages (when it returns, the pages
        may be overwritten); after the last layer the step is saved in the background."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < 2**32:
            raise InvalidArgument(f"layer = {layer!r}: need an int in [0, num_layers)")
        self._impl.save_layer(layer)

    def wait_for_save(self) -> SaveResult:
        """Waits for the background saves; their totals, or the first error."""
        return SaveResult(*self._impl.wait_for_save())

    def close(self) -> None:
        """Waits for a save in progress and disconnects."""
        self._impl.close()
        self._kv_refs = []

    def __enter__(self) -> "Connector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- test hooks ---------------------------------------------------------------------------
    def TEST_corrupt_on_read(self, block: int) -> None:
        """Flips a byte of the `block`-th block of every later load after it is read (a faulty
        link or tier); -1 stops."""
        self._impl.TEST_corrupt_on_read(block)

    def TEST_set_before_read_hook(self, hook) -> None:
        """Calls hook() in every later load after the read leases are granted, before the bytes
        are read (tests stop the daemon there); None stops."""
        self._impl.TEST_set_before_read_hook(hook)


def _spans_overlap(a, b, elem: int) -> bool:
    """Whether the bytes two strided tensors address overlap (as intervals)."""
    def span(t):
        last = sum((n - 1) * st for n, st in zip(t.shape, t.stride())) * elem
        return t.data_ptr(), t.data_ptr() + last + elem
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def _describe(entry) -> str:
    if isinstance(entry, (tuple, list)):
        return f"a {type(entry).__name__} of {len(entry)}"
    if hasattr(entry, "shape"):
        return f"a tensor of shape {list(entry.shape)}"
    return type(entry).__name__
