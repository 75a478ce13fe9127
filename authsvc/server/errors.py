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
    AlreadyExists,
    AuthsvcError,
    ConfigError,
    EncoderMismatch,
    IntegrityError,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    PreconditionFailed,
    Unauthenticated,
)
from authsvc.identity.principal import CURRENT, Principal
from authsvc.stepup.assertions import AssertionRejected
from authsvc.stepup.lockout import LockedOut, RateLimited
from authsvc.store.base import StoreUnavailable

log = logging.getLogger(__name__)
DOMAIN = "authsvc.v1"

_CODES: list[tuple[type[AuthsvcError], int]] = [
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
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


def principal() -> Principal:
    """The authenticated caller of the running RPC (set by the auth interceptor)."""
    p = CURRENT.get()
    if p is None:  # a servicer reached without the interceptor: a wiring bug, never an open door
        raise PermissionDenied("NO_PRINCIPAL", "the request was not authenticated")
    return p


async def _log(servicer: Any, exc: AuthsvcError, method: str, request: Any) -> None:
    # The caller is told only that the database is unavailable; the operator needs which and why.
    if isinstance(exc, StoreUnavailable):
        log.warning("%s: %s", method, exc)
    if isinstance(exc, PermissionDenied | Unauthenticated) and not getattr(exc, "audited", False):
        # A refusal by the domain (a replacement not authorized): audited like the interceptor's.
        p = CURRENT.get()
        await servicer.ctx.refusals.refused(
            getattr(request, "tenant", "") or (p.tenant if p else ""),
            p.source if p else "",
            p.id if p else "anonymous",
            method,
            exc.reason,
            getattr(request, "customer_id", ""),
        )


def unary_errors(fn: F) -> F:
    """Turns domain errors of a unary handler into statuses; anything else is INTERNAL, logged."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await fn(self, request, context)
        except AuthsvcError as exc:
            await _log(self, exc, fn.__name__, request)
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
            await _log(self, exc, fn.__name__, None)
            await context.abort_with_status(to_status(exc))
        except Exception:
            log.exception("unhandled error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see server log")

    return wrapper
