"""Attacks on live calls, bridges, passive enrollment and webhooks found by an adversarial
review of issue 12, each refused now: a replay played before the claim, an agent giving a
protected customer a first voiceprint, an unjudged synthetic voice enrolled from a call, an
agent watcher taking the caller's bearer assertion, Twilio frames that leaked a live call or
crashed its handler, webhook SSRF by DNS rebinding and NAT64, an unaudited claim-hop, one
tenant locking every tenant out of AudioHook."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from aiohttp import web

import authsvc.factors
from authsvc.api.v1 import (
    common_pb2,
    enrollment_pb2,
    enrollment_pb2_grpc,
    verification_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.resample import resample
from authsvc.bridges.audiohook import Nonces
from authsvc.identity.roles import AGENT, ENROLLMENT, TELEPHONY, TENANT_ADMIN
from authsvc.policy.engine import Decision, Outcome
from authsvc.webhooks import Webhooks
from tests.principals import bearer, ensure_registered, key_for
from tests.test_bridge_twilio import _connect, twilio  # noqa: F401 - the fixture
from tests.test_calls import LiveStream, _drain, _start
from tests.test_fraud_replay import _telephone
from tests.test_service_assurance import _enroll_voice, _speakers, _totp
from tests.wire import call_requests, enroll_request, stream

PASSIVE = 'sector = "general"\n[enrollment]\npassive_min_speech_s = 12\n'


async def _fully_heard(ctx, tenant: str, call_id: str, requests) -> None:
    frames = sum(len(r.audio.data) for r in requests) // 240  # 30 ms frames of 8 kHz mu-law
    for _ in range(900):
        call = ctx.calls._calls.get((tenant, call_id))
        if call is not None and call.session.tracker.total_frames >= frames:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} was never fully heard")


async def _live_call(address, ctx, key, call_id, customer, wav16k) -> LiveStream:
    live = LiveStream(address, key)
    requests = call_requests("shop", customer, wav16k)[1:]
    live.send(_start("shop", call_id, customer), *requests)
    await _fully_heard(ctx, "shop", call_id, requests)
    return live


async def _claim(address, key, call_id, customer):
    async with grpc.aio.insecure_channel(address) as ch:
        return await verification_pb2_grpc.VerificationServiceStub(ch).ClaimIdentity(
            V.ClaimIdentityRequest(tenant="shop", session_id=call_id, customer_id=customer),
            metadata=bearer(key),
        )


async def _enroll_call(address, key, call_id, customer=""):
    async with grpc.aio.insecure_channel(address) as ch:
        return await enrollment_pb2_grpc.EnrollmentServiceStub(ch).EnrollFromSession(
            enrollment_pb2.EnrollFromSessionRequest(tenant="shop", session_id=call_id, customer_id=customer),
            metadata=bearer(key),
        )


# -- 1. Replay detection is blind to everything heard before a claim ------------------------


async def test_a_recording_played_before_the_claim_is_caught_as_a_replay(svc, speech):
    """VerificationSession._keep_recent keeps no audio while no voiceprint is loaded, i.e. before
    the claim, yet the claim's look is scored on that speech: the replay detector sees nothing."""
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    for cid in ("rex", "rex2"):  # same recordings, two customers: the control's failures stay apart
        await _enroll_voice(channel, "shop", cid, target[:4])
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    recording = resample(_telephone(target[0]), 8000, 16000)  # one of the enrollment recordings

    # Control: named at the start, the replay is caught (general: step-up, never AUTHENTICATED).
    control = await asyncio.to_thread(stream, address, call_requests("shop", "rex2", recording), ivr)
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in control), "control: replay caught"

    # Attack: the same recording, the customer claimed once it has all been played.
    live = await _live_call(address, ctx, ivr, "rp-1", "", recording)
    try:
        claimed = (await _claim(address, agent, "rp-1", "rex")).decision
        rest = await live.rest()
    finally:
        await live.close()
    replay = [r for r in claimed.fraud.risks if r.detector == "replay"]
    assert claimed.outcome != V.OUTCOME_AUTHENTICATED and rest[-1].outcome != V.OUTCOME_AUTHENTICATED, (
        "a replayed enrollment recording authenticated once claimed late: "
        f"{V.Outcome.Name(claimed.outcome)}, "
        f"replay risk {[V.RiskLevel.Name(r.level) for r in replay]} ({[r.reason for r in replay]}), "
        f"assertion issued: {bool(claimed.assertion.token)}"
    )


