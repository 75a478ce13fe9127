"""Asterisk AudioSocket bridge (TCP).

Asterisk's `AudioSocket(<uuid>,host:port)` application (or `Dial(AudioSocket/host:port/<uuid>)`)
connects here and sends frames of kind (1 byte), payload length (2 bytes, big-endian) and
payload: 0x01 the call's UUID (first), 0x10 signed linear 16-bit little-endian audio at 8 kHz
(what the AudioSocket application always sends; the higher rates 0x11-0x18 of the channel
driver's c() option are refused), 0x03 a DTMF digit (Asterisk 20.14+/21.9+/22.4+, at key
release), 0x00 hangup, 0xff an error. The UUID is the call id: the IVR claims the customer with ClaimIdentity.

AudioSocket has no authentication and no TLS. The bridge listens only where configured, serves
one tenant per listener, and accepts only peers in its allowed networks (loopback unless told
otherwise): run it on a trusted network or through a tunnel (docs/bridges.md). A refused peer
is audited. The only thing a server may send back is audio or hangup, so a protocol error ends
the call with hangup (its reason logged and counted); a silent connection is hung up after the
idle time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import uuid

from authsvc.audio.codecs import Encoding
from authsvc.bridges.base import BridgeCall, KeypadRun, check_grant, peer, refused, run_counted
from authsvc.context import ServiceContext
from authsvc.errors import AuthsvcError, InvalidInput, PermissionDenied
from authsvc.identity.principal import Principal
from authsvc.identity.roles import TELEPHONY

log = logging.getLogger(__name__)
BRIDGE = "audiosocket"
HANGUP, UUID, DTMF, SLIN, ERROR = 0x00, 0x01, 0x03, 0x10, 0xFF
RATE = 8000
# Largest audio frame accepted: one second (Asterisk sends 20 ms).
MAX_AUDIO_BYTES = RATE * 2
LOOPBACK = ("127.0.0.0/8", "::1/128")


class FrameError(Exception):
    pass


class AudioSocketServer:
    def __init__(
        self,
        ctx: ServiceContext,
        tenant: str,
        host: str = "127.0.0.1",
        port: int = 0,
        allow: tuple[str, ...] = LOOPBACK,
        idle_s: float = 30.0,
    ) -> None:
        self.ctx, self.tenant, self.host, self.port, self.idle_s = ctx, tenant, host, port, idle_s
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        await self.ctx.tenants.get(self.tenant)  # NotFound: a listener serves a provisioned tenant
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _allowed(self, host: str) -> bool:
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
            return any(address in net for net in self.allow)
        return False

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername") or ("", 0)
        source = peer(address)
        principal = check_grant(
            Principal(f"audiosocket:{self.tenant}", self.tenant, frozenset({TELEPHONY}), source, "network"),
            BRIDGE,
        )
        if not self._allowed(str(address[0])):
            exc = PermissionDenied(
                "SOURCE_NOT_ALLOWED", f"{address[0]} is not in the bridge's allowed networks"
            )
            await refused(self.ctx, BRIDGE, source, exc, None, self.tenant)
            writer.close()
            return
        try:
            await run_counted(self.ctx, BRIDGE, principal, _Call(self, reader, writer, principal).run)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()


class _Call:
    def __init__(self, server: AudioSocketServer, reader, writer, principal: Principal) -> None:
        self.server, self.reader, self.writer, self.principal = server, reader, writer, principal
        self.ctx = server.ctx
        self.call: BridgeCall | None = None
        self.keypad: KeypadRun | None = None
        self.samples = 0  # the call's clock: samples of audio received

    async def run(self) -> str:
        try:
            while True:
                try:
                    async with asyncio.timeout(self.server.idle_s):
                        kind, payload = await self._frame()
                except TimeoutError:
                    self._count("idle")
                    await self._hangup()
                    return "idle"
                if kind == HANGUP:
                    await self._end()
                    return "completed"
                await self._handle(kind, payload)
        except (FrameError, InvalidInput) as exc:
            reason = str(exc)
            log.info("audiosocket %s: %s", self.call.call.call_id if self.call else "-", reason)
            self._count(reason.split(":", 1)[0][:60])
            await self._hangup()
            return "protocol_error"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "completed"  # Asterisk just closes the socket when the caller hangs up
        finally:
            await self._end()  # whatever ended the connection, its call ends

    def _count(self, reason: str) -> None:
        self.ctx.metrics.bridge_errors.labels(BRIDGE, reason).inc()

    async def _frame(self) -> tuple[int, bytes]:
        header = await self.reader.readexactly(3)
        kind, length = header[0], struct.unpack(">H", header[1:])[0]
        return kind, await self.reader.readexactly(length)

    async def _handle(self, kind: int, payload: bytes) -> None:
        if kind == UUID:
            if self.call is not None:
                raise FrameError("second uuid: the call already has one")
            if len(payload) != 16:
                raise FrameError(f"bad uuid: {len(payload)} bytes, 16 expected")
            call_id = str(uuid.UUID(bytes=payload))
            try:
                self.call = await BridgeCall.open(
                    self.ctx, BRIDGE, self.principal, call_id, "", Encoding.PCM16_LE, RATE
                )
            except AuthsvcError as exc:
                raise FrameError(f"session refused: {exc}") from None
            self.keypad = KeypadRun(self.call)
            return
        if self.call is None:
            raise FrameError(f"frame before uuid: kind 0x{kind:02x} before the call's UUID")
        if kind == SLIN:
            await self._audio(payload)
        elif kind == DTMF:
            if len(payload) != 1:
                raise FrameError("bad dtmf: one ASCII digit expected")
            await self.keypad.digit(payload.decode("latin-1"), self.samples / RATE)  # type: ignore[union-attr]
        elif kind == ERROR:
            log.info("audiosocket %s: Asterisk reported error %s", self.call.call.call_id, payload.hex())
            await self._end()
            raise asyncio.IncompleteReadError(b"", None)
        elif 0x11 <= kind <= 0x18:
            raise FrameError(f"unsupported rate: kind 0x{kind:02x}; send signed linear at 8 kHz (0x10)")
        else:
            raise FrameError(f"unsupported kind: 0x{kind:02x}")

    async def _audio(self, payload: bytes) -> None:
        if not payload or len(payload) % 2 or len(payload) > MAX_AUDIO_BYTES:
            raise FrameError(f"bad audio: {len(payload)} bytes")
        self.samples += len(payload) // 2
        await self.keypad.tick(self.samples / RATE)  # type: ignore[union-attr]
        await self.call.audio(payload)  # type: ignore[union-attr]

    async def _end(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            await self.keypad.flush()  # type: ignore[union-attr]
            await call.finish()

    async def _hangup(self) -> None:
        await self._end()
        with contextlib.suppress(ConnectionError):
            self.writer.write(bytes([HANGUP, 0, 0]))
            await self.writer.drain()
