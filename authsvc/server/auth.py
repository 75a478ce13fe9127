"""The auth interceptor: every RPC but health (and reflection, when enabled) gets a principal.

A request's credential is an `authorization: Bearer <api key>` header or, on a
mutual-TLS connection, the client certificate's identity (its SAN URIs and DNS
names, read with `cryptography`) mapped in the store. The principal is checked
against `authsvc.identity.roles.METHODS` (role and scope; for unary requests
the `tenant` field too) before the servicer runs, and handed to it through
`authsvc.identity.principal.CURRENT`. Refusals are answered UNAUTHENTICATED or
PERMISSION_DENIED with an ErrorInfo reason, and audited with their source.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from cryptography import x509

from authsvc.errors import PermissionDenied, Unauthenticated
from authsvc.identifiers import is_id
from authsvc.identity.credentials import Credentials, key_id
from authsvc.identity.principal import CURRENT, Principal
from authsvc.identity.refusals import RefusalLog
from authsvc.identity.roles import METHODS, PUBLIC_PREFIXES, Scope
from authsvc.identity.tenants import Tenants
from authsvc.server.errors import to_status
from authsvc.server.observe import note_claim, note_principal
from authsvc.store.base import StoreUnavailable

log = logging.getLogger(__name__)


def certificate_subjects(auth_context: dict[str, list[bytes]]) -> list[str]:
    """The SAN URIs, then DNS names, of the verified client certificate (empty without one)."""
    pems = auth_context.get("x509_pem_cert") or []
    if not pems:
        return []
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [*san.get_values_for_type(x509.UniformResourceIdentifier), *san.get_values_for_type(x509.DNSName)]


def _bearer(metadata: tuple[Any, ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = (value if isinstance(value, str) else value.decode()).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("CREDENTIAL_INVALID", "authorization must be 'Bearer <api key>'")
            return token.strip()
    return None


class Authorizer:
    """Authenticates a call and checks its grant; also the tenant check of streaming RPCs."""

    def __init__(self, credentials: Credentials, refusals: RefusalLog, tenants: Tenants) -> None:
        self.credentials = credentials
        self.refusals = refusals
        self.tenants = tenants

    async def authenticate(
        self, metadata: tuple[Any, ...] | None, context: grpc.aio.ServicerContext
    ) -> Principal:
        source = context.peer() or ""
        key = _bearer(metadata)
        if key is not None:
            note_claim(key_id(key))  # the access log names what a refused caller presented
            return await self.credentials.authenticate_key(key, source)
        subjects = certificate_subjects(context.auth_context())
        if subjects:
            note_claim(subjects[0])
            return await self.credentials.authenticate_certificate(subjects, source)
        raise Unauthenticated(
            "CREDENTIAL_MISSING",
            "no credential: send 'authorization: Bearer <api key>' or a client certificate",
        )

    @staticmethod
    def check_method(principal: Principal, method: str) -> Scope:
        rule = METHODS.get(method)
        if rule is None:
            raise PermissionDenied(
                "METHOD_NOT_LISTED", f"{method} is not in the role table; nobody may call it"
            )
        if not principal.roles & rule.roles:
            raise PermissionDenied(
                "ROLE_NOT_GRANTED",
                f"{method.rsplit('/', 1)[-1]} needs one of the roles {', '.join(sorted(rule.roles))}",
            )
        return rule.scope

    @staticmethod
    def check_tenant(principal: Principal, scope: Scope, tenant: str) -> None:
        if scope is Scope.PLATFORM:
            return
        if scope is Scope.CREDENTIALS and principal.platform:
            return
        if not principal.tenant or tenant != principal.tenant:
            raise PermissionDenied(
                "TENANT_NOT_GRANTED", "the credential does not grant access to this tenant"
            )

    async def trail(self, principal: Principal | None, tenant: str) -> str:
        """Whose audit trail a refusal goes to. An anonymous caller's goes to the platform's: it
        must not be able to write into (or, naming made-up tenants, create) tenants' trails. A
        principal's goes to the tenant it knocked on when that tenant exists, else its own."""
        if principal is None:
            return ""
        if tenant and tenant != principal.tenant and is_id(tenant) and await self.tenants.find(tenant):
            return tenant
        return principal.tenant

    async def authorize(
        self,
        method: str,
        metadata: tuple[Any, ...] | None,
        context: grpc.aio.ServicerContext,
        request: Any = None,
    ) -> Principal:
        tenant = _field(request, "tenant")
        principal: Principal | None = None
        try:
            principal = await self.authenticate(metadata, context)
            note_principal(principal)
            scope = self.check_method(principal, method)
            if request is not None:
                self.check_tenant(principal, scope, tenant)
            return principal
        except StoreUnavailable as exc:
            log.warning("%s: cannot authenticate: %s", method, exc)
            await context.abort_with_status(to_status(exc))
            raise  # abort raises; this line is for type checkers
        except (Unauthenticated, PermissionDenied) as exc:
            await self._audit(context, principal, method, exc, tenant, _field(request, "customer_id"))
            await context.abort_with_status(to_status(exc))
            raise

    async def require_tenant(
        self,
        principal: Principal,
        method: str,
        tenant: str,
        context: grpc.aio.ServicerContext,
        customer_id: str = "",
    ) -> None:
        """For a streaming RPC, once its first message names the tenant; raises PermissionDenied
        (audited here: the servicer's error handler only answers it)."""
        try:
            self.check_tenant(principal, METHODS[method].scope, tenant)
        except PermissionDenied as exc:
            await self._audit(context, principal, method, exc, tenant, customer_id)
            exc.audited = True
            raise

    async def _audit(
        self,
        context: grpc.aio.ServicerContext,
        principal: Principal | None,
        method: str,
        exc: Unauthenticated | PermissionDenied,
        tenant: str,
        customer_id: str,
    ) -> None:
        await self.refusals.refused(
            await self.trail(principal, tenant),
            context.peer() or "",
            principal.id if principal else "anonymous",
            method,
            exc.reason,
            customer_id,
            claimed_tenant=tenant,
        )


def _field(request: Any, name: str) -> str:
    if request is None:
        return ""
    try:
        return str(getattr(request, name))
    except AttributeError:
        return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        metadata = details.invocation_metadata
        authorize = self.authorizer.authorize
        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = CURRENT.set(await authorize(method, metadata, context, request))
                try:
                    return await inner(request, context)
                finally:
                    CURRENT.reset(token)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream:
            inner_stream = handler.stream_stream

            async def stream_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                token = CURRENT.set(await authorize(method, metadata, context))
                try:
                    async for response in inner_stream(request_iterator, context):
                        yield response
                finally:
                    CURRENT.reset(token)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream, handler.request_deserializer, handler.response_serializer
            )

        if handler.unary_stream:
            inner_out = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = CURRENT.set(await authorize(method, metadata, context, request))
                try:
                    async for response in inner_out(request, context):
                        yield response
                finally:
                    CURRENT.reset(token)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        # Client streaming: as for stream-stream, the servicer checks the tenant of its first message.
        inner_in = handler.stream_unary

        async def stream_unary(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            token = CURRENT.set(await authorize(method, metadata, context))
            try:
                return await inner_in(request_iterator, context)
            finally:
                CURRENT.reset(token)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
