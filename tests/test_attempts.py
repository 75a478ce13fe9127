"""Every attempt counts, and lockout works as NIST SP 800-63B describes it (issue 10).

Tried as an attacker would: cancelling a call after its REJECTED, staying on the line for many
looks, guessing PINs, and locking out customers from one source; and as the genuine customer:
after the biometric is disabled another factor is offered, and a success resets the count.
"""

from __future__ import annotations

import asyncio
import queue
import threading

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import common_pb2, enrollment_pb2, enrollment_pb2_grpc, verification_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import roles
from authsvc.keystroke import make_sample
from authsvc.stepup import totp
from tests.principals import bearer, key_for, register
from tests.test_identity import reason_of
from tests.test_service_assurance import _answer, _enroll_voice, _speakers, _totp, _write_policy
from tests.typists import Typist
from tests.wire import call_requests, keystroke_pb, stream

M = common_pb2
# Finance, with the biometric limit of the preset (5) and looks capped at 3.
BANK = 'sector = "finance"\n'


def _web_start(customer: str, tenant: str = "shop") -> V.VerifyRequest:
    return V.VerifyRequest(start=V.SessionStart(tenant=tenant, customer_id=customer, channel=M.CHANNEL_WEB))


async def _pin_customer(channel, typist: Typist, customer: str = "ivan") -> None:
    await register(channel, "shop", customer, ("typing",))
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id=customer,
            samples=[
                keystroke_pb(make_sample(typist.events("4711"), "dtmf", "4711"), "pin") for _ in range(6)
            ],
        )
    )


async def _failures(ctx, tenant: str = "shop", customer: str = "ivan") -> int:
    policy = await ctx.policy_for(tenant)
    async with ctx.store.transaction() as tx:
        return (await ctx.attempts.status(policy, tenant, customer, tx)).failures


def _pin(typist: Typist, digits: str) -> V.VerifyRequest:
    return V.VerifyRequest(keystrokes=keystroke_pb(make_sample(typist.events(digits), "dtmf", digits), "pin"))


async def test_a_wrong_pin_is_a_counted_failure_answered_like_a_rhythm_mismatch(service):
    channel, ctx, _, address = service
    owner, other = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    # What a caller-facing system sees (no evidence grant): it must not tell the two apart.
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)

    def attempt(typist: Typist, digits: str) -> list:
        return stream(address, [_web_start("ivan"), _pin(typist, digits)], telephony)

    wrong = await asyncio.to_thread(attempt, owner, "1234")  # the owner's rhythm, the wrong PIN
    rhythm = await asyncio.to_thread(attempt, other, "4711")  # the right PIN, someone else's rhythm
    shape = [(d.outcome, d.reason, len(d.evidence), d.fused_llr, d.attempts_remaining) for d in wrong]
    assert shape[0][-1] == rhythm[0].attempts_remaining + 1, "each counted before it was answered"
    shape[0] = (*shape[0][:-1], rhythm[0].attempts_remaining)
    assert shape == [
        (d.outcome, d.reason, len(d.evidence), d.fused_llr, d.attempts_remaining) for d in rhythm
    ]
    assert wrong[-1].outcome == V.OUTCOME_REJECTED
    assert await _failures(ctx) == 2, "both failures counted"
    events = await ctx.auditor.list("shop", 100, customer_id="ivan")
    assert [e.outcome for e in events if e.action == "knowledge.attempt"] == ["failed"]


async def test_guessing_pins_waits_exponentially_and_nothing_is_scored_meanwhile(svc):
    channel, ctx, _, address, clock = svc
    ctx.attempts.clock = clock
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    limit = (await ctx.policy_for("shop")).lockout.biometric_failures

    def attempt(digits: str) -> list:
        return stream(address, [_web_start("ivan"), _pin(owner, digits)], telephony)

    outcomes = [(await asyncio.to_thread(attempt, f"{n:04d}"))[-1].outcome for n in range(limit)]
    assert outcomes == [V.OUTCOME_REJECTED] * limit
    # No other factor to offer: a wait, and the right PIN is not even scored meanwhile.
    waiting = await asyncio.to_thread(attempt, "4711")
    assert waiting[-1].outcome == V.OUTCOME_REJECTED and waiting[-1].retry_after_seconds == pytest.approx(30)
    assert all(not d.evidence for d in waiting)
    clock.now += 31
    again = await asyncio.to_thread(attempt, "9999")  # one more wrong guess once the wait is over
    assert again[0].evidence and again[0].outcome == V.OUTCOME_REJECTED
    assert again[-1].retry_after_seconds == pytest.approx(60), "the wait doubles with each failure"
    events = await ctx.auditor.list("shop", 100, customer_id="ivan")
    assert [e.outcome for e in events if e.action == "biometric.limit"] == ["delayed", "delayed"]


