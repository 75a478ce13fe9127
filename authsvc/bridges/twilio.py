"""Twilio Media Streams bridge (also what Telnyx and SignalWire speak) over WebSocket.

A `<Stream url="wss://HOST/twilio/<tenant>">` in the tenant's TwiML forks the call to this
endpoint: JSON text messages `connected`, `start` (callSid, customParameters, mediaFormat),
`media` (base64 mu-law at 8 kHz, per track), `dtmf` (bidirectional streams), `mark` and
`stop`. Only the inbound track (the caller) is scored.

Authentication: X-Twilio-Signature on the upgrade, checked with the official `twilio`
library's RequestValidator against the tenant's auth token (kept sealed, set with
SetTwilioAuthToken) over the public wss:// URL Twilio was given (`public_url`, since a proxy
in front terminates TLS). A Twilio signature has no nonce or time, so the same upgrade could
be replayed by whoever saw it: the endpoint must be reached over TLS only, and a call id
(CallSid) can be live once. The call's customer comes from customParameters.customerId or
later by ClaimIdentity with the CallSid.

DTMF digits carry no timing of their own: each is stamped with the stream's media clock when
it arrives (authsvc.bridges.base.KeypadRun), and a run ending in '#' or a pause of DTMF_GAP_S
goes to the session as one keypad sample (profile customParameters.dtmfProfile, default "pin").

Protocol errors close the WebSocket with 1002 (or 1003 for an unsupported media format) and a
reason, counted in metrics; idle connections are closed after the idle time.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from twilio.request_validator import RequestValidator
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from authsvc.audio.codecs import Encoding
from authsvc.bridges.base import BridgeCall, KeypadRun, WebSocketBridge, check_grant, peer, refused
from authsvc.context import ServiceContext
from authsvc.errors import AuthsvcError, InvalidInput, PermissionDenied, Unauthenticated
from authsvc.identifiers import is_id
from authsvc.identity.bridge_secrets import twilio_auth_token
from authsvc.identity.principal import Principal
from authsvc.identity.roles import TELEPHONY

log = logging.getLogger(__name__)
BRIDGE = "twilio"
MAX_MESSAGE = 65536
DTMF_GAP_S = 3.0
MAX_DTMF = 32
PROTOCOL_ERROR, UNSUPPORTED = 1002, 1003


class StreamError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class TwilioServer(WebSocketBridge):
    bridge = BRIDGE
    max_message = MAX_MESSAGE

    def __init__(
        self,
        ctx: ServiceContext,
        public_url: str,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_s: float = 30.0,
        ssl: Any = None,
    ) -> None:
        super().__init__(ctx, host, port, idle_s, ssl)
        # The URL Twilio signs is the <Stream url> as the TwiML gives it: this base + /<tenant>.
        self.public_url = public_url.rstrip("/")
        self.path = urlsplit(self.public_url).path

    async def authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        source = peer(connection.remote_address)
        path, _, query = request.path.partition("?")
        prefix, _, tenant = path.rpartition("/")
        if prefix != self.path or not is_id(tenant):
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        principal = None
        try:
            if await self.ctx.tenants.find(tenant) is None:
                raise PermissionDenied("TENANT_NOT_GRANTED", "no such tenant")
            token = await twilio_auth_token(self.ctx.vault, self.ctx.store, tenant)
            if token is None:
                raise PermissionDenied("BRIDGE_NOT_CONFIGURED", "the tenant has no Twilio auth token set")
            signature = request.headers.get("X-Twilio-Signature")
            if not signature:
                raise Unauthenticated("CREDENTIAL_MISSING", "X-Twilio-Signature is required")
            url = f"{self.public_url}/{tenant}" + (f"?{query}" if query else "")
            if not RequestValidator(token).validate(url, {}, signature):
                raise Unauthenticated("SIGNATURE_INVALID", "X-Twilio-Signature does not verify")
            principal = check_grant(
                Principal(f"twilio:{tenant}", tenant, frozenset({TELEPHONY}), source, via="twilio-signature"),
                BRIDGE,
            )
        except (Unauthenticated, PermissionDenied) as exc:
            await refused(self.ctx, BRIDGE, source, exc, principal, tenant)
            status = HTTPStatus.FORBIDDEN if isinstance(exc, PermissionDenied) else HTTPStatus.UNAUTHORIZED
            return connection.respond(status, f"{exc.reason}\n")
        except AuthsvcError as exc:
            log.warning("twilio upgrade from %s: %s", source, exc)
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try again later\n")
        connection.principal = principal  # type: ignore[attr-defined]
        return None

    async def session(self, connection: ServerConnection, principal: Principal) -> str:
        return await _Stream(self, connection, principal).run()


class _Stream:
    def __init__(self, server: TwilioServer, ws: ServerConnection, principal: Principal) -> None:
        self.server, self.ws, self.principal, self.ctx = server, ws, principal, server.ctx
        self.seq = 0
        self.stream_sid = ""
        self.call: BridgeCall | None = None
        self.keypad: KeypadRun | None = None
        self.media_ms = 0.0  # the inbound track's clock: milliseconds of audio received

    async def run(self) -> str:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.server.idle_s):
                        raw = await self.ws.recv()
                except TimeoutError:
                    self.ctx.metrics.bridge_errors.labels(BRIDGE, "idle").inc()
                    await self._end()
                    await self.ws.close(1000, f"no message for {self.server.idle_s:g} s")
                    return "idle"
                if not isinstance(raw, str):
                    raise StreamError(PROTOCOL_ERROR, "binary frame: Media Streams messages are JSON text")
                if await self._message(raw):
                    await self._end()
                    await self.ws.close(1000, "stream stopped")
                    return "completed"
        except StreamError as exc:
            self.ctx.metrics.bridge_errors.labels(BRIDGE, exc.reason.split(":", 1)[0][:60]).inc()
            await self._end()
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(exc.code, exc.reason[:120])
            return "protocol_error"
        except ConnectionClosed:
            return "dropped"
        finally:
            await self._end()  # whatever ended the connection, its call ends (and leaves the registry)

    async def _message(self, raw: str) -> bool:
        """Handles one message; -> True at the stream's stop."""
        try:
            message = json.loads(raw)
        except ValueError:
            raise StreamError(PROTOCOL_ERROR, "invalid JSON") from None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            raise StreamError(PROTOCOL_ERROR, "malformed message: no event")
        event = message["event"]
        if event == "connected":
            return False
        self._check_sequence(message)
        if event == "start":
            await self._start(message)
            return False
        if self.call is None:
            raise StreamError(PROTOCOL_ERROR, f"{event} before start")
        if message.get("streamSid") != self.stream_sid:
            raise StreamError(PROTOCOL_ERROR, "stream mismatch: streamSid is not this stream's")
        if event == "media":
            await self._media(message.get("media"))
        elif event == "dtmf":
            await self._dtmf(message.get("dtmf"))
        elif event == "stop":
            return True
        elif event != "mark":
            raise StreamError(PROTOCOL_ERROR, f"unsupported event: {event[:40]!r}")
        return False

    def _check_sequence(self, message: dict) -> None:
        raw = message.get("sequenceNumber")
        # Twilio sends a string of digits; anything else (a float, 1e999, a bool) is malformed.
        if not (isinstance(raw, str) and raw.isdigit() and len(raw) <= 12):
            raise StreamError(PROTOCOL_ERROR, "invalid sequenceNumber")
        seq = int(raw)
        if seq != self.seq + 1:
            raise StreamError(PROTOCOL_ERROR, f"invalid sequenceNumber: {seq} after {self.seq}")
        self.seq = seq

    async def _start(self, message: dict) -> None:
        if self.call is not None:
            raise StreamError(PROTOCOL_ERROR, "second start")
        start = message.get("start")
        if not isinstance(start, dict):
            raise StreamError(PROTOCOL_ERROR, "malformed start")
        fmt = start.get("mediaFormat")
        if not isinstance(fmt, dict) or (fmt.get("encoding"), fmt.get("sampleRate"), fmt.get("channels")) != (
            "audio/x-mulaw",
            8000,
            1,
        ):
            raise StreamError(UNSUPPORTED, "unsupported media format: mu-law, 8000 Hz, mono expected")
        call_sid, stream_sid = start.get("callSid"), start.get("streamSid") or message.get("streamSid")
        if not isinstance(call_sid, str) or not is_id(call_sid) or not isinstance(stream_sid, str):
            raise StreamError(PROTOCOL_ERROR, "invalid callSid or streamSid")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise StreamError(PROTOCOL_ERROR, "invalid customParameters")
        customer = params.get("customerId", "")
        if customer and (not isinstance(customer, str) or not is_id(customer)):
            raise StreamError(PROTOCOL_ERROR, "invalid customParameters.customerId")
        profile = str(params.get("dtmfProfile") or "pin")
        self.stream_sid = stream_sid
        try:
            self.call = await BridgeCall.open(
                self.ctx, BRIDGE, self.principal, call_sid, customer, Encoding.MULAW, 8000
            )
        except AuthsvcError as exc:
            raise StreamError(PROTOCOL_ERROR, f"session refused: {exc}") from None
        self.keypad = KeypadRun(self.call, profile, DTMF_GAP_S, MAX_DTMF)

    async def _media(self, media: Any) -> None:
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise StreamError(PROTOCOL_ERROR, "malformed media")
        if media.get("track", "inbound") != "inbound":
            return  # what is played to the caller, never the caller
        try:
            audio = binascii.a2b_base64(media["payload"], strict_mode=True)
        except (binascii.Error, ValueError):
            raise StreamError(PROTOCOL_ERROR, "invalid payload: not base64") from None
        self.media_ms += len(audio) / 8  # mu-law at 8 kHz: 8 bytes per millisecond
        await self.keypad.tick(self.media_ms / 1000)  # type: ignore[union-attr]
        if audio:
            await self.call.audio(audio)  # type: ignore[union-attr]

    async def _dtmf(self, dtmf: Any) -> None:
        if not isinstance(dtmf, dict):
            raise StreamError(PROTOCOL_ERROR, "malformed dtmf")
        try:
            await self.keypad.digit(dtmf.get("digit"), self.media_ms / 1000)  # type: ignore[union-attr]
        except InvalidInput as exc:
            raise StreamError(PROTOCOL_ERROR, f"invalid dtmf: {exc.description}") from None

    async def _end(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            await self.keypad.flush()  # type: ignore[union-attr]
            await call.finish()
