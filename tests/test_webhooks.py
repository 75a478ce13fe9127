"""Per-tenant webhooks of call decisions (issue 12).

A real HTTP receiver (aiohttp's server) takes the deliveries and checks the signature with the
secret SetWebhook showed once. Attacks: a webhook pointed at the service's own network
(loopback, private, link-local: SSRF), plain http, credentials in the URL, a redirect to
somewhere else, a receiver that hangs (it must never hold up a call), forged deliveries (the
signature covers the timestamp and the body).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json

import grpc
import pytest
from aiohttp import web

from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.api.v1 import webhooks_pb2, webhooks_pb2_grpc
from authsvc.identity.roles import TENANT_ADMIN
from authsvc.webhooks import Webhooks
from tests.principals import bearer, key_for
from tests.test_service_assurance import _enroll_voice, _speakers
from tests.wire import call_requests, stream


class Receiver:
    """An HTTP endpoint that records what it is sent; `answers` are the statuses it gives."""

    def __init__(self, answers: list[int] | None = None, hang: asyncio.Event | None = None) -> None:
        self.answers, self.hang = list(answers or []), hang
        self.got: list[tuple[str, dict, bytes]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, dict(request.headers), await request.read()))
        self.arrived.set()
        if self.hang is not None:
            await self.hang.wait()
        status = self.answers.pop(0) if self.answers else 200
        if status == 302:
            return web.Response(status=302, headers={"Location": "/elsewhere"})
        return web.Response(status=status)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"

    async def stop(self) -> None:
        await self.runner.cleanup()


def _allow_local(ctx) -> None:
    """The test's receiver is on loopback over http: what `serve --webhook-allow-http
    --webhook-allow-private` allows (development only)."""
    ctx.webhooks = Webhooks(ctx.vault, ctx.store, ctx.metrics, allow_http=True, allow_private=True)
    ctx.calls.observer = ctx.webhooks.notify


async def _set(address: str, key: str, url: str) -> webhooks_pb2.SetWebhookResponse:
    async with grpc.aio.insecure_channel(address) as ch:
        return await webhooks_pb2_grpc.WebhookServiceStub(ch).SetWebhook(
            webhooks_pb2.SetWebhookRequest(tenant="shop", url=url), metadata=bearer(key)
        )


def _verify(secret_b64: str, headers: dict, raw: bytes) -> dict:
    fields = dict(part.split("=", 1) for part in headers["X-Authsvc-Signature"].split(","))
    expected = hmac.new(
        base64.b64decode(secret_b64), fields["t"].encode() + b"." + raw, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected), "the signature covers the timestamp and the body"
    return json.loads(raw)


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1:9/hook", "https"),
        ("https://127.0.0.1/hook", "non-public"),
        ("https://10.1.2.3/hook", "non-public"),
        ("https://169.254.169.254/latest/meta-data", "non-public"),
        ("https://[::1]/hook", "non-public"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("ftp://example.com/hook", "https://"),
    ],
)
async def test_a_webhook_cannot_point_at_the_services_own_network_or_go_unencrypted(svc, url, words):
    _, ctx, _, address, _ = svc
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _set(address, admin, url)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in err.value.details()


async def test_decisions_are_delivered_signed_without_scores_and_retried_until_taken(svc, speech):
    channel, ctx, _, address, _ = svc
    _allow_local(ctx)
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ida", target[:4])
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    receiver = Receiver(answers=[503, 503])  # the first delivery is taken at its third attempt
    url = await receiver.start()
    try:
        reply = await _set(address, admin, url)
        assert reply.webhook.url == url and reply.secret
        decisions = await asyncio.to_thread(stream, address, call_requests("shop", "ida", target[5]))
        assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
        sent = [d for d in decisions if d.outcome != V.OUTCOME_PENDING or d.final]
        for _ in range(200):
            if (
                len({h["X-Authsvc-Delivery"] for _, h, _ in receiver.got}) >= len(sent)
                and len(receiver.got) >= len(sent) + 2
            ):
                break
            await asyncio.sleep(0.1)
        bodies = {}
        for _, headers, raw in receiver.got:
            bodies.setdefault(headers["X-Authsvc-Delivery"], []).append(_verify(reply.secret, headers, raw))
        assert len(bodies) == len(sent), "one delivery per decision but PENDING updates"
        # The two 503s went to whichever deliveries came first (they run concurrently).
        retried = [b for b in bodies.values() if len(b) > 1]
        assert retried and all(b.count(b[0]) == len(b) for b in retried), "a retry is the same delivery"
        assert sum(len(b) for b in bodies.values()) == len(sent) + 2
        received = sorted((b[0] for b in bodies.values()), key=lambda b: b["sequence"])
        assert [b["sequence"] for b in received] == [d.sequence for d in sent]
        assert received[-1]["final"] and received[-1]["outcome"] == "AUTHENTICATED"
        text = b"".join(raw for _, _, raw in receiver.got).decode()
        assert "score" not in text and "llr" not in text and "token" not in text, "no oracle, no bearer token"
        assert all(b["customer_id"] == "ida" and b["session_id"] == "call-1" for b in received)
    finally:
        await receiver.stop()
    assert ctx.metrics.webhook_deliveries.labels("delivered")._value.get() == len(sent)


async def test_a_redirect_is_not_followed_and_a_hanging_receiver_never_holds_up_the_call(svc, speech):
    channel, ctx, _, address, _ = svc
    _allow_local(ctx)
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "jon", target[:4])
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    release = asyncio.Event()
    receiver = Receiver(hang=release)
    url = await receiver.start()
    try:
        await _set(address, admin, url)
        decisions = await asyncio.to_thread(stream, address, call_requests("shop", "jon", target[5]))
        await asyncio.wait_for(receiver.arrived.wait(), 30)
        assert decisions[-1].final, "the call ended while its webhook was still unanswered"
        assert not release.is_set()
        release.set()
    finally:
        await receiver.stop()
    redirecting = Receiver(answers=[302] * 20)
    url = await redirecting.start()
    try:
        await _set(address, admin, url)
        await asyncio.to_thread(stream, address, call_requests("shop", "jon", target[6]))
        await asyncio.wait_for(redirecting.arrived.wait(), 30)
        await asyncio.sleep(0.5)
        assert all(path == "/hook" for path, _, _ in redirecting.got), "a redirect is never followed"
    finally:
        await redirecting.stop()
