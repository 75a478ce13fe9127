"""The Asterisk AudioSocket bridge (issue 12).

No Asterisk runs here (Debian no longer ships it), so the test client frames AudioSocket as
Asterisk's res_audiosocket.c does: the call's UUID first, 20 ms of signed linear audio at
8 kHz per frame, DTMF digits, hangup or just a closed socket. Real recorded speech is
streamed, the IVR claims the customer by the UUID, and the watch stream decides the call.

Attacks: a peer outside the allowed networks (refused and audited), frames before the UUID, a
second UUID, unsupported kinds and rates, malformed audio, a flood of oversized lengths (the
call is hung up with its reason counted), and the call beside them carries on.
"""

from __future__ import annotations

import asyncio
import struct
import uuid

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import verification_pb2, verification_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.resample import resample
from authsvc.bridges.audiosocket import AudioSocketServer
from authsvc.identity.roles import AGENT, TELEPHONY
from tests.principals import bearer, key_for
from tests.test_bridge_audiohook import _watch
from tests.test_calls import _heard
from tests.test_identity import refusals
from tests.test_service_assurance import _enroll_voice, _speakers


@pytest.fixture
async def audiosocket(svc):
    server = AudioSocketServer(svc[1], "shop", "127.0.0.1", 0, idle_s=4.0)
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


def frame(kind: int, payload: bytes = b"") -> bytes:
    return bytes([kind]) + struct.pack(">H", len(payload)) + payload


class _Asterisk:
    def __init__(self, reader, writer, call_id: str) -> None:
        self.reader, self.writer, self.call_id = reader, writer, call_id

    async def speak(self, wav16k: np.ndarray, digits_at: dict[int, str] | None = None) -> None:
        pcm = encode(resample(wav16k, 16000, 8000), Encoding.PCM16_LE)
        for k, i in enumerate(range(0, len(pcm), 320)):
            self.writer.write(frame(0x10, pcm[i : i + 320]))
            for d in (digits_at or {}).get(k, ""):
                self.writer.write(frame(0x03, d.encode()))
            if k % 50 == 0:
                await self.writer.drain()
        await self.writer.drain()

    async def hangup(self) -> None:
        self.writer.write(frame(0x00))
        await self.writer.drain()

    async def closed_by_server(self) -> bytes:
        """What the server sent before closing (its hangup)."""
        return await asyncio.wait_for(self.reader.read(), 15)


async def _dial(port: int, call_id: str | None = None) -> _Asterisk:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    call_id = call_id or str(uuid.uuid4())
    writer.write(frame(0x01, uuid.UUID(call_id).bytes))
    await writer.drain()
    return _Asterisk(reader, writer, call_id)


async def test_an_asterisk_call_is_claimed_by_its_uuid_and_decided_on_the_watch_stream(
    svc, speech, audiosocket
):
    channel, ctx, _, address, _ = svc
    _, port = audiosocket
    target, other = _speakers(speech)
    await _enroll_voice(channel, "shop", "una", target[:4])
    ivr, desk = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    genuine, impostor = await _dial(port), await _dial(port)
    await asyncio.gather(
        genuine.speak(np.concatenate(target[4:6])), impostor.speak(np.concatenate(other[4:6]))
    )
    watches = []
    async with grpc.aio.insecure_channel(address) as ch:
        stub = verification_pb2_grpc.VerificationServiceStub(ch)
        for call in (genuine, impostor):
            await _heard(ctx, "shop", call.call_id, 5.0)
            watches.append(asyncio.ensure_future(_watch(address, desk, "shop", call.call_id)))
            reply = await stub.ClaimIdentity(
                verification_pb2.ClaimIdentityRequest(
                    tenant="shop", session_id=call.call_id, customer_id="una"
                ),
                metadata=bearer(ivr),
            )
            assert reply.decision.net_speech_seconds >= 5.0
    await genuine.hangup()
    impostor.writer.close()  # Asterisk just closes the socket when the caller hangs up
    kept, stranger = [await w for w in watches]
    assert any(d.outcome == V.OUTCOME_AUTHENTICATED for d in kept), [d.reason for d in kept]
    assert kept[-1].final
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in stranger)
    assert any(d.outcome == V.OUTCOME_REJECTED for d in stranger)


@pytest.mark.parametrize(
    "attack, reason",
    [
        ("audio_before_uuid", "frame before uuid"),
        ("second_uuid", "second uuid"),
        ("bad_uuid", "bad uuid"),
        ("odd_audio", "bad audio"),
        ("slin16", "unsupported rate"),
        ("unknown_kind", "unsupported kind"),
        ("bad_dtmf", "bad dtmf"),
    ],
)
async def test_protocol_errors_hang_up_the_call_with_a_counted_reason_and_spare_the_one_beside_it(
    svc, speech, audiosocket, attack, reason
):
    channel, ctx, _, _, _ = svc
    _, port = audiosocket
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "vic", target[:4])
    good = await _dial(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if attack == "audio_before_uuid":
        writer.write(frame(0x10, b"\x00\x00" * 160))
    else:
        writer.write(frame(0x01, b"\x01" * 15 if attack == "bad_uuid" else uuid.uuid4().bytes))
        writer.write(
            {
                "bad_uuid": b"",
                "second_uuid": frame(0x01, uuid.uuid4().bytes),
                "odd_audio": frame(0x10, b"\x00" * 321),
                "slin16": frame(0x12, b"\x00\x00" * 320),
                "unknown_kind": frame(0x42, b"x"),
                "bad_dtmf": frame(0x03, b"12"),
            }[attack]
        )
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 15) == b"\x00\x00\x00", "hung up"
    writer.close()
    await good.speak(np.concatenate(target[4:6]))
    await _heard(ctx, "shop", good.call_id, 5.0)
    async with grpc.aio.insecure_channel(svc[3]) as ch:
        await verification_pb2_grpc.VerificationServiceStub(ch).ClaimIdentity(
            verification_pb2.ClaimIdentityRequest(tenant="shop", session_id=good.call_id, customer_id="vic"),
            metadata=bearer(await key_for(ctx, "shop", TELEPHONY)),
        )
    await good.hangup()
    await good.closed_by_server()
    rows = [e for e in await ctx.auditor.list("shop", 50, customer_id="vic") if e.action == "decision"]
    assert rows and rows[0].outcome == "authenticated", [(e.outcome, e.details) for e in rows]
    assert ctx.metrics.bridge_errors.labels("audiosocket", reason)._value.get() >= 1


async def test_a_peer_outside_the_allowed_networks_is_refused_and_a_silent_call_is_hung_up(svc):
    ctx = svc[1]
    closed = AudioSocketServer(ctx, "shop", "127.0.0.1", 0, allow=("10.0.0.0/8",), idle_s=4.0)
    port = await closed.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(0x01, uuid.uuid4().bytes))
        assert await asyncio.wait_for(reader.read(), 10) == b"", "closed at once"
        writer.close()
    finally:
        await closed.stop()
    assert "SOURCE_NOT_ALLOWED" in {e.outcome for e in await refusals(ctx, "shop")}
    open_ = AudioSocketServer(ctx, "shop", "127.0.0.1", 0, idle_s=2.0)
    port = await open_.start()
    try:
        quiet = await _dial(port)
        await _heard(ctx, "shop", quiet.call_id, 0.0)
        assert await quiet.closed_by_server() == b"\x00\x00\x00"
        assert ("shop", quiet.call_id) not in ctx.calls._calls, "its call ended"
    finally:
        await open_.stop()
    with pytest.raises(Exception, match="not provisioned"):
        await AudioSocketServer(ctx, "nobody").start()
