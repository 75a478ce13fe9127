"""The Twilio Media Streams bridge (issue 12).

There is no Twilio peer to run here, so the test client speaks Media Streams as Twilio's
documentation gives it (connected, start, media, dtmf, mark, stop) and signs the upgrade with
the official `twilio` library's RequestValidator, as Twilio does. Real recorded speech is
streamed as 20 ms base64 mu-law frames; the watch stream must say AUTHENTICATED for the
enrolled caller and REJECTED for an impostor; DTMF digits reach the keypad-rhythm modality.

Attacks: no signature, a wrong one, another tenant's token, an unknown tenant, a tenant
without a token (refused at the upgrade and audited); media before start, wrong sequence
numbers, a second start, a foreign streamSid, bad base64, an unsupported media format (closed
with the protocol error and a reason, counted), and the call beside them carries on.
"""

from __future__ import annotations

import asyncio
import base64
import json

import grpc
import numpy as np
import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from authsvc.api.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, identity_pb2, identity_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.codecs import Encoding, encode
from authsvc.audio.resample import resample
from authsvc.bridges.twilio import TwilioServer
from authsvc.identity.roles import AGENT, EVIDENCE, TELEPHONY, TENANT_ADMIN
from tests.principals import bearer, ensure_registered, key_for
from tests.test_bridge_audiohook import _watch
from tests.test_calls import _heard
from tests.test_identity import refusals
from tests.test_service_assurance import _enroll_voice, _speakers
from tests.typists import Typist
from tests.wire import keystroke_pb

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "wss://authsvc.example.com/twilio"


@pytest.fixture
async def twilio(svc):
    _, ctx, _, address, _ = svc
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    async with grpc.aio.insecure_channel(address) as ch:
        reply = await identity_pb2_grpc.CredentialServiceStub(ch).SetTwilioAuthToken(
            identity_pb2.SetTwilioAuthTokenRequest(tenant="shop", auth_token=TOKEN), metadata=bearer(admin)
        )
    assert reply.stream_path == "/twilio/shop"
    server = TwilioServer(ctx, PUBLIC, "127.0.0.1", 0, idle_s=4.0)
    port = await server.start()
    try:
        yield f"ws://127.0.0.1:{port}/twilio"
    finally:
        await server.stop()


def _signature(tenant: str, token: str = TOKEN) -> str:
    # What Twilio sends: HMAC-SHA1 of the wss:// URL given in the TwiML (no parameters).
    return RequestValidator(token).compute_signature(f"{PUBLIC}/{tenant}", {})


class _Twilio:
    """Speaks Media Streams as Twilio does."""

    def __init__(self, ws, call_sid: str) -> None:
        self.ws, self.call_sid, self.seq = ws, call_sid, 0
        self.stream_sid = "MZ" + call_sid[2:]

    async def send(self, event: str, **body) -> None:
        self.seq += 1
        await self.ws.send(
            json.dumps(
                {"event": event, "sequenceNumber": str(self.seq), "streamSid": self.stream_sid, **body}
            )
        )

    async def start(self, customer: str = "", **fmt) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        params = {"customerId": customer} if customer else {}
        media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
        await self.send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound", "outbound"],
                "mediaFormat": media_format,
                "customParameters": params,
            },
        )

    async def speak(self, wav16k: np.ndarray, digits_at: dict[int, str] | None = None) -> None:
        data = encode(resample(wav16k, 16000, 8000), Encoding.MULAW)
        for k, i in enumerate(range(0, len(data), 160)):
            chunk = base64.b64encode(data[i : i + 160]).decode()
            await self.send(
                "media",
                media={"track": "inbound", "chunk": str(k + 1), "timestamp": str(20 * k), "payload": chunk},
            )
            # What is played to the caller never counts as the caller.
            await self.send(
                "media",
                media={"track": "outbound", "chunk": str(k + 1), "timestamp": str(20 * k), "payload": chunk},
            )
            for digit in (digits_at or {}).get(k, ""):
                await self.send("dtmf", dtmf={"track": "inbound_track", "digit": digit})
            if k % 50 == 0:
                await asyncio.sleep(0)

    async def stop(self) -> None:
        await self.send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid})


async def _connect(url: str, tenant: str = "shop", signature: str | None = None, call_sid: str = ""):
    headers = {"X-Twilio-Signature": signature if signature is not None else _signature(tenant)}
    ws = await connect(f"{url}/{tenant}", additional_headers=headers)
    return _Twilio(ws, call_sid or "CA" + "a1" * 16)


async def test_a_twilio_call_is_decided_on_the_watch_stream_for_the_caller_and_an_impostor(
    svc, speech, twilio
):
    channel, ctx, _, address, _ = svc
    target, other = _speakers(speech)
    await _enroll_voice(channel, "shop", "pia", target[:4])
    desk = await key_for(ctx, "shop", AGENT)
    calls = {}
    for sid in ("CA" + "b2" * 16, "CA" + "c3" * 16):  # pia herself, then an impostor claiming her
        call = await _connect(twilio, call_sid=sid)
        await call.start("pia")
        calls[sid] = call
    watches = {}
    for sid in calls:
        for _ in range(100):
            if ("shop", sid) in ctx.calls._calls:
                break
            await asyncio.sleep(0.05)
        watches[sid] = asyncio.ensure_future(_watch(address, desk, "shop", sid))
    genuine, impostor = calls.values()
    await asyncio.gather(
        genuine.speak(np.concatenate(target[4:6])), impostor.speak(np.concatenate(other[4:6]))
    )
    for call in calls.values():
        await call.stop()
    decided = [await w for w in watches.values()]
    assert any(d.outcome == V.OUTCOME_AUTHENTICATED for d in decided[0]), [d.reason for d in decided[0]]
    assert decided[0][-1].final
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decided[1])
    assert any(d.outcome == V.OUTCOME_REJECTED for d in decided[1])
    for call in calls.values():
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(call.ws.recv(), 10)
        assert closed.value.rcvd.code == 1000


