"""WebhookService: a tenant's webhook (tenant-admin), proto in, authsvc.webhooks call, proto out."""

from __future__ import annotations

import grpc

from authsvc.api.v1 import webhooks_pb2, webhooks_pb2_grpc
from authsvc.context import ServiceContext
from authsvc.server.errors import principal, unary_errors
from authsvc.webhooks import WebhookConfig


def _pb(c: WebhookConfig) -> webhooks_pb2.Webhook:
    return webhooks_pb2.Webhook(tenant=c.tenant, url=c.url, created_unix_ms=c.created_ms)


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @unary_errors
    async def SetWebhook(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        await self.ctx.tenants.get(request.tenant)
        config, secret = await self.ctx.webhooks.set(request.tenant, request.url)  # type: ignore[union-attr]
        await self.ctx.auditor.record(
            request.tenant, "webhook.set", "", "set", principal().id, url=config.url
        )
        return webhooks_pb2.SetWebhookResponse(webhook=_pb(config), secret=secret)

    @unary_errors
    async def GetWebhook(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        return _pb(await self.ctx.webhooks.get(request.tenant))  # type: ignore[union-attr]

    @unary_errors
    async def DeleteWebhook(self, request, context: grpc.aio.ServicerContext):  # noqa: N802
        deleted = await self.ctx.webhooks.delete(request.tenant)  # type: ignore[union-attr]
        if deleted:
            await self.ctx.auditor.record(request.tenant, "webhook.delete", "", "deleted", principal().id)
        return webhooks_pb2.DeleteWebhookResponse(deleted=deleted)
