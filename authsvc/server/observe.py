"""The access log and RPC metrics: one line and one count per RPC, at its end, with its status.

`ObserveInterceptor` is the server's outermost interceptor, so it sees every
call that has a handler, refused ones included: the auth interceptor inside it
aborts with UNAUTHENTICATED or PERMISSION_DENIED, and the abort's status is
what is logged and counted. For each RPC it sets a `CallNote` (a context
variable of the RPC's task) that the layers inside fill in: the auth
interceptor the principal (or, for a refused key, the credential id it
claimed), the verification servicer the call id and tenant of a Verify stream's
start message. Unary requests give their `tenant` and `session_id` fields.

The line (logger `authsvc.access`, INFO; health and reflection at DEBUG, so a
load balancer's probes do not fill the log) names the method, the status code,
the latency, the principal and its roles, the tenant, the call id and the
peer, as `key=value` text and, with `authsvc serve --log-format json`, as
fields of the JSON object. Never a request or response body: no audio, key
events, scores, codes, assertions, API keys or status details (a message may
repeat what the caller sent). Values a caller chose (tenant, call id) are
logged only when they are valid identifiers, else as `<invalid>`: a secret
pasted into the wrong field is not repeated, and no request can forge a line.

Nothing is formatted when the logger's level filters the line out; the counts
are always kept (authsvc.metrics caches their label children).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from authsvc.identity.credentials import recordable_id
from authsvc.identity.principal import Principal
from authsvc.identity.roles import PUBLIC_PREFIXES
from authsvc.metrics import Metrics

ACCESS_LOGGER = "authsvc.access"
_OK = grpc.StatusCode.OK.name
_CANCELLED = grpc.StatusCode.CANCELLED.name
_UNKNOWN = grpc.StatusCode.UNKNOWN.name


def json_formatter() -> logging.Formatter:
    """One JSON object per record (python-json-logger): level, logger, message and timestamp, with
    a record's extra fields (the access line's method, code, latency_ms, ...) beside them."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
    )


class CallNote:
    """What the layers inside the interceptor learn about the RPC being handled."""

    __slots__ = ("call_id", "claimed", "principal", "tenant")

    def __init__(self) -> None:
        self.principal: Principal | None = None
        self.claimed = ""  # the credential a refused caller presented (its id, never the secret)
        self.tenant = ""
        self.call_id = ""


NOTE: contextvars.ContextVar[CallNote | None] = contextvars.ContextVar("call_note", default=None)


def note_principal(principal: Principal) -> None:
    note = NOTE.get()
    if note is not None:
        note.principal = principal


def note_claim(credential_id: str) -> None:
    note = NOTE.get()
    if note is not None:
        note.claimed = credential_id


def note_call(tenant: str, call_id: str = "") -> None:
    """A streaming RPC's tenant and call id, once its first message names them."""
    note = NOTE.get()
    if note is not None:
        note.tenant = tenant
        if call_id:
            note.call_id = call_id


INVALID = "<invalid>"
# A certificate subject or a peer address: printable, no spaces.
_PLAIN = re.compile(r"[!-~]{1,256}")


def _id(value: str) -> str:
    """A caller-chosen tenant or call id, logged only when it is a valid identifier and not an
    API key (its characters are an identifier's): a key pasted into the wrong field, or a
    forged log line, is not repeated."""
    return value if recordable_id(value) else INVALID


def _plain(value: str) -> str:
    return value if _PLAIN.fullmatch(value) else INVALID


def _field(request: Any, name: str) -> str:
    value = getattr(request, name, "")
    return value if isinstance(value, str) else ""


def _code(exc: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status an RPC that raised `exc` ends with."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return _CANCELLED
    code = context.code()  # set by abort() (AbortError), or by set_code() before raising
    if code is not None:
        return code.name
    return _UNKNOWN  # what grpc answers for an unhandled exception


class ObserveInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics, logger: logging.Logger | None = None) -> None:
        self.metrics = metrics
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler  # an unknown method: grpc answers UNIMPLEMENTED itself
        method = details.method
        level = logging.DEBUG if method.startswith(PUBLIC_PREFIXES) else logging.INFO
        done = self._done

        if handler.unary_unary or handler.unary_stream:
            if handler.unary_unary:
                inner = handler.unary_unary

                async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    note, start = _begin(request)
                    code = _OK
                    try:
                        response = await inner(request, context)
                        if context.code() is not None:
                            code = context.code().name
                        return response
                    except BaseException as exc:
                        code = _code(exc, context)
                        raise
                    finally:
                        done(method, level, code, start, note, context)

                return grpc.unary_unary_rpc_method_handler(
                    unary_unary, handler.request_deserializer, handler.response_serializer
                )
            inner_out = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                note, start = _begin(request)
                code = _OK
                try:
                    async for response in inner_out(request, context):
                        yield response
                except BaseException as exc:
                    code = _code(exc, context)
                    raise
                finally:
                    done(method, level, code, start, note, context)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_stream = handler.stream_stream

            async def stream_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                note, start = _begin(None)
                code = _OK
                try:
                    async for response in inner_stream(request_iterator, context):
                        yield response
                except BaseException as exc:
                    code = _code(exc, context)
                    raise
                finally:
                    done(method, level, code, start, note, context)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )
        inner_in = handler.stream_unary

        async def stream_unary(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            note, start = _begin(None)
            code = _OK
            try:
                response = await inner_in(request_iterator, context)
                if context.code() is not None:
                    code = context.code().name
                return response
            except BaseException as exc:
                code = _code(exc, context)
                raise
            finally:
                done(method, level, code, start, note, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )

    def _done(
        self,
        method: str,
        level: int,
        code: str,
        start: float,
        note: CallNote,
        context: grpc.aio.ServicerContext,
    ) -> None:
        seconds = time.perf_counter() - start
        self.metrics.rpc_done(method, code, seconds)
        if not self.log.isEnabledFor(level):
            return
        p = note.principal
        if p is not None:
            who, roles, authenticated = p.id, sorted(p.roles), True
            tenant = note.tenant or p.tenant
        else:
            who, roles, authenticated = _plain(note.claimed) if note.claimed else "", [], False
            tenant = note.tenant
        tenant = _id(tenant) if tenant else ""
        call = _id(note.call_id) if note.call_id else ""
        peer = _plain(context.peer() or "")
        ms = round(seconds * 1000, 1)
        self.log.log(
            level,
            "rpc method=%s code=%s ms=%.1f principal=%s roles=%s authenticated=%s tenant=%s call=%s peer=%s",
            method,
            code,
            ms,
            who or "-",
            ",".join(roles) or "-",
            "yes" if authenticated else "no",
            tenant or "-",
            call or "-",
            peer or "-",
            # The same facts as fields, for the JSON formatter (authsvc serve --log-format json).
            extra={
                "event": "rpc",
                "method": method,
                "code": code,
                "latency_ms": ms,
                "principal": who,
                "roles": roles,
                "authenticated": authenticated,
                "tenant": tenant,
                "call_id": call,
                "peer": peer,
            },
        )


def _begin(request: Any) -> tuple[CallNote, float]:
    note = CallNote()
    if request is not None:
        tenant, call_id = _field(request, "tenant"), _field(request, "session_id")
        note.tenant, note.call_id = tenant, call_id
    NOTE.set(note)  # the RPC's own task: its context ends with it, no reset needed
    return note, time.perf_counter()
