"""Genesys Cloud AudioHook server (protocol version 2) over WebSocket.

Genesys forks a conversation's audio to this endpoint: an HTTP upgrade signed with HTTP
Message Signatures (hmac-sha256 over the request target, authority and the Audiohook-* and
X-API-KEY headers), then JSON control messages (open/opened, ping/pong, paused/resumed,
update, discarded, error, close/closed; the server may send disconnect) and binary frames of
PCMU at 8 kHz, interleaved in the order of the channels the server chose. Only the customer
channel ("external") is ever scored: the agent's voice is never taken for the caller's.

Authentication: X-API-KEY is an authsvc API key with the telephony role; the client secret
that signs the upgrade is derived from the tenant's data key and the key's id
(authsvc.identity.bridge_secrets), shown once when the key is created. A bad or missing key,
role or signature is refused at the upgrade with 401/403 and audited; a signature's nonce is
accepted once. The call's id is the open message's conversationId (what the agent desktop
knows); its customer comes from customConfig.customerId or later by ClaimIdentity.
Protocol errors end the session with disconnect(reason "error") and a reason, counted in
metrics; a connection that goes silent is closed after the idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from authsvc.audio.codecs import Encoding
from authsvc.bridges.base import BridgeCall, WebSocketBridge, check_grant, peer, refused
from authsvc.context import ServiceContext
from authsvc.errors import AuthsvcError, PermissionDenied, Unauthenticated
from authsvc.identifiers import is_id
from authsvc.identity.bridge_secrets import audiohook_client_secret
from authsvc.identity.principal import Principal

log = logging.getLogger(__name__)
BRIDGE = "audiohook"
VERSION = "2"
# The protocol's limit for a text message, and the largest audio frame accepted (1 s of stereo).
MAX_MESSAGE = 65536
# Components the upgrade's signature must cover (the protocol's list).
SIGNED = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
MAX_SIGNATURE_AGE_S = 10
CLOCK_SKEW_S = 3
MIN_NONCE = 22
CUSTOMER = "external"
# After a disconnect or an error, how long the peer has to answer with close.
CLOSE_WAIT_S = 5.0
_DURATION = re.compile(r"^PT(?:\d*\.)?\d+S$")


class ProtocolError(Exception):
    """A message the protocol does not allow here: the session ends with disconnect(error)."""

    def __init__(self, reason: str, info: str) -> None:
        super().__init__(info)
        self.reason, self.info = reason, info


@dataclass
class _Upgrade:
    """The upgrade request as http_message_signatures reads a message."""

    url: str
    headers: dict[str, str]
    request_target: str
    method: str = "GET"


class _OneKey(HTTPSignatureKeyResolver):
    def __init__(self, key_id: str, secret: bytes) -> None:
        self.key_id, self.secret = key_id, secret

    def resolve_public_key(self, key_id: str):
        return self.secret if key_id == self.key_id else None

    def resolve_private_key(self, key_id: str):
        raise NotImplementedError("the server only verifies")


class _Verifier(HTTPMessageVerifier):
    max_clock_skew = datetime.timedelta(seconds=CLOCK_SKEW_S)


class Nonces:
    """Signature nonces seen within their validity, so a captured upgrade cannot be replayed.
    Kept per tenant, each with its own limit: one tenant flooding upgrades refuses only its own
    (rather than forget nonces still valid), never another tenant's."""

    def __init__(self, ttl_s: float = MAX_SIGNATURE_AGE_S + 2 * CLOCK_SKEW_S, limit: int = 20_000) -> None:
        self.ttl_s, self.limit = ttl_s, limit
        self._seen: dict[str, dict[str, float]] = {}

    def first_use(self, tenant: str, nonce: str) -> bool:
        now = time.monotonic()
        seen = self._seen.setdefault(tenant, {})
        if len(seen) >= self.limit or len(seen) % 1024 == 0:
            seen = self._seen[tenant] = {n: t for n, t in seen.items() if t > now}
        if seen.get(nonce, 0) > now or len(seen) >= self.limit:
            return False
        seen[nonce] = now + self.ttl_s
        return True


