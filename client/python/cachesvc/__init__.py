"""cachesvc: the engine connector of the cachesvc KV-cache service, on PyTorch tensors.

An inference engine keeps its KV cache in pages; this module saves full blocks of those pages to
a cachesvc daemon (layer by layer, overlapping the forward pass) and loads a cached prompt prefix
back into fresh pages::

    import cachesvc

    layout = cachesvc.Layout(model_id="my-model", num_layers=L, num_kv_heads=2, head_dim=64,
                             dtype="fp16", block_tokens=16)
    conn = cachesvc.Connector("127.0.0.1:50051", layout, token=TOKEN, codec="tq3")
    conn.register_kv_caches([(k_pages[l], v_pages[l]) for l in range(L)])  # [pages, 16, 2, 64]
    hit = conn.lookup_prefix(prompt)                  # cached tokens, whole blocks
    got = conn.load(prompt, page_ids[: hit // 16])    # got.tokens are in those pages now
    conn.begin_save(prompt, page_ids, first_block=got.blocks, session_id=session.id)
    for l in range(L): ...; conn.save_layer(l)
    conn.wait_for_save()

A failed or mismatched block is never loaded: it and the blocks after it are reported as not
cached (LoadResult.tokens stops before it) and their pages are untouched; the engine recomputes.
Errors raise cachesvc.errors.ConnectorError subclasses (bad input: InvalidArgument, a ValueError).
docs/connector.md (the Python section) is the manual; vllm_adapter.py adapts it to vLLM.

The C++ extension _cachesvc_connector is built by CMake (target _cachesvc_connector) into
<build>/client/python; put that folder and client/python on sys.path.
"""

try:  # an installed copy: the extension inside the package
    from . import _cachesvc_connector as _ext  # type: ignore[attr-defined]
except ImportError:  # the build tree: the extension at the top level of <build>/client/python
    import _cachesvc_connector as _ext  # type: ignore[no-redef]

from . import errors
from .connector import Connector, LoadResult, SaveResult
from .errors import (ConnectorError, DataLoss, DeadlineExceeded, FailedPrecondition, Internal,
                     InvalidArgument, NotFound, OutOfRange, PermissionDenied, ResourceExhausted,
                     Unauthenticated, Unavailable, Unimplemented)
from .layout import Layout

_ext._set_error_factory(errors.from_status)

__all__ = [
    "Connector", "ConnectorError", "DataLoss", "DeadlineExceeded", "FailedPrecondition",
    "Internal", "InvalidArgument", "Layout", "LoadResult", "NotFound", "OutOfRange",
    "PermissionDenied", "ResourceExhausted", "SaveResult", "Unauthenticated", "Unavailable",
    "Unimplemented", "errors",
]
