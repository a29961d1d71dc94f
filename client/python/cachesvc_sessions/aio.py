"""The asyncio session client (grpc.aio): AsyncClient and AsyncSession mirror Client and Session
call for call, with ``await`` and ``async with``.

Create an AsyncClient inside the event loop that uses it (a grpc.aio channel belongs to the loop
that was running when it was made) and ``await client.close()`` (or ``async with``) when done.
"""

from __future__ import annotations

import grpc
import grpc.aio

from . import _wire
from ._wire import Appended, SessionInfo, pb2, pb2_grpc
from .client import note_suppressed
from .errors import CachesvcError, from_rpc_error


class AsyncClient:
    """As Client (same arguments), for asyncio."""

    def __init__(self, address: str, token: str | None = None, tls_root=None, *,
                 timeout_s: float | None = 10.0, channel_options=None):
        address = _wire.check_address(address)
        self._metadata = _wire.auth_metadata(token)
        self._timeout_s = _wire.check_timeout(timeout_s)
        creds = _wire.channel_credentials(tls_root)
        options = list(channel_options or [])
        self._channel = (grpc.aio.secure_channel(address, creds, options) if creds is not None
                         else grpc.aio.insecure_channel(address, options))
        self._sessions = pb2_grpc.SessionServiceStub(self._channel)
        self._blocks = pb2_grpc.BlockServiceStub(self._channel)
        self.address = address

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, method: str, rpc, request):
        try:
            return await rpc(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.RpcError as e:  # grpc.aio.AioRpcError is one
            raise from_rpc_error(e, method) from None

    async def open_session(self, layout, client_session_id: str | None = None,
                           tokens=None) -> "AsyncSession":
        """As Client.open_session."""
        request = _wire.open_request(layout, client_session_id, tokens)
        response = await self._call("OpenSession", self._sessions.OpenSession, request)
        return AsyncSession(self, response.session_id)

    def session(self, session_id: str) -> "AsyncSession":
        """As Client.session: a handle on an existing session; makes no call."""
        return AsyncSession(self, _wire.check_session_id(session_id))

    async def register_layout(self, layout: "_wire.Layout") -> int:
        """As Client.register_layout."""
        if not isinstance(layout, _wire.Layout):
            raise _wire.InvalidArgument(f"register_layout needs a Layout, got {layout!r}",
                                        method="RegisterEngine")
        request = pb2.RegisterEngineRequest(layout=layout.to_proto(pb2))
        response = await self._call("RegisterEngine", self._blocks.RegisterEngine, request)
        return response.layout_fingerprint


class AsyncToolCall:
    """``async with session.tool_call(name, expected_s=...) as call:``; as ToolCall."""

    def __init__(self, session: "AsyncSession", tool_name: str, expected_s: float | None):
        self._session = session
        self.tool_name = tool_name
        self.expected_s = expected_s
        self.planned_s: float | None = None
        self.elapsed_s: float | None = None

    async def __aenter__(self) -> "AsyncToolCall":
        self.planned_s = await self._session.begin_tool_call(self.tool_name, self.expected_s)
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            self.elapsed_s = await self._session.end_tool_call()
        except CachesvcError as end_error:
            if exc is None:
                raise
            note_suppressed(exc, end_error, f"EndToolCall of {self.tool_name!r}")
        return False


class AsyncSession:
    """As Session, for asyncio: every call is a coroutine; ``async with`` closes it."""

    def __init__(self, client: AsyncClient, session_id: str):
        self._client = client
        self.id = session_id
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncSession({self.id!r})"

    async def _call(self, method: str, request):
        return await self._client._call(method, getattr(self._client._sessions, method), request)

    async def append(self, tokens) -> Appended:
        r = await self._call("AppendTokens", _wire.append_request(self.id, tokens))
        return Appended(context_tokens=r.context_tokens, full_blocks=r.full_blocks)

    def tool_call(self, tool_name: str, expected_s: float | None = None) -> AsyncToolCall:
        _wire.begin_request(self.id, tool_name, expected_s)  # bad arguments fail here
        return AsyncToolCall(self, tool_name, expected_s)

    async def begin_tool_call(self, tool_name: str, expected_s: float | None = None) -> float:
        r = await self._call("BeginToolCall", _wire.begin_request(self.id, tool_name, expected_s))
        return r.expected_ms / 1000.0

    async def end_tool_call(self) -> float:
        r = await self._call("EndToolCall", pb2.EndToolCallRequest(session_id=self.id))
        return r.elapsed_ms / 1000.0

    async def fork(self, client_session_id: str | None = None) -> "AsyncSession":
        r = await self._call("ForkSession", _wire.fork_request(self.id, client_session_id))
        return AsyncSession(self._client, r.session_id)

    async def truncate(self, keep_tokens: int) -> int:
        r = await self._call("TruncateSession", _wire.truncate_request(self.id, keep_tokens))
        return r.context_tokens

    async def pin(self, seconds: float) -> None:
        await self._call("PinSession", _wire.pin_request(self.id, seconds))

    async def info(self, include_tokens: bool = False) -> SessionInfo:
        r = await self._call("GetSession",
                             pb2.GetSessionRequest(session_id=self.id,
                                                   include_tokens=bool(include_tokens)))
        return _wire.info_from_proto(r, bool(include_tokens))

    async def close(self) -> None:
        if self._closed:
            return
        await self._call("CloseSession", pb2.CloseSessionRequest(session_id=self.id))
        self._closed = True

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        try:
            await self.close()
        except CachesvcError as close_error:
            if exc is None:
                raise
            note_suppressed(exc, close_error, f"CloseSession of {self.id}")
        return False