async def test_a_call_that_ends_after_a_scored_mismatch_without_half_closing_still_counts(service):
    channel, ctx, _, address = service
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)

    def broken_call() -> tuple[int, grpc.StatusCode]:
        # Refused, then a malformed message: the stream ends with INVALID_ARGUMENT, not a half-close.
        seen = []
        with grpc.insecure_channel(address) as ch:
            call = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                iter([_web_start("ivan"), _pin(impostor, "0815"), V.VerifyRequest()]),
                metadata=bearer(telephony),
                timeout=60,
            )
            try:
                seen.extend(d.outcome for d in call)
            except grpc.RpcError as err:
                return seen.count(V.OUTCOME_REJECTED), err.code()
        return seen.count(V.OUTCOME_REJECTED), grpc.StatusCode.OK

    def cancelled_call() -> int:
        hung_up = threading.Event()

        def requests():
            yield _web_start("ivan")
            yield _pin(impostor, "0815")
            hung_up.wait(30)  # the caller stays on the line until it hangs up

        with grpc.insecure_channel(address) as ch:
            call = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                requests(), metadata=bearer(telephony), timeout=60
            )
            try:
                for decision in call:
                    if decision.outcome == V.OUTCOME_REJECTED:
                        call.cancel()  # hang up as soon as it is refused
                        return 1
            finally:
                hung_up.set()
        return 0

    assert await asyncio.to_thread(broken_call) == (1, grpc.StatusCode.INVALID_ARGUMENT)
    assert await asyncio.to_thread(cancelled_call) == 1
    # Counted before the caller saw the REJECTED: nothing is left to count after the hang-up.
    assert await _failures(ctx) == 2


async def test_a_long_impostor_call_gets_at_most_max_looks_each_counted(service, speech):
    channel, ctx, _, address = service
    target, other = _speakers(speech)
    await _enroll_voice(channel, "shop", "lena", target[:3])
    policy = await ctx.policy_for("shop")
    # About 35 s of someone else's speech: at the old rolling re-decisions, over a dozen looks.
    long_call = np.concatenate(other[:5])
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "lena", long_call))
    scored = [d for d in decisions if d.evidence and not d.final]
    assert 1 <= len(scored) <= policy.decision.max_looks
    assert all(d.outcome == V.OUTCOME_REJECTED for d in scored)
    # Every look that failed counted, the final one included where new speech made it a look.
    assert len(scored) <= await _failures(ctx, customer="lena") <= policy.decision.max_looks
    assert decisions[-1].final and decisions[-1].outcome == V.OUTCOME_REJECTED
    # Each look was held to the per-look share of the target.
    assert scored[0].evidence[0].target_far == pytest.approx(
        policy.voice.target_far / policy.decision.max_looks
    )


async def _locked_out(svc, speech, tenant: str, customer: str) -> bytes:
    """A customer with voice and TOTP whose biometric an impostor has driven to its limit;
    -> the TOTP secret."""
    channel, ctx, _, address, clock = svc
    target, other = _speakers(speech)
    await register(channel, tenant, customer, ("voice", "totp"))
    await _enroll_voice(channel, tenant, customer, target[:3])
    secret = await _totp(channel, clock, tenant, customer)
    limit = (await ctx.policy_for(tenant)).lockout.biometric_failures
    impostor_call = call_requests(tenant, customer, np.concatenate(other[:2]))
    while await _failures(ctx, tenant, customer) < limit:
        decisions = await asyncio.to_thread(stream, address, impostor_call)
        assert decisions[-1].outcome in (V.OUTCOME_REJECTED, V.OUTCOME_STEP_UP_REQUIRED)
    events = await ctx.auditor.list(tenant, 200, customer_id=customer)
    assert [e.outcome for e in events if e.action == "biometric.limit"] == ["disabled"]
    clock.now += 60
    return secret


