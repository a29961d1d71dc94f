"""What the blocking and the asyncio clients share: the generated stubs, the bearer metadata,
channel credentials, argument checks, request building and response conversion.

Internal: the public names are re-exported by the package.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from typing import Iterable

import grpc

from .errors import InvalidArgument
from .layout import Layout

try:
    # Generated at build time by CMake (target cachesvc_sessions_py) into
    # <build>/client/python/cachesvc_sessions_gen/; that folder must be on sys.path.
    from cachesvc_sessions_gen.cachesvc.v1 import cachesvc_pb2 as pb2
    from cachesvc_sessions_gen.cachesvc.v1 import cachesvc_pb2_grpc as pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "cachesvc_sessions: the generated gRPC stubs (cachesvc_sessions_gen) are not importable. "
        "Build them with `cmake --build <build> --target cachesvc_sessions_py` and put "
        "<build>/client/python on PYTHONPATH.") from e

# pb2 and pb2_grpc are the clients' handles on the stubs.
__all__ = ["pb2", "pb2_grpc", "Appended", "BlockLocation", "SessionInfo", "SessionState"]

_U32_MAX = 2**32 - 1
_U64_MAX = 2**64 - 1
_MAX_NAME_BYTES = 256


class SessionState(enum.IntEnum):
    """cachesvc.v1.SessionState."""

    UNSPECIFIED = 0
    RUNNING = 1        # the model is producing tokens for it
    WAITING_TOOL = 2   # a tool call is in progress
    IDLE = 3           # neither running nor in a tool call
    CLOSED = 4         # closed; takes no more changes


_TIER_NAMES = {pb2.TIER_HBM: "hbm", pb2.TIER_HOST: "host", pb2.TIER_NVME: "nvme"}
_CODEC_NAMES = {pb2.CODEC_RAW: "raw", pb2.CODEC_TQ3: "tq3", pb2.CODEC_TQ4: "tq4"}


@dataclasses.dataclass(frozen=True)
class BlockLocation:
    """One full block of a session's context: its key and the tiers holding a copy."""

    key: str                 # 32 lowercase hex digits (proto/KEYS.md)
    tiers: tuple[str, ...]   # "hbm", "host", "nvme"; empty when no tier holds it any longer
    codec: str               # codec of the fastest copy: "raw", "tq3", "tq4" ("" if none)


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """What GetSession reports (cachesvc.v1.SessionInfo), in Python terms."""

    session_id: str
    client_session_id: str
    layout_fingerprint: int
    state: SessionState
    tool_name: str                     # when WAITING_TOOL, else ""
    expected_s: float | None           # the estimate the service plans with, when WAITING_TOOL
    context_tokens: int
    tokens: list[int] | None           # only when asked for with include_tokens=True
    blocks: list[BlockLocation]
    parent_session_id: str             # set for a fork
    pinned_until_unix_s: float | None  # None when not pinned


@dataclasses.dataclass(frozen=True)
class Appended:
    """What AppendTokens reports: the context's size after the append."""

    context_tokens: int
    full_blocks: int


def info_from_proto(m, include_tokens: bool) -> SessionInfo:
    waiting = m.state == pb2.SESSION_WAITING_TOOL
    return SessionInfo(
        session_id=m.session_id,
        client_session_id=m.client_session_id,
        layout_fingerprint=m.layout_fingerprint,
        state=SessionState(m.state) if m.state in SessionState._value2member_map_
        else SessionState.UNSPECIFIED,
        tool_name=m.tool_name,
        expected_s=m.expected_ms / 1000.0 if waiting else None,
        context_tokens=m.context_tokens,
        tokens=list(m.tokens) if include_tokens else None,
        blocks=[BlockLocation(key=b.key.key.hex(),
                              tiers=tuple(_TIER_NAMES.get(t, str(t)) for t in b.tiers),
                              codec=_CODEC_NAMES.get(b.codec, "")) for b in m.blocks],
        parent_session_id=m.parent_session_id,
        pinned_until_unix_s=m.pinned_until_unix_ms / 1000.0 if m.pinned_until_unix_ms else None)


# ---- credentials and metadata -------------------------------------------------------------

def auth_metadata(token: str | None) -> tuple:
    """The metadata every call carries: ("authorization", "Bearer <token>"), as
    cachesvc/tenants.cc Authenticate expects; none in open mode (token None)."""
    if token is None:
        return ()
    if not isinstance(token, str) or not token or not all(" " < c < "\x7f" for c in token):
        raise InvalidArgument("token must be a non-empty string of printable ASCII without spaces "
                              "(the bearer token, not its hash)")
    return (("authorization", "Bearer " + token),)


def channel_credentials(tls_root) -> grpc.ChannelCredentials | None:
    """None for plaintext; TLS with the system roots for True, with the PEM bytes given, or with
    the PEM file at the path given."""
    if tls_root is None or tls_root is False:
        return None
    if tls_root is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls_root, (bytes, bytearray)):
        return grpc.ssl_channel_credentials(root_certificates=bytes(tls_root))
    if isinstance(tls_root, (str, os.PathLike)):
        try:
            with open(tls_root, "rb") as f:
                return grpc.ssl_channel_credentials(root_certificates=f.read())
        except OSError as e:
            raise InvalidArgument(f"tls_root: cannot read {os.fspath(tls_root)!r}: {e.strerror}")
    raise InvalidArgument(f"tls_root must be None, True, PEM bytes or a path, got {tls_root!r}")


