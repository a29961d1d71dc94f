"""Exceptions of the session client: one class per gRPC status code the daemon answers.

Every error the client raises is a ``CachesvcError``; ``code`` is the ``grpc.StatusCode``,
``message`` the daemon's own text (it names the bad field or value), ``method`` the RPC. What a
caller should do with each code is fixed by proto/cachesvc/v1/cachesvc.proto:

  InvalidArgument     malformed request; do not retry unchanged. Also raised by the client itself,
                      before any call, for a value it can tell is wrong (a negative token id, a
                      negative pin). Subclasses ValueError.
  NotFound            no such session or layout for this tenant; another tenant's session is
                      NotFound too. Subclasses LookupError.
  FailedPrecondition  wrong state: appending to a closed session, ending a tool call never begun.
  OutOfRange          truncating past the end of the context.
  ResourceExhausted   a tier or the tenant's session quota is full; retry later or with less.
  Unauthenticated     no token, or one the daemon does not know.
  PermissionDenied    the call is not allowed from here (e.g. Drain from another host).
  Unavailable         the daemon is starting, draining, overloaded or unreachable; retry with
                      backoff.
  DeadlineExceeded    the call's timeout passed first.
  Unimplemented       this daemon does not offer the call.
  Internal, DataLoss, Cancelled, Unknown, ...: the base class with the code set.
"""

from __future__ import annotations

import grpc


class CachesvcError(Exception):
    """A call to the daemon failed. ``code``: grpc.StatusCode; ``message``: the daemon's text."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, method: str = "", code: grpc.StatusCode | None = None):
        if code is not None:
            self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{self.code.name}: {message}")


class InvalidArgument(CachesvcError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CachesvcError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(CachesvcError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(CachesvcError):
    code = grpc.StatusCode.OUT_OF_RANGE


class ResourceExhausted(CachesvcError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(CachesvcError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(CachesvcError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(CachesvcError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(CachesvcError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(CachesvcError):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, OutOfRange, ResourceExhausted,
                Unauthenticated, PermissionDenied, Unavailable, DeadlineExceeded, Unimplemented)
}


def from_rpc_error(error: grpc.RpcError, method: str) -> CachesvcError:
    """The exception for a failed call (grpc.RpcError or grpc.aio.AioRpcError)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    message = details or str(error)
    cls = _BY_CODE.get(code)
    if cls is None:
        return CachesvcError(message, method=method, code=code)
    return cls(message, method=method)
