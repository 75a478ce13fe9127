"""Calls whose customer is claimed later, and watchers of a call's decisions (issue 12).

A real IVR identifies the caller midway (an account number keyed, a CRM match on the
caller's number); the speech heard until then must count at once. Attacks: a call used
to search customers one claim at a time; a second stream opened under a live call's id;
a watcher or claimant of another tenant; a watcher that never reads, stalling the call.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import common_pb2, verification_pb2, verification_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.calls import DecisionFeed, WatcherBehind
from authsvc.identity.roles import AGENT, EVIDENCE, TELEPHONY
from authsvc.policy.engine import Decision, Outcome
from tests.principals import bearer, key_for
from tests.test_service_assurance import _enroll_voice, _speakers
from tests.wire import call_requests


def _start(tenant: str, session_id: str, customer: str = "") -> verification_pb2.VerifyRequest:
    return verification_pb2.VerifyRequest(
        start=verification_pb2.SessionStart(
            tenant=tenant,
            customer_id=customer,
            channel=common_pb2.CHANNEL_VOICE,
            audio_format=common_pb2.AudioFormat(
                encoding=common_pb2.AUDIO_ENCODING_MULAW, sample_rate_hz=8000
            ),
            session_id=session_id,
        )
    )


class LiveStream:
    """A Verify stream the test writes to as it goes (as an IVR does)."""

    def __init__(self, address: str, key: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.queue: asyncio.Queue = asyncio.Queue()

        async def requests():
            while (r := await self.queue.get()) is not None:
                yield r

        stub = verification_pb2_grpc.VerificationServiceStub(self.channel)
        self.call = stub.Verify(requests(), metadata=bearer(key), timeout=120)

    def send(self, *requests) -> None:
        for r in requests:
            self.queue.put_nowait(r)

    async def rest(self) -> list:
        """Half-closes and reads every decision left."""
        self.queue.put_nowait(None)
        return await _drain(self.call)

    async def close(self) -> None:
        await self.channel.close()


async def _drain(call) -> list:
    """The rest of a server stream read with read() (grpc.aio does not mix read() and iteration)."""
    out = []
    while (d := await call.read()) is not grpc.aio.EOF:
        out.append(d)
    return out


def _speech(utterances: list[np.ndarray], seconds: float) -> np.ndarray:
    out, total = [], 0
    for u in utterances:
        out.append(u)
        total += u.size
        if total >= seconds * 16000:
            break
    return np.concatenate(out)


async def _heard(ctx, tenant: str, session_id: str, seconds: float) -> None:
    """Waits until the service has tracked `seconds` of the call's net speech."""
    for _ in range(600):
        call = ctx.calls._calls.get((tenant, session_id))
        if call is not None and call.session.tracker.net_speech_s >= seconds:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the service never heard {seconds} s of call {session_id}")


async def test_a_claim_after_ten_seconds_of_speech_is_scored_at_once_on_it_and_watchers_see_it(svc, speech):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "kim", target[:4])
    ivr, agent = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT)
    audio = _speech(target[4:], 12.0)
    call = LiveStream(address, ivr)
    try:
        call.send(_start("shop", "ivr-42"), *call_requests("shop", "", audio)[1:])
        first = await call.call.read()
        assert first.outcome == V.OUTCOME_PENDING and "no customer claimed" in first.reason
        await _heard(ctx, "shop", "ivr-42", 10.0)
        async with grpc.aio.insecure_channel(address) as desk:
            stub = verification_pb2_grpc.VerificationServiceStub(desk)
            watch = stub.WatchSession(
                verification_pb2.WatchSessionRequest(tenant="shop", session_id="ivr-42"),
                metadata=bearer(agent),
            )
            latest = await watch.read()
            assert latest.outcome == V.OUTCOME_PENDING, "a watcher starts from the call's latest decision"
            reply = await stub.ClaimIdentity(
                verification_pb2.ClaimIdentityRequest(tenant="shop", session_id="ivr-42", customer_id="kim"),
                metadata=bearer(agent),
            )
            claimed = reply.decision
            assert claimed.outcome == V.OUTCOME_AUTHENTICATED, claimed.reason
            assert claimed.net_speech_seconds >= 10.0, "scored on everything heard before the claim"
            assert all(e.score == 0 and e.llr == 0 for e in claimed.evidence), "no scores to an agent"
            seen = await watch.read()
            assert (seen.outcome, seen.sequence) == (claimed.outcome, claimed.sequence)
            on_stream = []
            while not on_stream or on_stream[-1].sequence < claimed.sequence:
                on_stream.append(await call.call.read())
            assert on_stream[-1].outcome == V.OUTCOME_AUTHENTICATED and on_stream[-1].assertion.token
            rest = await call.rest()
            assert rest[-1].final
            watched = await _drain(watch)
            assert watched and watched[-1].final, "the watch ends with the call's last decision"
    finally:
        await call.close()
    rows = [e for e in await ctx.auditor.list("shop", 100, customer_id="kim") if e.action == "session.claim"]
    assert rows and rows[0].details["session"] == "ivr-42" and rows[0].actor.startswith("key_")