# -- 2. A watcher / claimant with the agent role receives the bearer assertion --------------


async def test_an_agent_watcher_never_gets_the_callers_bearer_assertion(svc, speech):
    """webhooks.py: 'the token is a bearer credential for other channels: it stays on the call's
    own stream'. WatchSession (and ClaimIdentity) hand it to any agent-role principal."""
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ned", target[:4])
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    live = LiveStream(address, ivr)
    try:
        live.send(_start("shop", "tok-1", "ned"))
        for _ in range(200):
            if ("shop", "tok-1") in ctx.calls._calls:
                break
            await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(address) as desk:
            watch = verification_pb2_grpc.VerificationServiceStub(desk).WatchSession(
                V.WatchSessionRequest(tenant="shop", session_id="tok-1"), metadata=bearer(agent)
            )
            live.send(*call_requests("shop", "ned", target[5])[1:])
            await live.rest()
            seen = await _drain(watch)
    finally:
        await live.close()
    tokens = [d.assertion.token for d in seen if d.assertion.token]
    assert seen and seen[-1].outcome == V.OUTCOME_AUTHENTICATED, [d.reason for d in seen][-2:]
    outcome = None
    if tokens:  # what the agent can do with it: log in as the customer on another channel
        chat = V.VerifyRequest(
            start=V.SessionStart(
                tenant="shop", customer_id="ned", channel=common_pb2.CHANNEL_CHAT, assertion=tokens[-1]
            )
        )
        outcome = V.Outcome.Name((await asyncio.to_thread(stream, address, [chat], ivr))[0].outcome)
    assert not tokens, f"an agent watcher received the bearer assertion; a chat session with it: {outcome}"


# -- 3. Passive enrollment of a first voiceprint skips the replay and synthetic checks ------


class _EverythingIsSynthetic:
    """A countermeasure runner that judges every window synthetic (margin far below the bar)."""

    def __init__(self) -> None:
        self.encoder = SimpleNamespace(min_samples=16000, sample_rate=16000, version="fake-cm-1")
        self.judged = 0

    async def embed(self, wav, deadline=None):
        self.judged += 1
        return np.array([-50.0], np.float32)

    def close(self) -> None:
        pass


async def test_a_first_voiceprint_from_a_call_is_screened_for_synthetic_speech(svc, speech):
    """enrollment_material() assesses fresh risks only `if self._recent`, and _keep_recent keeps
    nothing for a customer without a voiceprint: a cloned/TTS voice becomes the first voiceprint."""
    channel, ctx, data_dir, address, _ = svc
    (data_dir / "policies" / "shop.toml").write_text(PASSIVE + '[fraud]\nsynthetic = "reject"\n')
    _, other = _speakers(speech)
    await ensure_registered(channel, "shop", "vic")
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    cm = _EverythingIsSynthetic()
    ctx.countermeasure = cm
    try:
        live = await _live_call(address, ctx, ivr, "syn-1", "vic", np.concatenate(other[4:6]))
        try:
            reply = await _enroll_call(address, agent, "syn-1")
            outcome = f"enrolled (added={reply.added}, {reply.voice_enrollment.net_speech_seconds:.1f} s)"
        except grpc.aio.AioRpcError as err:
            outcome = f"{err.code().name}: {err.details()}"
        await live.rest()
        await live.close()
    finally:
        ctx.countermeasure = None
    assert "synthetic" in outcome, (
        f"every window is synthetic, yet the passive enrollment gave: {outcome}; "
        f"the countermeasure was asked {cm.judged} time(s)"
    )


# -- 4. Passive enrollment bypasses the enrollment-window gate (gate_addition) --------------


