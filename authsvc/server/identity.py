"""TenantService and CredentialService: proto in, identity call, proto out."""

from __future__ import annotations

import base64
import re

import grpc

from authsvc.api.v1 import identity_pb2, identity_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.errors import InvalidInput
from authsvc.identifiers import check_id
from authsvc.identity.bridge_secrets import audiohook_client_secret, set_twilio_auth_token
from authsvc.identity.credentials import redacted
from authsvc.identity.roles import TELEPHONY
from authsvc.server.errors import principal, unary_errors
from authsvc.store.base import CredentialRecord, TenantRecord


def tenant_pb(t: TenantRecord) -> identity_pb2.Tenant:
    return identity_pb2.Tenant(
        name=t.name, sector=t.sector, created_unix_ms=t.created_ms, created_by=t.created_by
    )


def credential_pb(c: CredentialRecord) -> identity_pb2.Credential:
    c = redacted(c)
    return identity_pb2.Credential(
        id=c.id,
        tenant=c.tenant,
        kind=c.kind,
        roles=list(c.roles),
        subject=c.subject,
        description=c.description,
        created_unix_ms=c.created_ms,
        created_by=c.created_by,
        expires_unix_ms=c.expires_ms,
        revoked_unix_ms=c.revoked_ms,
        last_used_unix_ms=c.last_used_ms,
    )


class TenantServicer(identity_pb2_grpc.TenantServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def CreateTenant(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        return tenant_pb(await self.ctx.tenants.create(request.name, request.sector, principal().id))

    @unary_errors
    async def GetTenant(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.name, "name")
        return tenant_pb(await self.ctx.tenants.get(request.name))

    @unary_errors
    async def ListTenants(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        return identity_pb2.ListTenantsResponse(tenants=[tenant_pb(t) for t in await self.ctx.tenants.list()])


class CredentialServicer(identity_pb2_grpc.CredentialServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def CreateApiKey(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        if request.audiohook_client_secret and (not request.tenant or TELEPHONY not in request.roles):
            raise InvalidInput("audiohook_client_secret", "an AudioHook key is a telephony key of a tenant")
        record, key = await self.ctx.credentials.create_api_key(
            request.tenant, list(request.roles), request.description, request.expires_unix_ms, principal().id
        )
        secret = ""
        if request.audiohook_client_secret:
            raw = await audiohook_client_secret(self.ctx.vault, record.tenant, record.id)
            secret = base64.b64encode(raw).decode()
        return identity_pb2.CreateApiKeyResponse(
            credential=credential_pb(record), api_key=key, audiohook_client_secret=secret
        )

    @unary_errors
    async def MapCertificate(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        record = await self.ctx.credentials.map_certificate(
            request.tenant,
            request.subject,
            list(request.roles),
            request.description,
            request.expires_unix_ms,
            principal().id,
        )
        return credential_pb(record)

    @unary_errors
    async def ListCredentials(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        records = await self.ctx.credentials.list(request.tenant)
        return identity_pb2.ListCredentialsResponse(credentials=[credential_pb(r) for r in records])

    @unary_errors
    async def RevokeCredential(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        return credential_pb(
            await self.ctx.credentials.revoke(request.tenant, request.credential_id, principal().id)
        )

    @unary_errors
    async def SetTwilioAuthToken(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        check_id(request.tenant, "tenant")
        token = request.auth_token
        if not re.fullmatch(r"[0-9A-Za-z]{16,128}", token):
            raise InvalidInput("auth_token", "a Twilio auth token is 16-128 letters and digits")
        await self.ctx.tenants.get(request.tenant)  # NotFound for a tenant never provisioned
        await set_twilio_auth_token(self.ctx.vault, self.ctx.store, request.tenant, token)
        await self.ctx.auditor.record(request.tenant, "bridge.twilio_token", "", "set", principal().id)
        return identity_pb2.SetTwilioAuthTokenResponse(stream_path=f"/twilio/{request.tenant}")