async def test_after_the_limit_the_other_factor_is_asked_for_and_decides_alone_at_aal1(svc, speech):
    _, ctx, _, address, clock = svc
    secret = await _locked_out(svc, speech, "shop", "olga")
    target, _ = _speakers(speech)
    # The genuine customer calls: the voice is not scored; TOTP is asked for and decides alone.
    call = call_requests("shop", "olga", target[4])
    decisions = await asyncio.to_thread(stream, address, [call[0], _answer(totp.generate(secret, clock.now))])
    assert decisions[0].outcome == V.OUTCOME_STEP_UP_REQUIRED and not decisions[0].evidence
    done = decisions[1]
    assert done.outcome == V.OUTCOME_AUTHENTICATED and list(done.assertion.methods) == [M.AUTH_METHOD_TOTP]
    assert done.assertion.assurance_level == "AAL1", "one possession factor alone: AAL1"
    assert await _failures(ctx, "shop", "olga") == 0, "a successful authentication resets the count"
    # The biometric is back.
    decisions = await asyncio.to_thread(stream, address, call)
    assert V.OUTCOME_AUTHENTICATED in [d.outcome for d in decisions if d.evidence]


async def test_in_finance_failing_on_purpose_never_lowers_the_bar_to_one_factor(svc, speech):
    _, ctx, data_dir, address, clock = svc
    _write_policy(data_dir, "bank", BANK)
    secret = await _locked_out(svc, speech, "bank", "olga")
    target, other = _speakers(speech)
    # An attacker holding the TOTP (a stolen seed) after locking the biometric: the code
    # re-enables the voice check, which the attacker's voice then fails.
    attack = call_requests("bank", "olga", np.concatenate(other[2:4]))
    decisions = await asyncio.to_thread(
        stream, address, [attack[0], _answer(totp.generate(secret, clock.now)), *attack[1:]]
    )
    assert decisions[0].outcome == V.OUTCOME_STEP_UP_REQUIRED
    assert V.OUTCOME_AUTHENTICATED not in [d.outcome for d in decisions]
    assert decisions[-1].outcome == V.OUTCOME_REJECTED
    # The genuine customer, the same way: TOTP, then the voice decides, and both make AAL2.
    clock.now += 60
    await ctx.factors.unlock("bank", "olga", "test")  # the attacker's looks locked it again
    for _ in range((await ctx.policy_for("bank")).lockout.biometric_failures):
        async with ctx.store.transaction() as tx:
            await tx.lock_customer("bank", "olga")
            await ctx.attempts.failed(await ctx.policy_for("bank"), "bank", "olga", True, tx)
    call = call_requests("bank", "olga", target[4])
    decisions = await asyncio.to_thread(
        stream, address, [call[0], _answer(totp.generate(secret, clock.now)), *call[1:]]
    )
    done = [d for d in decisions if d.outcome == V.OUTCOME_AUTHENTICATED]
    assert done, [d.reason for d in decisions]
    assert set(done[0].assertion.methods) == {M.AUTH_METHOD_VOICE, M.AUTH_METHOD_TOTP}
    assert done[0].assertion.assurance_level == "AAL2"
    assert await _failures(ctx, "bank", "olga") == 0


async def test_unlock_needs_tenant_admin_and_clears_the_biometric_lock(service):
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    for n in range((await ctx.policy_for("shop")).lockout.biometric_failures):
        await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin(owner, f"{n:04d}")], telephony)
    request = enrollment_pb2.UnlockCustomerRequest(tenant="shop", customer_id="ivan")

    def unlock(key: str):
        with grpc.insecure_channel(address) as ch:
            return enrollment_pb2_grpc.EnrollmentServiceStub(ch).UnlockCustomer(request, metadata=bearer(key))

    for role in (roles.TELEPHONY, roles.ENROLLMENT, roles.AGENT):
        key = await key_for(ctx, "shop", role)
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(unlock, key)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(err.value) == "ROLE_NOT_GRANTED"
    assert await _failures(ctx) > 0
    reply = await asyncio.to_thread(unlock, await key_for(ctx, "shop", roles.TENANT_ADMIN))
    assert "lockout.biometric" in reply.factors
    assert await _failures(ctx) == 0
    decisions = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin(owner, "4711")], telephony)
    # Scored again (a DTMF PIN alone never authenticates: keypad timing has no calibration).
    assert decisions[-1].evidence and decisions[-1].retry_after_seconds == 0, "scored again"


