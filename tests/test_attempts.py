"""Every attempt counts (a first slice of issue 10): a wrong PIN or password is a counted,
audited failed attempt answered like a rhythm that does not match, never a distinct error; a
call that ends after a scored mismatch without half-closing (cancelled, broken by a bad message)
still counts."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from authsvc.api.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import roles
from authsvc.keystroke import make_sample
from tests.principals import bearer, key_for, register
from tests.typists import Typist
from tests.wire import keystroke_pb, stream

M = common_pb2


def _web_start(customer: str) -> V.VerifyRequest:
    return V.VerifyRequest(start=V.SessionStart(tenant="shop", customer_id=customer, channel=M.CHANNEL_WEB))


async def _pin_customer(channel, typist: Typist) -> None:
    await register(channel, "shop", "ivan", ("typing",))
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="ivan",
            samples=[
                keystroke_pb(make_sample(typist.events("4711"), "dtmf", "4711"), "pin") for _ in range(6)
            ],
        )
    )


async def _attempts_left(ctx) -> int:
    policy = await ctx.policy_for("shop")
    return (await ctx.factors.lock_status(policy, "shop", "ivan"))[1]


async def test_a_wrong_pin_is_a_counted_failure_answered_like_a_rhythm_mismatch(service):
    channel, ctx, _, address = service
    owner, other = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)
    left = await _attempts_left(ctx)

    def attempt(typist: Typist, digits: str) -> list:
        sample = keystroke_pb(make_sample(typist.events(digits), "dtmf", digits), "pin")
        return stream(address, [_web_start("ivan"), V.VerifyRequest(keystrokes=sample)], telephony)

    wrong = await asyncio.to_thread(attempt, owner, "1234")  # the owner's rhythm, the wrong PIN
    rhythm = await asyncio.to_thread(attempt, other, "4711")  # the right PIN, someone else's rhythm
    shape = [(d.outcome, d.reason, len(d.evidence), d.fused_llr) for d in wrong]
    assert shape == [(d.outcome, d.reason, len(d.evidence), d.fused_llr) for d in rhythm], "no PIN oracle"
    assert wrong[-1].outcome == V.OUTCOME_REJECTED
    assert await _attempts_left(ctx) <= left - 2, "both failures counted"
    events = await ctx.auditor.list("shop", 100, customer_id="ivan")
    assert [e.outcome for e in events if e.action == "knowledge.attempt"] == ["failed"]


async def test_guessing_pins_locks_the_customer_out(service):
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)
    limit = (await ctx.policy_for("shop")).lockout.max_failures
    guesses = [f"{n:04d}" for n in range(limit + 2)]
    outcomes = []
    for digits in guesses:
        sample = keystroke_pb(make_sample(owner.events(digits), "dtmf", digits), "pin")
        decisions = await asyncio.to_thread(
            stream, address, [_web_start("ivan"), V.VerifyRequest(keystrokes=sample)], telephony
        )
        outcomes.append((decisions[-1].outcome, decisions[-1].retry_after_seconds > 0))
    assert outcomes[-1] == (V.OUTCOME_REJECTED, True), outcomes
    # Locked: the right PIN is not even scored now.
    right = keystroke_pb(make_sample(owner.events("4711"), "dtmf", "4711"), "pin")
    decisions = await asyncio.to_thread(
        stream, address, [_web_start("ivan"), V.VerifyRequest(keystrokes=right)], telephony
    )
    assert decisions[-1].outcome == V.OUTCOME_REJECTED and decisions[-1].retry_after_seconds > 0


async def test_a_call_that_ends_after_a_scored_mismatch_without_half_closing_still_counts(service):
    channel, ctx, _, address = service
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)
    before = await _attempts_left(ctx)

    def wrong_rhythm() -> V.VerifyRequest:  # the right PIN, keyed by someone else
        return V.VerifyRequest(
            keystrokes=keystroke_pb(make_sample(impostor.events("4711"), "dtmf", "4711"), "pin")
        )

    def broken_call() -> tuple[int, grpc.StatusCode]:
        # Refused, then a malformed message: the stream ends with INVALID_ARGUMENT, not a half-close.
        from authsvc.api.v1 import verification_pb2_grpc

        seen = []
        with grpc.insecure_channel(address) as ch:
            call = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                iter([_web_start("ivan"), wrong_rhythm(), V.VerifyRequest()]),
                metadata=bearer(telephony),
                timeout=60,
            )
            try:
                seen.extend(d.outcome for d in call)
            except grpc.RpcError as err:
                return seen.count(V.OUTCOME_REJECTED), err.code()
        return seen.count(V.OUTCOME_REJECTED), grpc.StatusCode.OK

    def cancelled_call() -> int:
        import threading

        from authsvc.api.v1 import verification_pb2_grpc

        hung_up = threading.Event()

        def requests():
            yield _web_start("ivan")
            yield wrong_rhythm()
            hung_up.wait(30)  # the caller stays on the line until it hangs up

        with grpc.insecure_channel(address) as ch:
            call = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                requests(), metadata=bearer(telephony), timeout=60
            )
            for decision in call:
                if decision.outcome == V.OUTCOME_REJECTED:
                    call.cancel()  # hang up as soon as it is refused
                    hung_up.set()
                    return 1
        hung_up.set()
        return 0

    assert await asyncio.to_thread(broken_call) == (1, grpc.StatusCode.INVALID_ARGUMENT)
    assert await asyncio.to_thread(cancelled_call) == 1
    for _ in range(100):  # the count of a cancelled call is written after the stream is gone
        if await _attempts_left(ctx) <= before - 2:
            break
        await asyncio.sleep(0.05)
    assert await _attempts_left(ctx) == before - 2
