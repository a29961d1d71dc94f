"""cachesvc_sessions: the agent-framework client of cachesvc's SessionService.

Tell the cache service what an agent is doing so it keeps the agent's KV cache across tool
calls::

    from cachesvc_sessions import Client

    with Client("127.0.0.1:50051", token=TOKEN) as client:
        with client.open_session(fingerprint, client_session_id="chat-42") as session:
            session.append(prompt_tokens)
            with session.tool_call("web_search", expected_s=4):
                result = web_search(query)
            session.append(result_tokens)

The asyncio variant is AsyncClient (cachesvc_sessions.aio). Every failed call raises a
CachesvcError subclass named after its gRPC status (NotFound, Unauthenticated, ...), carrying the
daemon's message. docs/sessions.md is the manual.

The gRPC stubs are generated from proto/cachesvc/v1/cachesvc.proto at build time (CMake target
cachesvc_sessions_py) into <build>/client/python, which must be on sys.path with this package.
"""

from ._wire import Appended, BlockLocation, SessionInfo, SessionState
from .aio import AsyncClient, AsyncSession, AsyncToolCall
from .client import Client, Session, ToolCall
from .errors import (CachesvcError, DeadlineExceeded, FailedPrecondition, InvalidArgument,
                     NotFound, OutOfRange, PermissionDenied, ResourceExhausted, Unauthenticated,
                     Unavailable, Unimplemented)
from .layout import Layout

__all__ = [
    "Appended", "AsyncClient", "AsyncSession", "AsyncToolCall", "BlockLocation", "CachesvcError",
    "Client", "DeadlineExceeded", "FailedPrecondition", "InvalidArgument", "Layout", "NotFound",
    "OutOfRange", "PermissionDenied", "ResourceExhausted", "Session", "SessionInfo",
    "SessionState", "ToolCall", "Unauthenticated", "Unavailable", "Unimplemented",
]
