"""Domain errors -> canonical gRPC status with google.rpc details (grpcio-status).

INVALID_ARGUMENT carries a BadRequest naming the field; RESOURCE_EXHAUSTED (the
embedding queue is full) and UNAVAILABLE (the database cannot be reached) carry
a RetryInfo saying when to try again; every error
carries an ErrorInfo with a stable reason string a client program can switch on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from authsvc.errors import (
    AuthsvcError,
    ConfigError,
    EncoderMismatch,
    IntegrityError,
    InvalidInput,
    NotFound,
    Overloaded,
    PreconditionFailed,
)
from authsvc.stepup.assertions import AssertionRejected
from authsvc.stepup.lockout import LockedOut, RateLimited
from authsvc.store.base import StoreUnavailable

log = logging.getLogger(__name__)
DOMAIN = "authsvc.v1"

_CODES: list[tuple[type[AuthsvcError], int]] = [
    (InvalidInput, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (EncoderMismatch, code_pb2.FAILED_PRECONDITION),
    (IntegrityError, code_pb2.DATA_LOSS),
    (ConfigError, code_pb2.FAILED_PRECONDITION),
    (Overloaded, code_pb2.RESOURCE_EXHAUSTED),
    (RateLimited, code_pb2.RESOURCE_EXHAUSTED),
    (LockedOut, code_pb2.PERMISSION_DENIED),
    (PreconditionFailed, code_pb2.FAILED_PRECONDITION),
    (AssertionRejected, code_pb2.UNAUTHENTICATED),
    (StoreUnavailable, code_pb2.UNAVAILABLE),
]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: AuthsvcError) -> grpc.Status:
    code = next((c for t, c in _CODES if isinstance(exc, t)), code_pb2.INTERNAL)
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN))]
    if isinstance(exc, InvalidInput):
        violation = error_details_pb2.BadRequest.FieldViolation(field=exc.field, description=exc.description)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(retry_after * 1e9)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    message = getattr(exc, "public_message", None) or str(exc)
    return rpc_status.to_status(status_pb2.Status(code=code, message=message, details=details))


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _log_unavailable(exc: AuthsvcError, method: str) -> None:
    # The caller is told only that the database is unavailable; the operator needs which and why.
    if isinstance(exc, StoreUnavailable):
        log.warning("%s: %s", method, exc)


def unary_errors(fn: F) -> F:
    """Turns domain errors of a unary handler into statuses; anything else is INTERNAL, logged."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except AuthsvcError as exc:
            _log_unavailable(exc, fn.__name__)
            await context.abort_with_status(to_status(exc))
        except Exception:
            log.exception("unhandled error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server log")

    return wrapper  # type: ignore[return-value]


def stream_errors(fn: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """Same as `unary_errors`, for handlers that yield responses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in fn(self, request, context):
                yield item
        except AuthsvcError as exc:
            _log_unavailable(exc, fn.__name__)
            await context.abort_with_status(to_status(exc))
        except Exception:
            log.exception("unhandled error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server log")

    return wrapper