class AudioHookServer(WebSocketBridge):
    """The WebSocket endpoint; one `_Session` per connection."""

    bridge = BRIDGE
    max_message = MAX_MESSAGE

    def __init__(
        self,
        ctx: ServiceContext,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/audiohook",
        idle_s: float = 30.0,
        ssl: Any = None,
    ) -> None:
        super().__init__(ctx, host, port, idle_s, ssl)
        self.path = path
        self.nonces = Nonces()

    # -- the upgrade ----------------------------------------------------------------------

    async def authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        source = peer(connection.remote_address)
        if request.path.split("?", 1)[0] != self.path:
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        principal: Principal | None = None
        try:
            key = request.headers.get("X-API-KEY")
            if not key:
                raise Unauthenticated("CREDENTIAL_MISSING", "X-API-KEY is required")
            principal = await self.ctx.credentials.authenticate_key(key, source)
            check_grant(principal, BRIDGE)
            await self._check_signature(principal, key, request)
        except (Unauthenticated, PermissionDenied) as exc:
            await refused(self.ctx, BRIDGE, source, exc, principal)
            status = HTTPStatus.FORBIDDEN if isinstance(exc, PermissionDenied) else HTTPStatus.UNAUTHORIZED
            return connection.respond(status, f"{exc.reason}: {exc}\n")
        except AuthsvcError as exc:  # the store is unreachable: try again later
            log.warning("audiohook upgrade from %s: %s", source, exc)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        connection.principal = principal  # type: ignore[attr-defined]
        return None

    async def _check_signature(self, principal: Principal, key: str, request: Request) -> None:
        headers = request.headers
        for name in ("Audiohook-Organization-Id", "Audiohook-Session-Id", "Audiohook-Correlation-Id"):
            if not headers.get(name):
                raise Unauthenticated("SIGNATURE_INVALID", f"{name} is required")
        secret = await audiohook_client_secret(self.ctx.vault, principal.tenant, principal.id)
        message = _Upgrade(
            url=f"http://{headers.get('Host', '')}{request.path}",
            headers=_single(headers),
            request_target=request.path,
        )
        verifier = _Verifier(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=_OneKey(key, secret))
        try:
            (result,) = verifier.verify(
                message, max_age=datetime.timedelta(seconds=MAX_SIGNATURE_AGE_S), require_components=SIGNED
            )
        except (InvalidSignature, ValueError) as exc:
            raise Unauthenticated(
                "SIGNATURE_INVALID", f"the request signature does not verify ({exc})"
            ) from None
        nonce = result.parameters.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < MIN_NONCE:
            raise Unauthenticated(
                "SIGNATURE_INVALID", f"the signature needs a nonce of {MIN_NONCE}+ characters"
            )
        if not self.nonces.first_use(principal.tenant, f"{principal.id}:{nonce}"):
            raise Unauthenticated("SIGNATURE_REPLAYED", "this signature was already used")

    async def session(self, connection: ServerConnection, principal: Principal) -> str:
        return await _Session(self, connection, principal).run()