def check_address(address) -> str:
    if not isinstance(address, str) or not address:
        raise InvalidArgument(f"address must be 'host:port' (or 'unix:/path'), got {address!r}")
    return address


def check_timeout(timeout_s) -> float | None:
    if timeout_s is None:
        return None
    if (not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool)
            or not math.isfinite(timeout_s) or timeout_s <= 0):
        raise InvalidArgument(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)


# ---- arguments ----------------------------------------------------------------------------

def _check_name(field: str, value, method: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a str, got {value!r}", method=method)
    n = len(value.encode("utf-8"))
    if (required and n == 0) or n > _MAX_NAME_BYTES:
        lo = 1 if required else 0
        raise InvalidArgument(f"{field} must be {lo}..{_MAX_NAME_BYTES} bytes, got {n}",
                              method=method)
    return value


def check_session_id(session_id) -> str:
    return _check_name("session_id", session_id, "", required=True)


def check_tokens(tokens: Iterable[int], method: str) -> list[int]:
    """Token ids as a list of ints in [0, 2**32); InvalidArgument naming the first bad one."""
    if isinstance(tokens, (str, bytes)) or not hasattr(tokens, "__iter__"):
        raise InvalidArgument(f"tokens must be a sequence of token ids, got {type(tokens).__name__}",
                              method=method)
    out = []
    for i, t in enumerate(tokens):
        if hasattr(t, "__index__") and not isinstance(t, bool):
            t = t.__index__()  # numpy integers, torch scalars via int()
        if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= _U32_MAX:
            raise InvalidArgument(f"tokens[{i}] = {t!r}: token ids are integers in [0, 2**32)",
                                  method=method)
        out.append(t)
    return out


def seconds_to_ms(field: str, seconds, method: str, *, zero_ok: bool) -> int:
    """Seconds as the uint32 milliseconds the wire carries. A positive duration never rounds to
    0 (which means "none" on the wire)."""
    if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
            or not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_ok)):
        want = "a non-negative" if zero_ok else "a positive"
        raise InvalidArgument(f"{field} = {seconds!r}: must be {want} number of seconds",
                              method=method)
    ms = round(seconds * 1000)
    if seconds > 0:
        ms = max(ms, 1)
    if ms > _U32_MAX:
        raise InvalidArgument(f"{field} = {seconds!r} s does not fit the wire's uint32 "
                              "milliseconds", method=method)
    return ms


def layout_fingerprint(layout) -> int:
    """The fingerprint of `layout`: an int as given, or a Layout's computed one."""
    if isinstance(layout, Layout):
        return layout.fingerprint()
    if isinstance(layout, int) and not isinstance(layout, bool):
        if not 0 < layout <= _U64_MAX:
            raise InvalidArgument(f"layout_fingerprint = {layout}: must be in (0, 2**64)",
                                  method="OpenSession")
        return layout
    raise InvalidArgument("open_session needs a layout fingerprint (int, as RegisterEngine "
                          f"returned it) or a cachesvc_sessions.Layout, got {layout!r}",
                          method="OpenSession")


# ---- requests -----------------------------------------------------------------------------

def open_request(layout, client_session_id, tokens) -> "pb2.OpenSessionRequest":
    return pb2.OpenSessionRequest(
        layout_fingerprint=layout_fingerprint(layout),
        client_session_id=_check_name("client_session_id", client_session_id, "OpenSession",
                                      required=False),
        tokens=check_tokens(tokens, "OpenSession") if tokens is not None else [])


def append_request(session_id: str, tokens) -> "pb2.AppendTokensRequest":
    return pb2.AppendTokensRequest(session_id=session_id,
                                   tokens=check_tokens(tokens, "AppendTokens"))


def begin_request(session_id: str, tool_name, expected_s) -> "pb2.BeginToolCallRequest":
    name = _check_name("tool_name", tool_name, "BeginToolCall", required=True)
    expected_ms = 0 if expected_s is None else seconds_to_ms("expected_s", expected_s,
                                                             "BeginToolCall", zero_ok=False)
    return pb2.BeginToolCallRequest(session_id=session_id, tool_name=name, expected_ms=expected_ms)


def fork_request(session_id: str, client_session_id) -> "pb2.ForkSessionRequest":
    return pb2.ForkSessionRequest(
        session_id=session_id,
        client_session_id=_check_name("client_session_id", client_session_id, "ForkSession",
                                      required=False))


def truncate_request(session_id: str, keep_tokens) -> "pb2.TruncateSessionRequest":
    if not isinstance(keep_tokens, int) or isinstance(keep_tokens, bool) or keep_tokens < 0:
        raise InvalidArgument(f"keep_tokens = {keep_tokens!r}: must be a non-negative int",
                              method="TruncateSession")
    return pb2.TruncateSessionRequest(session_id=session_id, keep_tokens=keep_tokens)


def pin_request(session_id: str, seconds) -> "pb2.PinSessionRequest":
    return pb2.PinSessionRequest(
        session_id=session_id,
        duration_ms=seconds_to_ms("seconds", seconds, "PinSession", zero_ok=True))