async def test_one_source_cannot_lock_out_many_customers(svc):
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[lockout]\nsource_failures_per_hour = 3\n")
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    victims = [f"v{i}" for i in range(5)]
    for victim in victims:
        await _pin_customer(channel, owner, victim)
    attacker = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    outcomes = []
    for victim in victims:
        try:
            decisions = await asyncio.to_thread(
                stream, address, [_web_start(victim), _pin(impostor, "0815")], attacker
            )
            outcomes.append(decisions[-1].outcome)
        except grpc.RpcError as err:
            outcomes.append(err.code())
    assert outcomes == [V.OUTCOME_REJECTED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    assert [await _failures(ctx, customer=v) for v in victims] == [1, 1, 1, 0, 0]
    events = await ctx.auditor.list("shop", 200)
    assert [e.outcome for e in events if e.action == "throttle.source"] == ["limited"]
    # Another caller (another credential) is not held back by the attacker's budget.
    other = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    decisions = await asyncio.to_thread(stream, address, [_web_start("v4"), _pin(owner, "4711")], other)
    assert decisions[-1].evidence


async def test_hill_climbed_typing_cannot_lift_a_non_matching_voice(service, speech):
    channel, ctx, _, address = service
    target, other = _speakers(speech)
    owner = Typist(np.random.default_rng(7))
    await _enroll_voice(channel, "shop", "kim", target[:3])
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="kim",
            samples=[keystroke_pb(owner.password(), "password") for _ in range(6)],
        )
    )
    # The best an attacker can climb to: the owner's own typing, as strong as typing gets.
    call = call_requests("shop", "kim", other[0])
    typed = [V.VerifyRequest(keystrokes=keystroke_pb(owner.password(), "password")) for _ in range(2)]
    decisions = await asyncio.to_thread(stream, address, [call[0], *typed, *call[1:]])
    fused = [d for d in decisions if len({e.modality for e in d.evidence}) == 2]
    assert fused, "voice and typing were fused"
    typing_llr = max(e.llr for d in fused for e in d.evidence if e.modality != M.MODALITY_VOICE)
    assert typing_llr > (await ctx.policy_for("shop")).keystroke.max_llr, "the typing itself is strong"
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decisions)


# -- found by attacking the first version of this change ------------------------------------------


