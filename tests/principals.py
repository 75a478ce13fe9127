"""Credentials for tests: provisioned tenants, API keys, and channels that carry them.

Most service tests are about something else than who calls; they get one key per
tenant holding every tenant role (`ALL_ROLES`), chosen by the request's `tenant`
field, as a client holding one credential per tenant would. Tests of the
boundary itself create narrower keys with `key_for`.
"""

from __future__ import annotations

import time

import grpc

from authsvc.identity.roles import AGENT, ENROLLMENT, EVIDENCE, TELEPHONY, TENANT_ADMIN

ALL_ROLES = (TELEPHONY, AGENT, ENROLLMENT, TENANT_ADMIN, EVIDENCE)
TENANTS = ("acme", "bank", "shop", "globex", "bank2", "clinic")
# address -> tenant -> API key, for helpers that open their own channels (tests/wire.stream).
KEYS: dict[str, dict[str, str]] = {}


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


async def ensure_tenant(ctx, name: str, sector: str = "general") -> None:
    if await ctx.tenants.find(name) is None:
        await ctx.tenants.create(name, sector, "test")


async def key_for(ctx, tenant: str, *roles: str, sector: str = "general", expires_ms: int = 0) -> str:
    """A new API key of `tenant` (provisioned if needed) with `roles`."""
    if tenant:
        await ensure_tenant(ctx, tenant, sector)
    _, key = await ctx.credentials.create_api_key(tenant, roles, "test", expires_ms, "test")
    return key


async def provision(ctx, address: str, tenants: tuple[str, ...] = TENANTS) -> dict[str, str]:
    keys = {t: await key_for(ctx, t, *ALL_ROLES) for t in tenants}
    KEYS[address] = keys
    return keys


def key_of_request(address: str, request) -> str | None:
    """The key of the tenant the request names; a request naming none gets the first tenant's
    (a client's default credential), so malformed requests reach the servicer's validation."""
    return key_in(KEYS.get(address, {}), request)


def key_in(keys: dict[str, str], request) -> str | None:
    """The key of the tenant `request` names (a unary request's `tenant`, a stream's start)."""
    tenant = getattr(request, "tenant", "") or ""
    if not tenant and request is not None and hasattr(request, "start") and request.HasField("start"):
        tenant = request.start.tenant
    return keys.get(tenant) or next(iter(keys.values()), None)


class TenantKeys(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the key of the request's tenant to each unary call that carries none."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or ())
        key = key_of_request(self.address, request)
        if key and not any(k == "authorization" for k, _ in metadata):
            metadata.append(("authorization", f"Bearer {key}"))
        details = grpc.aio.ClientCallDetails(
            client_call_details.method,
            client_call_details.timeout,
            grpc.aio.Metadata(*metadata),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


ALL_METHODS = ("voice", "typing", "totp", "one_time_code")


async def register_direct(
    store, tenant: str, customer_id: str, methods: tuple[str, ...] = ALL_METHODS
) -> None:
    """Records a registration with consent straight in the store (tests below the API)."""
    async with store.transaction() as tx:
        await tx.lock_customer(tenant, customer_id)
        await tx.set_choices(
            tenant, customer_id, list(methods), False, "test-consent", int(time.time() * 1000)
        )


async def register(channel, tenant: str, customer_id: str, methods: tuple[str, ...] = ALL_METHODS):
    """RegisterCustomer with consent for `methods` over an aio channel."""
    from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
    from authsvc.server.convert import METHOD_PB

    return await enrollment_pb2_grpc.EnrollmentServiceStub(channel).RegisterCustomer(
        enrollment_pb2.RegisterCustomerRequest(
            tenant=tenant,
            customer_id=customer_id,
            methods=[METHOD_PB[m] for m in methods],
            consent_text_version="test-consent",
        ),
        timeout=30,
    )


async def ensure_registered(channel, tenant: str, customer_id: str) -> None:
    """Registers the customer for every method unless they already have a registration."""
    from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc

    try:
        c = await enrollment_pb2_grpc.EnrollmentServiceStub(channel).GetCustomer(
            enrollment_pb2.GetCustomerRequest(tenant=tenant, customer_id=customer_id), timeout=30
        )
        if c.HasField("consent"):
            return
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
    await register(channel, tenant, customer_id)


class TenantKeysSync(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """The blocking client's `TenantKeys`: unary calls by their `tenant`, streams by their start."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    def _with_key(self, details, request):
        key = key_in(self.keys, request)
        metadata = list(details.metadata or ())
        if key and not any(k == "authorization" for k, _ in metadata):
            metadata.append(("authorization", f"Bearer {key}"))
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._with_key(client_call_details, request), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        import itertools

        requests = iter(request_iterator)
        first = next(requests, None)
        chained = itertools.chain([first] if first is not None else [], requests)
        return continuation(self._with_key(client_call_details, first), chained)


def keyed_channel(address: str, keys: dict[str, str]) -> grpc.Channel:
    """A blocking channel that sends each request with its tenant's key."""
    return grpc.intercept_channel(grpc.insecure_channel(address), TenantKeysSync(keys))


def provision_remote(
    address: str, admin_key: str, tenants: tuple[str, ...] = TENANTS, roles: tuple[str, ...] = ALL_ROLES
) -> dict[str, str]:
    """Provisions tenants and a key each on a running server, as a platform-admin would."""
    from authsvc.api.v1 import identity_pb2, identity_pb2_grpc

    keys = {}
    with grpc.insecure_channel(address) as ch:
        tenants_stub = identity_pb2_grpc.TenantServiceStub(ch)
        creds = identity_pb2_grpc.CredentialServiceStub(ch)
        for t in tenants:
            try:
                tenants_stub.CreateTenant(
                    identity_pb2.CreateTenantRequest(name=t, sector="general"),
                    metadata=bearer(admin_key),
                    timeout=30,
                )
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            reply = creds.CreateApiKey(
                identity_pb2.CreateApiKeyRequest(tenant=t, roles=roles, description="test"),
                metadata=bearer(admin_key),
                timeout=30,
            )
            keys[t] = reply.api_key
    KEYS[address] = keys
    return keys