class _Session:
    """One AudioHook session: the protocol's state machine around one call."""

    def __init__(self, server: AudioHookServer, connection: ServerConnection, principal: Principal) -> None:
        self.server, self.ws, self.principal = server, connection, principal
        self.ctx = server.ctx
        self.id = connection.request.headers.get("Audiohook-Session-Id", "")
        self.org = connection.request.headers.get("Audiohook-Organization-Id", "")
        self.seq = 0  # the server's last seq
        self.client_seq = 0
        self.state = "opening"
        self.channels: list[str] = []
        self.call: BridgeCall | None = None

    async def run(self) -> str:
        try:
            if not _is_uuid(self.id):
                raise ProtocolError("error", "Audiohook-Session-Id is not a UUID")
            while self.state != "closed":
                try:
                    async with asyncio.timeout(self.server.idle_s):
                        message = await self.ws.recv()
                except TimeoutError:
                    self._count("idle")
                    await self._disconnect("error", f"no message for {self.server.idle_s:g} s")
                    return "idle"
                if isinstance(message, bytes):
                    await self._audio(message)
                else:
                    await self._text(message)
            return "completed"
        except ProtocolError as exc:
            self._count(exc.info.split(":", 1)[0][:60])
            await self._disconnect(exc.reason, exc.info)
            return "protocol_error"
        except ConnectionClosed:
            return "completed" if self.state == "closed" else "dropped"
        finally:
            await self._end_call()

    def _count(self, reason: str) -> None:
        self.ctx.metrics.bridge_errors.labels(BRIDGE, reason).inc()

    async def _send(self, kind: str, parameters: dict | None = None) -> None:
        self.seq += 1
        message = {
            "version": VERSION,
            "type": kind,
            "id": self.id,
            "seq": self.seq,
            "clientseq": self.client_seq,
            "parameters": parameters or {},
        }
        await self.ws.send(json.dumps(message))

    async def _disconnect(self, reason: str, info: str) -> None:
        """Ends the session from our side: disconnect, then the peer's close is answered with
        closed (the protocol's close transaction); a peer that does not answer is cut off."""
        if self.state == "closed":
            return
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            await self._send("disconnect", {"reason": reason, "info": info[:400]})
            self.state = "closing"
            async with asyncio.timeout(CLOSE_WAIT_S):
                while True:
                    message = await self.ws.recv()
                    if isinstance(message, str) and _message_type(message) == "close":
                        self.client_seq = _seq_of(message, self.client_seq)
                        await self._end_call()
                        await self._send("closed")
                        break
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.state = "closed"

    # -- messages -------------------------------------------------------------------------

    async def _text(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            raise ProtocolError("error", "invalid JSON: text message not valid JSON") from None
        if not isinstance(message, dict):
            raise ProtocolError("error", "malformed message: not a JSON object")
        if message.get("version") != VERSION:
            raise ProtocolError("error", f"unsupported version: {str(message.get('version'))[:20]!r}")
        if message.get("id") != self.id:
            raise ProtocolError("error", "session mismatch: id is not this session's")
        seq, serverseq = message.get("seq"), message.get("serverseq")
        if type(seq) is not int or seq != self.client_seq + 1:
            raise ProtocolError("error", "invalid seq: not monotonically increasing")
        if type(serverseq) is not int or not 0 <= serverseq <= self.seq:
            raise ProtocolError("error", "invalid serverseq")
        parameters = message.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ProtocolError("error", "invalid parameters: not an object")
        self.client_seq = seq
        kind = message.get("type")
        handler = {
            "open": self._open,
            "ping": self._ping,
            "close": self._close,
            "update": self._ignore,
            "paused": self._paused,
            "resumed": self._resumed,
            "discarded": self._ignore,
            "error": self._client_error,
        }.get(kind if isinstance(kind, str) else "")
        if handler is None:
            raise ProtocolError("error", f"unsupported message: {str(kind)[:40]!r} is not a client message")
        if kind != "open" and self.state == "opening":
            raise ProtocolError("error", f"before open: {kind!r} before the open transaction")
        await handler(parameters)

    async def _open(self, p: dict) -> None:
        if self.state != "opening":
            raise ProtocolError("error", "second open: the session is already open")
        if p.get("organizationId") != self.org:
            raise ProtocolError(
                "unauthorized", "organization mismatch: organizationId is not the signed header's"
            )
        conversation = p.get("conversationId")
        if not isinstance(conversation, str) or not is_id(conversation):
            raise ProtocolError("error", "invalid conversationId")
        chosen = _choose_media(p.get("media"))
        config = p.get("customConfig") or {}
        customer = config.get("customerId", "") if isinstance(config, dict) else ""
        if customer and (not isinstance(customer, str) or not is_id(customer)):
            raise ProtocolError("error", "invalid customConfig.customerId")
        if chosen is not None:
            try:
                self.call = await BridgeCall.open(
                    self.ctx, BRIDGE, self.principal, conversation, customer, Encoding.MULAW, 8000
                )
            except AuthsvcError as exc:
                raise ProtocolError("error", f"session refused: {exc}") from None
            self.channels = chosen["channels"]
        self.state = "active"
        await self._send("opened", {"media": [chosen] if chosen is not None else [], "startPaused": False})

    async def _audio(self, frame: bytes) -> None:
        if self.state == "opening":
            raise ProtocolError("error", "audio before open: no media was negotiated yet")
        if self.state != "active" or self.call is None:
            return  # paused, closing, or no customer channel negotiated: nothing to score
        n = len(self.channels)
        if len(frame) % n:
            raise ProtocolError(
                "error", f"bad frame: {len(frame)} bytes is not a whole number of {n}-channel samples"
            )
        if frame:
            await self.call.audio(frame[self.channels.index(CUSTOMER) :: n])

    async def _ping(self, p: dict) -> None:
        await self._send("pong")

    async def _close(self, p: dict) -> None:
        self.state = "closing"
        await self._end_call()
        await self._send("closed")
        self.state = "closed"

    async def _paused(self, p: dict) -> None:
        if self.state == "active":
            self.state = "paused"

    async def _resumed(self, p: dict) -> None:
        if self.state == "paused":
            self.state = "active"

    async def _client_error(self, p: dict) -> None:
        log.info(
            "audiohook %s: the client reported error %s: %s",
            self.id,
            p.get("code"),
            str(p.get("message"))[:200],
        )

    async def _ignore(self, p: dict) -> None:
        return None

    async def _end_call(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            await call.finish()


def _choose_media(offers: Any) -> dict | None:
    """The stereo offer (external and internal, as Genesys streams a conversation), else the
    customer's channel alone; None when no offer carries the customer (an agent-only stream:
    nothing to score, so no audio is asked for). Stereo first: the reference client sends a
    stereo recording as stereo whatever single channel was chosen."""
    if not isinstance(offers, list) or not offers:
        raise ProtocolError("error", "invalid media: open needs a list of media offers")
    usable = [
        m
        for m in offers
        if isinstance(m, dict)
        and m.get("type") == "audio"
        and m.get("format") == "PCMU"
        and m.get("rate") == 8000
        and isinstance(m.get("channels"), list)
        and CUSTOMER in m["channels"]
        and all(c in ("external", "internal") for c in m["channels"])
    ]
    usable.sort(key=lambda m: -len(m["channels"]))
    return usable[0] if usable else None


def _single(headers: Headers) -> dict[str, str]:
    """Header fields as one value each; a field sent twice is refused (it would be ambiguous)."""
    out: dict[str, str] = {}
    for name in headers:
        values = headers.get_all(name)
        if len(values) != 1:
            raise Unauthenticated("SIGNATURE_INVALID", f"header {name} is sent more than once")
        out[name] = values[0]
    return out


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError):
        return False
    return True


def _message_type(raw: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(raw).get("type", ""))
    return ""


def _seq_of(raw: str, default: int) -> int:
    with contextlib.suppress(ValueError, AttributeError):
        seq = json.loads(raw).get("seq")
        if type(seq) is int:
            return seq
    return default
