"""Passive enrollment from live calls (issue 12): EnrollFromSession.

An agent verified the caller by other means; the call's speech accumulates across calls until
the policy's minimum, then it is the voiceprint and the next call authenticates. Attacks: no
consent, another voice on a later call (one call must not swap a customer's voice; only a
tenant-admin may override), a replayed recording, an agent trying the override; the pending
material goes with an opt-out.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.resample import resample
from authsvc.identity.roles import AGENT, TELEPHONY, TENANT_ADMIN
from tests.principals import bearer, ensure_registered, key_for
from tests.test_calls import LiveStream, _start
from tests.test_fraud_replay import _telephone
from tests.test_service_assurance import _enroll_voice, _speakers
from tests.wire import call_requests, stream

POLICY = 'sector = "general"\n[enrollment]\npassive_min_speech_s = 12\n'


async def _call(address, ctx, key, call_id, customer, audio) -> LiveStream:
    """A live call that has sent `audio`, once the service has handled every chunk of it."""
    live = LiveStream(address, key)
    requests = call_requests("shop", customer, audio)[1:]
    live.send(_start("shop", call_id, customer), *requests)
    frames = sum(len(r.audio.data) for r in requests) // 240  # the tracker's 30 ms frames, 8 kHz mu-law
    for _ in range(600):
        call = ctx.calls._calls.get(("shop", call_id))
        if call is not None and call.session.tracker.total_frames >= frames:
            return live
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {call_id} was never fully heard")


async def _enroll_call(address, key, call_id, customer="", override=False):
    async with grpc.aio.insecure_channel(address) as ch:
        return await enrollment_pb2_grpc.EnrollmentServiceStub(ch).EnrollFromSession(
            enrollment_pb2.EnrollFromSessionRequest(
                tenant="shop", session_id=call_id, customer_id=customer, override_voice_mismatch=override
            ),
            metadata=bearer(key),
        )


async def test_two_calls_reach_the_minimum_and_the_third_call_authenticates(svc, speech):
    channel, ctx, data_dir, address, _ = svc
    (data_dir / "policies" / "shop.toml").write_text(POLICY)
    target, _ = _speakers(speech)
    await ensure_registered(channel, "shop", "zoe")
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)

    first = await _call(address, ctx, ivr, "c-1", "zoe", np.concatenate(target[4:6]))
    reply = await _enroll_call(address, agent, "c-1")
    await first.rest()
    await first.close()
    assert reply.added and not reply.voice_enrollment.complete
    assert 5 < reply.voice_enrollment.net_speech_seconds < 12
    assert reply.voice_enrollment.required_net_speech_seconds == 12 and reply.voice_enrollment.calls == 1
    got = await enrollment_pb2_grpc.EnrollmentServiceStub(channel).GetCustomer(
        enrollment_pb2.GetCustomerRequest(tenant="shop", customer_id="zoe")
    )
    assert got.voice_enrollment.net_speech_seconds == pytest.approx(reply.voice_enrollment.net_speech_seconds)
    assert not got.voice_enrollment.complete and not got.templates, "no voiceprint before the minimum"
    # Until the minimum is reached, nothing is scored against the first call's speech.
    early = await asyncio.to_thread(stream, address, call_requests("shop", "zoe", target[7]), ivr)
    assert early[-1].outcome == V.OUTCOME_NOT_ENROLLED

    # The second call is unclaimed: the agent names the customer when enrolling it.
    second = await _call(address, ctx, ivr, "c-2", "", target[6])
    reply = await _enroll_call(address, agent, "c-2", "zoe")
    await second.rest()
    await second.close()
    assert reply.added and reply.voice_enrollment.complete, reply
    assert reply.voice_enrollment.net_speech_seconds >= 12

    third = await asyncio.to_thread(stream, address, call_requests("shop", "zoe", target[8]), ivr)
    assert third[-1].outcome == V.OUTCOME_AUTHENTICATED, third[-1].reason
    rows = [e for e in await ctx.auditor.list("shop", 100, customer_id="zoe") if e.action == "enroll.passive"]
    assert [e.outcome for e in rows] == ["completed", "added"], "newest first"
    assert all(e.actor.startswith("key_") and e.details["session"] in ("c-1", "c-2") for e in rows)


async def test_no_consent_another_voice_and_a_replay_are_refused_and_only_an_admin_overrides(svc, speech):
    channel, ctx, data_dir, address, _ = svc
    (data_dir / "policies" / "shop.toml").write_text(POLICY)
    target, other = _speakers(speech)
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    admin = await key_for(ctx, "shop", TENANT_ADMIN)

    # No registration with consent: nothing is enrolled.
    unknown = await _call(address, ctx, ivr, "c-3", "", np.concatenate(target[4:6]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_call(address, agent, "c-3", "nobody")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "consent" in err.value.details()
    await unknown.rest()
    await unknown.close()

    # A customer enrolled from recordings; a call in someone else's voice claims them.
    await _enroll_voice(channel, "shop", "amy", target[:4])
    stranger = await _call(address, ctx, ivr, "c-4", "amy", np.concatenate(other[4:6]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_call(address, agent, "c-4")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "does not match" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_call(address, agent, "c-4", override=True)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, "an agent cannot override"
    forced = await _enroll_call(address, admin, "c-4", override=True)
    assert forced.added
    await stranger.rest()
    await stranger.close()
    rows = [e for e in await ctx.auditor.list("shop", 100, customer_id="amy") if e.action == "enroll.passive"]
    assert [e.outcome for e in rows] == ["added", "refused_mismatch"]
    assert rows[0].details.get("override") == "voice_mismatch"

    # One of the customer's own recordings, replayed down the line.
    await _enroll_voice(channel, "shop", "bea", other[:4])
    replay = await _call(address, ctx, ivr, "c-5", "bea", resample(_telephone(other[1]), 8000, 16000))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_call(address, agent, "c-5")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "replay" in err.value.details()
    await replay.rest()
    await replay.close()


async def test_an_opt_out_erases_the_calls_gathered_toward_a_voiceprint(svc, speech):
    channel, ctx, data_dir, address, _ = svc
    (data_dir / "policies" / "shop.toml").write_text(POLICY)
    target, _ = _speakers(speech)
    await ensure_registered(channel, "shop", "cal")
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    live = await _call(address, ctx, ivr, "c-6", "cal", np.concatenate(target[4:6]))
    await _enroll_call(address, agent, "c-6")
    await live.rest()
    await live.close()
    async with ctx.store.transaction() as tx:
        assert "voice.pending" in await tx.state_names("shop", "cal")
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).RegisterCustomer(
        enrollment_pb2.RegisterCustomerRequest(
            tenant="shop", customer_id="cal", opt_out_biometrics=True, consent_text_version="v1"
        )
    )
    async with ctx.store.transaction() as tx:
        assert "voice.pending" not in await tx.state_names("shop", "cal")
