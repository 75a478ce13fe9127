"""Per-tenant webhooks: a call's decisions POSTed to the tenant's URL, signed, retried.

Bridges carry audio one way; a CRM or an IVR that does not hold a watch stream learns the
outcome here. Every decision of a live call except PENDING updates (and every final one) is
sent as JSON without scores, thresholds or assertion tokens (the token is a bearer credential
for other channels: it stays on the call's own stream). Each delivery is signed Stripe-style:
`X-Authsvc-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, so a receiver can
refuse forgeries and replays, and carries `X-Authsvc-Delivery`, an id to de-duplicate retries.

A delivery that fails (a timeout, a connection error, 429 or 5xx) is retried after 1, 2, 4 and
8 s; any other answer ends it. Redirects are not followed and the URL must be https:// to a
public address (checked when set and again at every delivery, against DNS rebinding), unless
the service was started to allow plain http or private addresses (development and tests):
a tenant-admin must not be able to make the service call its own network. Deliveries run
beside the calls: a slow or dead endpoint never holds up a decision, and beyond
MAX_PENDING waiting deliveries new ones are dropped (counted).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from authsvc import crypto
from authsvc.errors import InvalidInput, NotFound
from authsvc.policy.engine import Decision, Outcome

log = logging.getLogger(__name__)
PURPOSE = "webhook"
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
TIMEOUT_S = 10.0
MAX_PENDING = 10_000
CONFIG_TTL_S = 30.0


@dataclass(frozen=True)
class WebhookConfig:
    tenant: str
    url: str
    secret: bytes
    created_ms: int


def _name(tenant: str) -> str:
    return f"{PURPOSE}/{tenant}"


class Webhooks:
    def __init__(self, vault, store, metrics, allow_http: bool = False, allow_private: bool = False) -> None:
        self.vault, self.store, self.metrics = vault, store, metrics
        self.allow_http, self.allow_private = allow_http, allow_private
        self._configs: dict[str, tuple[WebhookConfig | None, float]] = {}
        self._pending = 0
        self._tasks: set[asyncio.Task] = set()
        self._session = None

    # -- configuration --------------------------------------------------------------------

    async def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise InvalidInput("url", "the URL's port is not a port number") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidInput("url", "a webhook URL is https://HOST/PATH")
        if parts.scheme == "http" and not self.allow_http:
            raise InvalidInput("url", "a webhook URL must be https:// (decisions are personal data)")
        if parts.username or parts.password:
            raise InvalidInput("url", "a webhook URL may not carry credentials")
        if len(url) > 2048:
            raise InvalidInput("url", "longer than 2048 characters")
        await self._resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80))
        return url

    async def _resolve(self, host: str, port: int) -> list[tuple[int, str]]:
        """-> (family, address) of `host`, every one public (InvalidInput otherwise)."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidInput("url", f"{host} does not resolve ({exc})") from None
        out = []
        for family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if not self.allow_private and not public(address):
                raise InvalidInput("url", f"{host} resolves to a non-public address ({address}); not allowed")
            out.append((family, str(address)))
        return out

    async def set(self, tenant: str, url: str) -> tuple[WebhookConfig, str]:
        """Stores the tenant's webhook with a new secret; -> (config, the secret in base64)."""
        await self.check_url(url)
        secret = os.urandom(32)
        config = WebhookConfig(tenant, url, secret, int(time.time() * 1000))
        raw = json.dumps({"url": url, "secret": secret.hex(), "created_ms": config.created_ms}).encode()
        key = await self.vault.subkey(tenant, PURPOSE)
        blob = crypto.seal(key, raw, _name(tenant).encode())
        async with self.store.transaction() as tx:
            current = await tx.get_secret(_name(tenant), for_update=True)
            await tx.put_secret(_name(tenant), blob, current.version if current else 0)
        self._configs[tenant] = (config, time.monotonic())
        return config, base64.b64encode(secret).decode()

    async def get(self, tenant: str) -> WebhookConfig:
        config = await self._load(tenant)
        if config is None:
            raise NotFound(f"tenant {tenant} has no webhook")
        return config

    async def delete(self, tenant: str) -> bool:
        async with self.store.transaction() as tx:
            current = await tx.get_secret(_name(tenant), for_update=True)
            if current is not None:
                # An empty blob marks it deleted (the secrets table has no delete).
                await tx.put_secret(_name(tenant), b"", current.version)
        self._configs[tenant] = (None, time.monotonic())
        return current is not None and bool(current.blob)

    async def _load(self, tenant: str) -> WebhookConfig | None:
        async with self.store.transaction() as tx:
            secret = await tx.get_secret(_name(tenant))
        if secret is None or not secret.blob:
            return None
        key = await self.vault.subkey(tenant, PURPOSE)
        doc = json.loads(crypto.open_sealed(key, secret.blob, _name(tenant).encode(), f"{tenant}'s webhook"))
        return WebhookConfig(tenant, doc["url"], bytes.fromhex(doc["secret"]), doc["created_ms"])

    async def _config(self, tenant: str) -> WebhookConfig | None:
        """Cached for CONFIG_TTL_S, so another node's change is seen within it."""
        known = self._configs.get(tenant)
        if known is not None and time.monotonic() - known[1] < CONFIG_TTL_S:
            return known[0]
        config = await self._load(tenant)
        self._configs[tenant] = (config, time.monotonic())
        return config

    # -- deliveries -----------------------------------------------------------------------

    def notify(self, tenant: str, session_id: str, customer_id: str, decision: Decision) -> None:
        """Called for every decision of a live call (on the event loop; never blocks)."""
        if decision.outcome is Outcome.PENDING and not decision.final:
            return
        if self._pending >= MAX_PENDING:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            return
        self._pending += 1
        task = asyncio.get_running_loop().create_task(
            self._deliver(tenant, body(tenant, session_id, customer_id, decision))
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._pending -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed: %s", task.exception())

    async def _deliver(self, tenant: str, payload: bytes) -> None:
        config = await self._config(tenant)
        if config is None:
            return
        delivery = str(uuid.uuid4())
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S)):
            if delay:
                self.metrics.webhook_deliveries.labels("retried").inc()
                await asyncio.sleep(delay)
            status = await self._post(config, payload, delivery)
            if status is not None and (200 <= status < 300):
                self.metrics.webhook_deliveries.labels("delivered").inc()
                return
            if status is not None and status != 429 and status < 500:
                break  # the receiver refused it: sending it again would not help
            log.info("webhook %s for %s: attempt %d got %s", delivery, tenant, attempt + 1, status)
        self.metrics.webhook_deliveries.labels("failed").inc()
        log.warning("webhook %s for %s not delivered to %s", delivery, tenant, config.url)

    async def _post(self, config: WebhookConfig, payload: bytes, delivery: str) -> int | None:
        import aiohttp

        if self._session is None:
            # The connection goes to an address this resolver checked, not to a second lookup
            # of the name (which a rebinding DNS server could point at the service's network).
            connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self), use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            )
        stamp = str(int(time.time()))
        mac = hmac.new(config.secret, stamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "authsvc-webhooks/1",
            "X-Authsvc-Signature": f"t={stamp},v1={mac}",
            "X-Authsvc-Delivery": delivery,
        }
        try:
            async with self._session.post(
                config.url, data=payload, headers=headers, allow_redirects=False
            ) as r:
                return r.status
        except InvalidInput as exc:  # the name now resolves somewhere it may not go
            log.warning("webhook for %s: %s", config.tenant, exc.description)
            return 400
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if isinstance(exc.__cause__, InvalidInput):
                log.warning("webhook for %s: %s", config.tenant, exc.__cause__.description)
                return 400
            return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


