"""The blocking session client: Client (one gRPC channel to the daemon, one tenant's token) and
Session (one agent conversation: its context, tool calls, forks, pin, close).

Threads: a Client and its Sessions may be used from several threads at once (a gRPC channel is
thread-safe and a Session holds no state but its id and a closed flag). Each call has a deadline
(``timeout_s``, 10 s by default) and raises a cachesvc_sessions.CachesvcError subclass on failure;
nothing is retried: UNAVAILABLE is the caller's to retry with backoff.

Close the Client (or use it as a context manager) when done: a daemon draining on SIGTERM waits
for open channels.
"""

from __future__ import annotations

import logging

import grpc

from . import _wire
from ._wire import Appended, SessionInfo, pb2, pb2_grpc
from .errors import CachesvcError, from_rpc_error

_log = logging.getLogger("cachesvc_sessions")


def note_suppressed(primary: BaseException, secondary: CachesvcError, what: str) -> None:
    """Keeps `primary` (the caller's own exception) propagating, with `secondary` recorded on it:
    a failed cleanup call must not hide why the block failed."""
    _log.warning("cachesvc: %s failed while %s propagated: %s", what, type(primary).__name__,
                 secondary)
    if hasattr(primary, "add_note"):
        primary.add_note(f"cachesvc: {what} failed too: {secondary}")


