"""Exceptions of the cachesvc connector: one class per gRPC/absl status code.

Every failed connector call raises a ConnectorError subclass carrying the status code name
(``code``) and the message the connector or the daemon gave (``message``). Classes that mean
"your input is wrong" are also ValueErrors, "cannot reach the daemon" a ConnectionError, and a
timeout a TimeoutError, so callers can catch them the usual Python way.

What each code means to an engine (proto/ documents the full set):
  InvalidArgument   a bad layout, paged cache, token or page id; nothing was sent or changed.
  Unavailable       the daemon cannot be reached or died mid-call: recompute, retry later.
  DeadlineExceeded  the daemon did not answer in time: recompute.
  FailedPrecondition  calls out of order (SaveLayer before BeginSave, no paged cache, closed).
  Unauthenticated / PermissionDenied  the token.
"""

from __future__ import annotations

# absl::StatusCode values (equal to grpc::StatusCode).
CODE_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
    13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


class ConnectorError(Exception):
    """A connector call failed. ``code``: the status code name; ``message``: why."""

    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class InvalidArgument(ConnectorError, ValueError):
    code = "INVALID_ARGUMENT"


class OutOfRange(ConnectorError, ValueError):
    code = "OUT_OF_RANGE"


class Unavailable(ConnectorError, ConnectionError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ConnectorError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


class NotFound(ConnectorError):
    code = "NOT_FOUND"


class FailedPrecondition(ConnectorError):
    code = "FAILED_PRECONDITION"


class Unauthenticated(ConnectorError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ConnectorError):
    code = "PERMISSION_DENIED"


class ResourceExhausted(ConnectorError):
    code = "RESOURCE_EXHAUSTED"


class Unimplemented(ConnectorError):
    code = "UNIMPLEMENTED"


class Internal(ConnectorError):
    code = "INTERNAL"


class DataLoss(ConnectorError):
    code = "DATA_LOSS"


_BY_CODE = {cls.code: cls for cls in (
    InvalidArgument, OutOfRange, Unavailable, DeadlineExceeded, NotFound, FailedPrecondition,
    Unauthenticated, PermissionDenied, ResourceExhausted, Unimplemented, Internal, DataLoss)}


def from_status(code: int, message: str) -> ConnectorError:
    """The exception for an absl/gRPC status (called by the extension on every failure)."""
    name = CODE_NAMES.get(code, f"CODE_{code}")
    return _BY_CODE.get(name, ConnectorError)(message, name)