async def test_an_agent_cannot_give_a_protected_customer_a_voiceprint_after_the_window(
    svc, speech, monkeypatch
):
    """EnrollVoice refuses a protected customer's new sample once the enrollment window closed
    (factors.gate_addition: a fresh assertion or a tenant-admin). passive.enroll_from_call never
    calls the gate, so an agent enrolls any voice as the first voiceprint of a TOTP customer."""
    channel, ctx, data_dir, address, clock = svc
    (data_dir / "policies" / "shop.toml").write_text(PASSIVE)
    target, other = _speakers(speech)
    await ensure_registered(channel, "shop", "tim")
    await _totp(channel, clock, "shop", "tim")  # protected: a confirmed TOTP authenticator
    later = time.time() + 7200  # two hours on: the 30 min enrollment window has closed
    monkeypatch.setattr(authsvc.factors, "time", SimpleNamespace(time=lambda: later))
    enroller, ivr = await key_for(ctx, "shop", ENROLLMENT), await key_for(ctx, "shop", TELEPHONY)
    agent = await key_for(ctx, "shop", AGENT)
    async with grpc.aio.insecure_channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await enrollment_pb2_grpc.EnrollmentServiceStub(ch).EnrollVoice(
                enroll_request("shop", "tim", target[0]), metadata=bearer(enroller)
            )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, "control: the gate holds for EnrollVoice"

    # The attacker calls as tim; a (careless or colluding) agent enrolls the call.
    live = await _live_call(address, ctx, ivr, "gate-1", "tim", np.concatenate(other[4:7]))
    try:
        reply = await _enroll_call(address, agent, "gate-1")
        outcome = f"added={reply.added} complete={reply.voice_enrollment.complete}"
    except grpc.aio.AioRpcError as exc:
        outcome = exc.code().name
    finally:
        await live.rest()
        await live.close()
    after = ""
    if outcome != "PERMISSION_DENIED":  # what it buys: the attacker's voice now verifies as tim
        decisions = await asyncio.to_thread(
            stream, address, call_requests("shop", "tim", np.concatenate(other[7:10])), ivr
        )
        seen = sorted({V.Outcome.Name(d.outcome) for d in decisions})
        after = f"; the attacker's next call as tim: {seen} / {decisions[-1].reason}"
    assert outcome == "PERMISSION_DENIED", f"EnrollFromSession skipped the enrollment gate: {outcome}{after}"


# -- 5. Twilio: an exception the stream does not expect leaks the call forever -------------


async def test_a_twilio_sequence_number_of_1e999_ends_the_stream_and_its_call(svc, twilio):  # noqa: F811
    """_check_sequence catches TypeError/ValueError, but int(float('inf')) is OverflowError: it
    escapes _Stream.run, whose except clauses are the only place _end() is called."""
    _, ctx, _, _, _ = svc
    sid = "CA" + "e5" * 16
    call = await _connect(twilio, call_sid=sid)
    await call.start()
    for _ in range(100):
        if ("shop", sid) in ctx.calls._calls:
            break
        await asyncio.sleep(0.05)
    assert ("shop", sid) in ctx.calls._calls
    await call.ws.send(f'{{"event": "media", "sequenceNumber": 1e999, "streamSid": "{call.stream_sid}"}}')
    code = None
    try:
        await asyncio.wait_for(call.ws.recv(), 10)
    except Exception as exc:
        code = getattr(getattr(exc, "rcvd", None), "code", None)
    await asyncio.sleep(1.0)
    leaked = ("shop", sid) in ctx.calls._calls
    assert not leaked and code == 1002, (
        f"connection closed with {code} (1011: unhandled exception); the call is still live: {leaked} "
        "(its CallSid can never be used again, its watchers never end, its final decision never comes)"
    )


async def test_a_twilio_start_with_a_non_object_media_format_is_a_protocol_error(svc, twilio):  # noqa: F811
    call = await _connect(twilio, call_sid="CA" + "f6" * 16)
    await call.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    await call.send(
        "start", start={"streamSid": call.stream_sid, "callSid": call.call_sid, "mediaFormat": "x"}
    )
    code = None
    try:
        await asyncio.wait_for(call.ws.recv(), 10)
    except Exception as exc:
        code = getattr(getattr(exc, "rcvd", None), "code", None)
    assert code in (1002, 1003), f"closed with {code}: an AttributeError escaped the protocol handler"