async def test_a_degenerate_voice_embedding_is_a_counted_rejection_never_a_match(
    service, speech, monkeypatch
):
    # Crafted noise can drive every GE2E window to a zero output: the cosine is then NaN, which
    # compares False both ways and once let every look through.
    channel, ctx, _, address = service
    target, other = _speakers(speech)
    await _enroll_voice(channel, "shop", "nia", target[:3])
    real = ctx.runner.embed

    async def zero(wav, deadline=None):
        return np.zeros_like(await real(wav, deadline=deadline))

    monkeypatch.setattr(ctx.runner, "embed", zero)
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "nia", other[0]))
    scored = [d for d in decisions if d.evidence]
    assert scored and all(
        d.outcome == V.OUTCOME_REJECTED for d in decisions if d.outcome != V.OUTCOME_PENDING
    )
    # Every look counted (how many looks a loaded machine gets to make varies; at most max_looks).
    looks = (await ctx.policy_for("shop")).decision.max_looks
    assert len([d for d in scored if not d.final]) <= await _failures(ctx, customer="nia") <= looks
    from tests.wire import enroll_request

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollVoice(
            enroll_request("shop", "nia", target[3]), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "voiceprint" in err.value.details()


def _no_timing_pin(digits: str) -> V.VerifyRequest:
    """The PIN with a correction before every digit and no key-up times: once the text matches,
    no timing is left to compare."""
    from authsvc.keystroke import KeyEvent

    events, t = [], 0.0
    for i, ch in enumerate(digits):
        if i:
            events += [KeyEvent("9" if ch != "9" else "8", t), KeyEvent("backspace", t + 0.1)]
            t += 0.2
        events.append(KeyEvent(ch, t))
        t += 0.2
    return V.VerifyRequest(keystrokes=keystroke_pb(make_sample(events, "fixed", digits), "pin"))


async def test_a_sample_that_cannot_be_compared_is_a_counted_failure_like_a_wrong_pin(service):
    channel, ctx, _, address = service
    await _pin_customer(channel, Typist(np.random.default_rng(5)))
    key = await key_for(ctx, "shop", roles.TELEPHONY)

    def attempt(digits: str) -> list:
        return [d.outcome for d in stream(address, [_web_start("ivan"), _no_timing_pin(digits)], key)]

    wrong, right = await asyncio.to_thread(attempt, "1234"), await asyncio.to_thread(attempt, "4711")
    assert wrong == right == [V.OUTCOME_REJECTED, V.OUTCOME_REJECTED], "the right PIN is not told apart"
    assert await _failures(ctx) == 2


async def test_a_voice_call_for_a_customer_without_voiceprint_scores_no_pin(service):
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    start = call_requests("shop", "ivan", np.zeros(1600, np.float32))[0]
    decisions = await asyncio.to_thread(
        stream, address, [start, *[_pin(owner, "1234") for _ in range(3)]], key
    )
    assert {d.outcome for d in decisions} == {V.OUTCOME_NOT_ENROLLED}
    assert all(not d.evidence for d in decisions), "not scored, so not an uncounted PIN oracle"


async def test_the_source_budget_holds_in_sessions_already_open(svc):
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[lockout]\nsource_failures_per_hour = 1\n")
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY)
    await asyncio.to_thread(
        stream, address, [_web_start("ivan"), *[_pin(impostor, "0815") for _ in range(5)]], key
    )
    assert await _failures(ctx) == 1, "the looks after the budget was spent were not made"


async def test_a_decision_sent_again_does_not_reset_the_count(svc):
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[keystroke]\nalone = true\n")
    owner, impostor = Typist(np.random.default_rng(5), noise=0.02), Typist(np.random.default_rng(6))
    await register(channel, "shop", "kai", ("typing",))
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="kai",
            samples=[keystroke_pb(owner.password(), "password") for _ in range(6)],
        )
    )
    key = await key_for(ctx, "shop", roles.TELEPHONY)
    todo: queue.Queue = queue.Queue()
    seen: queue.Queue = queue.Queue()
    # A sample for a profile the customer does not have adds no evidence: the session re-sends
    # its decision.
    nosuch = V.VerifyRequest(
        keystrokes=keystroke_pb(make_sample(owner.events("abc"), "fixed", "abc"), "nosuch")
    )

    def held_open() -> None:
        def requests():
            yield _web_start("kai")
            yield V.VerifyRequest(keystrokes=keystroke_pb(owner.password(), "password"))
            while (item := todo.get(timeout=120)) is not None:
                yield item

        with grpc.insecure_channel(address) as ch:
            for d in verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                requests(), metadata=bearer(key), timeout=120
            ):
                seen.put(d.outcome)

    call = asyncio.get_running_loop().run_in_executor(None, held_open)
    try:
        assert await asyncio.to_thread(seen.get, True, 60) == V.OUTCOME_AUTHENTICATED
        wrong = V.VerifyRequest(keystrokes=keystroke_pb(impostor.password(), "password"))
        for _ in range(3):  # wrong guesses from other sessions meanwhile
            await asyncio.to_thread(stream, address, [_web_start("kai"), wrong], key)
        assert await _failures(ctx, customer="kai") == 3
        todo.put(nosuch)
        assert await asyncio.to_thread(seen.get, True, 60) == V.OUTCOME_AUTHENTICATED
        assert await _failures(ctx, customer="kai") == 3, "a decision sent again is no new authentication"
    finally:
        todo.put(None)
        await call