class Client:
    """A connection to the daemon's SessionService as one tenant.

    address: "host:port" (e.g. "127.0.0.1:50051") or "unix:/path".
    token: the tenant's bearer token; None for a daemon in open mode (no [[tenants]]).
    tls_root: None for plaintext; PEM bytes or a PEM file path of the CA that signed the
      daemon's certificate; True for the system's roots.
    timeout_s: deadline of each call.
    """

    def __init__(self, address: str, token: str | None = None, tls_root=None, *,
                 timeout_s: float | None = 10.0, channel_options=None):
        address = _wire.check_address(address)
        self._metadata = _wire.auth_metadata(token)
        self._timeout_s = _wire.check_timeout(timeout_s)
        creds = _wire.channel_credentials(tls_root)
        options = list(channel_options or [])
        self._channel = (grpc.secure_channel(address, creds, options) if creds is not None
                         else grpc.insecure_channel(address, options))
        self._sessions = pb2_grpc.SessionServiceStub(self._channel)
        self._blocks = pb2_grpc.BlockServiceStub(self._channel)
        self.address = address

    # -- lifetime --
    def close(self) -> None:
        """Closes the channel; Sessions of this client can make no more calls."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls --
    def _call(self, method: str, rpc, request):
        try:
            return rpc(request, metadata=self._metadata, timeout=self._timeout_s)
        except grpc.RpcError as e:
            raise from_rpc_error(e, method) from None
        except ValueError as e:  # e.g. a call on a closed channel
            raise CachesvcError(str(e), method=method, code=grpc.StatusCode.CANCELLED) from None

    def open_session(self, layout, client_session_id: str | None = None,
                     tokens=None) -> "Session":
        """Opens a session for `layout`: the fingerprint (int) an engine of this tenant
        registered, or a cachesvc_sessions.Layout (its fingerprint is computed here). `tokens`:
        optional initial context (system prompt, tool definitions). NotFound when no engine of
        this tenant registered the layout since the daemon started."""
        request = _wire.open_request(layout, client_session_id, tokens)
        response = self._call("OpenSession", self._sessions.OpenSession, request)
        return Session(self, response.session_id)

    def session(self, session_id: str) -> "Session":
        """A handle on an existing session of this tenant (e.g. opened by another process). Makes
        no call; a wrong id fails with NotFound on first use."""
        return Session(self, _wire.check_session_id(session_id))

    def register_layout(self, layout: "_wire.Layout") -> int:
        """Registers `layout` as an engine would (BlockService.RegisterEngine) and returns its
        fingerprint. An engine's connector normally does this; an agent framework needs it only
        when it runs before, or without, an engine (demos, tests)."""
        if not isinstance(layout, _wire.Layout):
            raise _wire.InvalidArgument(f"register_layout needs a Layout, got {layout!r}",
                                        method="RegisterEngine")
        request = pb2.RegisterEngineRequest(layout=layout.to_proto(pb2))
        return self._call("RegisterEngine", self._blocks.RegisterEngine,
                          request).layout_fingerprint


class ToolCall:
    """``with session.tool_call(name, expected_s=...) as call:`` — BeginToolCall on enter,
    EndToolCall on exit, also when the block raises (the block's exception is the one that
    propagates; a failed EndToolCall is then logged and noted on it).

    planned_s: the estimate the service plans with (yours, or the learned median when
      expected_s was None); set on enter.
    elapsed_s: the duration the service measured and learned; set on exit.
    """

    def __init__(self, session: "Session", tool_name: str, expected_s: float | None):
        self._session = session
        self.tool_name = tool_name
        self.expected_s = expected_s
        self.planned_s: float | None = None
        self.elapsed_s: float | None = None

    def __enter__(self) -> "ToolCall":
        self.planned_s = self._session.begin_tool_call(self.tool_name, self.expected_s)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.elapsed_s = self._session.end_tool_call()
        except CachesvcError as end_error:
            if exc is None:
                raise
            note_suppressed(exc, end_error, f"EndToolCall of {self.tool_name!r}")
        return False


class Session:
    """One session of the daemon: an agent conversation's context and state.

    A context manager: ``with client.open_session(...) as s:`` closes it on exit.
    """

    def __init__(self, client: Client, session_id: str):
        self._client = client
        self.id = session_id
        self._closed = False

    def __repr__(self) -> str:
        return f"Session({self.id!r})"

    def _call(self, method: str, request):
        return self._client._call(method, getattr(self._client._sessions, method), request)

    def append(self, tokens) -> Appended:
        """Appends token ids (a turn: the user's message, the model's answer, a tool's result)
        to the context; the session is running. FailedPrecondition while a tool call is open."""
        r = self._call("AppendTokens", _wire.append_request(self.id, tokens))
        return Appended(context_tokens=r.context_tokens, full_blocks=r.full_blocks)

    def tool_call(self, tool_name: str, expected_s: float | None = None) -> ToolCall:
        """A context manager for one tool call; see ToolCall. expected_s: your estimate of the
        tool's duration in seconds, or None to let the service use what it learned of
        `tool_name` (the median of its last 256 calls; 4 s before any)."""
        _wire.begin_request(self.id, tool_name, expected_s)  # bad arguments fail here
        return ToolCall(self, tool_name, expected_s)

    def begin_tool_call(self, tool_name: str, expected_s: float | None = None) -> float:
        """BeginToolCall on its own, for frameworks whose tool start and end are two callbacks.
        Returns the estimate the service plans with, in seconds."""
        r = self._call("BeginToolCall", _wire.begin_request(self.id, tool_name, expected_s))
        return r.expected_ms / 1000.0

    def end_tool_call(self) -> float:
        """EndToolCall on its own. Returns the measured duration in seconds."""
        r = self._call("EndToolCall", pb2.EndToolCallRequest(session_id=self.id))
        return r.elapsed_ms / 1000.0

    def fork(self, client_session_id: str | None = None) -> "Session":
        """A child session with this one's context, sharing its blocks (for a sub-agent)."""
        r = self._call("ForkSession", _wire.fork_request(self.id, client_session_id))
        return Session(self._client, r.session_id)

    def truncate(self, keep_tokens: int) -> int:
        """Cuts the context to its first `keep_tokens` tokens (rewind); returns the new size."""
        return self._call("TruncateSession",
                          _wire.truncate_request(self.id, keep_tokens)).context_tokens

    def pin(self, seconds: float) -> None:
        """Asks the service to keep the session's blocks in a fast tier for `seconds` from now;
        0 unpins."""
        self._call("PinSession", _wire.pin_request(self.id, seconds))

    def info(self, include_tokens: bool = False) -> SessionInfo:
        """The session as the service holds it (GetSession)."""
        r = self._call("GetSession",
                       pb2.GetSessionRequest(session_id=self.id,
                                             include_tokens=bool(include_tokens)))
        return _wire.info_from_proto(r, bool(include_tokens))

    def close(self) -> None:
        """Closes the session; the service stops holding blocks for it. A second close through
        this handle does nothing."""
        if self._closed:
            return
        self._call("CloseSession", pb2.CloseSessionRequest(session_id=self.id))
        self._closed = True

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.close()
        except CachesvcError as close_error:
            if exc is None:
                raise
            note_suppressed(exc, close_error, f"CloseSession of {self.id}")
        return False