async def test_a_late_claim_by_callsid_and_dtmf_digits_reach_the_session(svc, speech, twilio):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    typist = Typist(np.random.default_rng(5))
    from authsvc.keystroke import make_sample

    await ensure_registered(channel, "shop", "ray")
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="ray",
            samples=[
                keystroke_pb(make_sample(typist.events("4711"), "dtmf", "4711"), "pin") for _ in range(6)
            ],
        )
    )
    await _enroll_voice(channel, "shop", "ray", target[:4])
    ivr = await key_for(ctx, "shop", AGENT, EVIDENCE)
    sid = "CA" + "d4" * 16
    call = await _connect(twilio, call_sid=sid)
    await call.start()  # the IVR does not know who is calling yet
    # Two seconds in, the caller keys their PIN in their own rhythm (the keypad's tones arrive
    # between 20 ms media frames), then '#'.
    keyed = typist.events("4711")
    at = {100 + round((e.press - keyed[0].press) / 0.02): e.key for e in keyed}
    at[max(at) + 15] = "#"
    await call.speak(np.concatenate(target[4:6]), at)
    await _heard(ctx, "shop", sid, 6.0)
    async with grpc.aio.insecure_channel(address) as ch:
        from authsvc.api.v1 import verification_pb2, verification_pb2_grpc

        reply = await verification_pb2_grpc.VerificationServiceStub(ch).ClaimIdentity(
            verification_pb2.ClaimIdentityRequest(tenant="shop", session_id=sid, customer_id="ray"),
            metadata=bearer(ivr),
        )
    assert reply.decision.net_speech_seconds > 5, "scored at once on what was heard"
    watch = asyncio.ensure_future(_watch(address, ivr, "shop", sid))
    await asyncio.sleep(0.2)
    await call.stop()
    decisions = [reply.decision, *await watch]
    keyed = [e for d in decisions for e in d.evidence if e.modality == common_pb2.MODALITY_KEYSTROKE_FIXED]
    assert keyed and keyed[0].profile == "pin", [d.reason for d in decisions]
    assert any(d.outcome == V.OUTCOME_AUTHENTICATED for d in decisions), [d.reason for d in decisions]


async def test_the_upgrade_refuses_bad_signatures_unknown_tenants_and_tenants_without_a_token(svc, twilio):
    ctx = svc[1]
    await key_for(ctx, "globex", TELEPHONY)  # provisioned, but no Twilio token set

    async def status(tenant: str, signature: str | None) -> int:
        headers = {} if signature is None else {"X-Twilio-Signature": signature}
        try:
            async with connect(f"{twilio}/{tenant}", additional_headers=headers):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert await status("shop", None) == 401
    assert await status("shop", _signature("shop", "f" * 32)) == 401
    assert await status("shop", _signature("globex")) == 401, "a signature for another URL"
    assert await status("globex", _signature("globex")) == 403
    assert await status("nobody", _signature("nobody")) == 403
    assert await status("shop", _signature("shop")) == 101
    reasons = {e.outcome for e in await refusals(ctx, "shop")} | {
        e.outcome for e in await refusals(ctx, "globex")
    }
    assert {"CREDENTIAL_MISSING", "SIGNATURE_INVALID", "BRIDGE_NOT_CONFIGURED"} <= reasons, reasons


@pytest.mark.parametrize(
    "attack, code, reason",
    [
        ("media_before_start", 1002, "media before start"),
        ("wrong_sequence", 1002, "invalid sequenceNumber"),
        ("second_start", 1002, "second start"),
        ("foreign_stream", 1002, "stream mismatch"),
        ("bad_base64", 1002, "invalid payload"),
        ("bad_format", 1003, "unsupported media format"),
        ("not_json", 1002, "invalid JSON"),
    ],
)
async def test_protocol_errors_close_the_stream_with_a_reason_and_spare_the_call_beside_it(
    svc, speech, twilio, attack, code, reason
):
    channel, ctx, _, _, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "sam", target[:4])
    good = await _connect(twilio, call_sid="CA" + "e5" * 16)
    await good.start("sam")
    bad = await _connect(twilio, call_sid="CA" + "f6" * 16)
    if attack == "media_before_start":
        await bad.send("media", media={"track": "inbound", "payload": "//8="})
    elif attack == "bad_format":
        await bad.start(encoding="audio/l16", sampleRate=16000)
    elif attack == "not_json":
        await bad.ws.send("{not json")
    else:
        await bad.start()
        if attack == "wrong_sequence":
            bad.seq += 5
            await bad.send("media", media={"track": "inbound", "payload": "//8="})
        elif attack == "second_start":
            await bad.start()
        elif attack == "foreign_stream":
            bad.stream_sid = "MZ" + "0" * 32
            await bad.send("media", media={"track": "inbound", "payload": "//8="})
        elif attack == "bad_base64":
            await bad.send("media", media={"track": "inbound", "payload": "not base64!"})
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(bad.ws.recv(), 10)
    assert closed.value.rcvd.code == code and reason in closed.value.rcvd.reason, closed.value.rcvd
    await good.speak(np.concatenate(target[4:6]))
    await good.stop()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(good.ws.recv(), 30)
    rows = [e for e in await ctx.auditor.list("shop", 50, customer_id="sam") if e.action == "decision"]
    assert rows and rows[0].outcome == "authenticated", [(e.outcome, e.details) for e in rows]
    assert ctx.metrics.bridge_errors.labels("twilio", reason.split(":")[0])._value.get() >= 1