async def test_an_impostor_claimed_in_the_stream_is_rejected_and_a_call_claims_one_customer(svc, speech):
    channel, ctx, _, address, _ = svc
    target, other = _speakers(speech)
    await _enroll_voice(channel, "shop", "lea", target[:4])
    await _enroll_voice(channel, "shop", "max", other[:4])
    ivr = await key_for(ctx, "shop", TELEPHONY)
    call = LiveStream(address, ivr)
    try:
        call.send(_start("shop", "ivr-7"), *call_requests("shop", "", _speech(other[4:], 6.0))[1:])
        await _heard(ctx, "shop", "ivr-7", 5.0)
        call.send(verification_pb2.VerifyRequest(claim=verification_pb2.Claim(customer_id="lea")))
        decisions = []
        while not decisions or decisions[-1].outcome == V.OUTCOME_PENDING:
            decisions.append(await call.call.read())
        assert decisions[-1].outcome == V.OUTCOME_REJECTED, decisions[-1].reason
        # Claiming the same customer again changes nothing; another one would turn one call into
        # a search of the tenant's customers.
        call.send(verification_pb2.VerifyRequest(claim=verification_pb2.Claim(customer_id="lea")))
        call.send(verification_pb2.VerifyRequest(claim=verification_pb2.Claim(customer_id="max")))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.rest()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "claimed another customer" in err.value.details()
    finally:
        await call.close()
    async with ctx.store.transaction() as tx:
        status = await ctx.attempts.status(await ctx.policy_for("shop"), "shop", "lea", tx)
    assert status.failures == 1, "the impostor's look is counted against the claimed customer"


async def test_a_live_call_id_cannot_be_reused_and_claims_and_watches_find_only_own_tenant_calls(svc, speech):
    _, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    ivr = await key_for(ctx, "shop", TELEPHONY)
    other_ivr = await key_for(ctx, "globex", TELEPHONY, AGENT)
    call = LiveStream(address, ivr)
    try:
        call.send(_start("shop", "dup-1"), *call_requests("shop", "", target[0])[1:10])
        await call.call.read()
        second = LiveStream(address, ivr)
        second.send(_start("shop", "dup-1"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await second.rest()
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await second.close()
        # globex may use the same id for its own call: ids are per tenant.
        theirs = LiveStream(address, other_ivr)
        theirs.send(_start("globex", "dup-1"), *call_requests("globex", "", target[1])[1:10])
        await theirs.call.read()
        async with grpc.aio.insecure_channel(address) as ch:
            stub = verification_pb2_grpc.VerificationServiceStub(ch)
            # A call id globex does not hold is NOT_FOUND under its own tenant (shop's calls are
            # not there to find), and naming shop's tenant is refused outright.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ClaimIdentity(
                    verification_pb2.ClaimIdentityRequest(
                        tenant="globex", session_id="dup-2", customer_id="x"
                    ),
                    metadata=bearer(other_ivr),
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ClaimIdentity(
                    verification_pb2.ClaimIdentityRequest(tenant="shop", session_id="dup-1", customer_id="x"),
                    metadata=bearer(other_ivr),
                )
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert ctx.calls._calls[("shop", "dup-1")].session.start.customer_id == ""
        await theirs.rest()
        await theirs.close()
    finally:
        await call.rest()
        await call.close()
    assert ("shop", "dup-1") not in ctx.calls._calls, "an ended call leaves the registry"


async def test_watchers_see_scores_only_with_evidence_and_an_unknown_call_is_not_found(svc, speech):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ned", target[:4])
    ivr, analyst = await key_for(ctx, "shop", TELEPHONY), await key_for(ctx, "shop", AGENT, EVIDENCE)
    async with grpc.aio.insecure_channel(address) as ch:
        stub = verification_pb2_grpc.VerificationServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.WatchSession(
                verification_pb2.WatchSessionRequest(tenant="shop", session_id="nope"), metadata=bearer(ivr)
            ).read()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        call = LiveStream(address, ivr)
        try:
            call.send(_start("shop", "ivr-9", "ned"))
            await _heard(ctx, "shop", "ivr-9", 0.0)
            plain = stub.WatchSession(
                verification_pb2.WatchSessionRequest(tenant="shop", session_id="ivr-9"), metadata=bearer(ivr)
            )
            rich = stub.WatchSession(
                verification_pb2.WatchSessionRequest(tenant="shop", session_id="ivr-9"),
                metadata=bearer(analyst),
            )
            call.send(*call_requests("shop", "ned", target[5])[1:])
            await call.rest()
            seen_plain = [d async for d in plain]
            seen_rich = [d async for d in rich]
        finally:
            await call.close()
    scored = [d for d in seen_rich if d.evidence]
    assert scored and all(e.score != 0 for d in scored for e in d.evidence)
    assert all(e.score == 0 and e.llr == 0 and e.threshold == 0 for d in seen_plain for e in d.evidence)
    # Each watcher sees every decision from when it joined, in order, to the same final one.
    for seen in (seen_plain, seen_rich):
        numbers = [d.sequence for d in seen]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and seen[-1].final
    assert seen_plain[-1].sequence == seen_rich[-1].sequence


async def test_a_watcher_that_never_reads_is_dropped_and_never_holds_up_the_call():
    feed = DecisionFeed()
    slow = feed.subscribe(latest=False, limit=4)
    fast = feed.subscribe(latest=False)
    for i in range(50):  # publishing never waits for anyone
        feed.publish(Decision(Outcome.PENDING, "p", sequence=i + 1))
    feed.end()
    with pytest.raises(WatcherBehind):
        await anext(slow)
    assert [d.sequence async for d in fast] == list(range(1, 51))
    # Joining after the end gets the latest decision and the end, not a wait.
    late = [d.sequence async for d in feed.subscribe(latest=True, limit=4)]
    assert late == [50]