# -- 6. Webhook SSRF --------------------------------------------------------------------


async def test_a_webhook_host_that_rebinds_to_loopback_is_never_reached(svc, monkeypatch):
    """_check_address resolves the name, then aiohttp resolves it again to connect: a name with a
    0 s TTL answering a public address to the check and 127.0.0.1 to the connect gets in."""
    _, ctx, _, _, _ = svc
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def handle(request):
        got.append(await request.read())
        arrived.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    real = socket.getaddrinfo
    asked = {"n": 0}

    def rebinding(host, *args, **kwargs):
        if host != "rebind.attacker.test":
            return real(host, *args, **kwargs)
        asked["n"] += 1
        ip = "93.184.216.34" if asked["n"] <= 2 else "127.0.0.1"  # set + delivery check, then connect
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    # http only because the test's receiver has no certificate; private addresses stay forbidden.
    hooks = Webhooks(ctx.vault, ctx.store, ctx.metrics, allow_http=True, allow_private=False)
    try:
        await hooks.set("shop", f"http://rebind.attacker.test:{port}/internal-admin")
        hooks.notify("shop", "c-1", "zoe", Decision(Outcome.REJECTED, "p", sequence=1, final=True))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), 5)
    finally:
        await hooks.close()
        await runner.cleanup()
    assert not got, f"the delivery reached 127.0.0.1:{port} (lookups: {asked['n']}): {got[0][:80]!r}"


@pytest.mark.parametrize("url", ["https://[64:ff9b::a00:1]/hook", "https://[64:ff9b::7f00:1]/hook"])
async def test_a_webhook_at_a_nat64_address_of_a_private_ipv4_is_refused(svc, url):
    """ipaddress calls 64:ff9b::/96 global; behind NAT64 (IPv6-only clusters) it is 10.0.0.1 /
    127.0.0.1 of the gateway's network."""
    _, ctx, _, address, _ = svc
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    async with grpc.aio.insecure_channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await webhooks_pb2_grpc.WebhookServiceStub(ch).SetWebhook(
                webhooks_pb2.SetWebhookRequest(tenant="shop", url=url), metadata=bearer(admin)
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_webhook_url_with_a_bad_port_is_invalid_argument(svc):
    _, ctx, _, address, _ = svc
    admin = await key_for(ctx, "shop", TENANT_ADMIN)
    async with grpc.aio.insecure_channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await webhooks_pb2_grpc.WebhookServiceStub(ch).SetWebhook(
                webhooks_pb2.SetWebhookRequest(tenant="shop", url="https://example.com:99999/hook"),
                metadata=bearer(admin),
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.code()


# -- 7. Audit gap: a refused claim (a call used to try another customer) leaves no trace ----


async def test_a_refused_second_claim_is_audited(svc, speech):
    _, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    live = await _live_call(address, ctx, ivr, "hop-1", "", target[0][: 16000 * 2])
    try:
        await _claim(address, agent, "hop-1", "lea")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _claim(address, agent, "hop-1", "max")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await live.rest()
        await live.close()
    rows = await ctx.auditor.list("shop", 200)
    about_max = [
        (e.action, e.outcome) for e in rows if e.customer_id == "max" or "max" in json.dumps(e.details)
    ]
    assert about_max, "the attempt to hop the call to another customer is in no audit row"


# -- 8. One tenant's AudioHook signatures fill the node-wide nonce cache --------------------


def test_one_tenants_signatures_never_lock_another_tenant_out_of_audiohook():
    nonces = Nonces(limit=2048)
    for i in range(2048):
        assert nonces.first_use("a", f"key_of_tenant_a:{i:024d}")
    assert not nonces.first_use("a", "key_of_tenant_a:" + "m" * 24), "tenant A flooded its own"
    assert nonces.first_use("b", "key_of_tenant_b:" + "n" * 24), "tenant B's first signature is accepted"
