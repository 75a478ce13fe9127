"""Credentials for tests: provisioned tenants, API keys, and channels that carry them.

Most service tests are about something else than who calls; they get one key per
tenant holding every tenant role (`ALL_ROLES`), chosen by the request's `tenant`
field, as a client holding one credential per tenant would. Tests of the
boundary itself create narrower keys with `key_for`.
"""

from __future__ import annotations

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
    keys = KEYS.get(address, {})
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
        await tx.set_choices(tenant, customer_id, list(methods), False, "test-consent", 0)


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