# Ranges that carry an IPv4 address inside IPv6 (NAT64, 6to4, IPv4-compatible): the address
# they reach is the embedded one, which `is_global` does not look at.
_EMBEDDING = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "::/96")]


def public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return public(address.ipv4_mapped)
        if any(address in net for net in _EMBEDDING):
            return False
    return address.is_global


class _CheckedResolver:
    """aiohttp's resolver interface over Webhooks._resolve (public addresses only)."""

    def __init__(self, hooks: Webhooks) -> None:
        self.hooks = hooks

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        return [
            {
                "hostname": host,
                "host": a,
                "port": port,
                "family": f,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for f, a in await self.hooks._resolve(host, port)
        ]

    async def close(self) -> None:
        return None


def body(tenant: str, session_id: str, customer_id: str, d: Decision) -> bytes:
    """The decision as a webhook receiver gets it: what a caller-facing principal sees."""
    return json.dumps(
        {
            "type": "decision",
            "tenant": tenant,
            "session_id": session_id,
            "customer_id": customer_id,
            "sequence": d.sequence,
            "outcome": d.outcome.name,
            "final": d.final,
            "reason": d.summary or d.reason,
            "net_speech_seconds": round(d.net_speech_s, 2),
            "methods": list(d.methods),
            "assurance_level": d.assurance_level,
            "attempts_remaining": d.attempts_remaining,
            "fraud": {r.detector: r.level for r in d.fraud.risks},
            "sent_unix": int(time.time()),
        },
        separators=(",", ":"),
    ).encode()
