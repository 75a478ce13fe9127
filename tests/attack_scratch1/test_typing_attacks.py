"""Attacks on attempt accounting through typing samples (cheap: no speech is embedded).

Run: .venv/bin/python -m pytest -q tests/attack_scratch1 -k sqlite -p no:cacheprovider
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from authsvc.api.v1 import common_pb2 as M
from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import roles
from authsvc.keystroke import KeyEvent, make_sample
from tests.principals import key_for, register
from tests.test_attempts import _failures, _pin, _pin_customer, _web_start
from tests.test_service_assurance import _write_policy
from tests.typists import Typist
from tests.wire import keystroke_pb, start_request, stream


def _pin_as_fixed(typist: Typist, digits: str) -> V.VerifyRequest:
    """The same keypad PIN, labelled FIXED_TEXT instead of DTMF (the client chooses the kind)."""
    return V.VerifyRequest(keystrokes=keystroke_pb(make_sample(typist.events(digits), "fixed", digits), "pin"))


async def test_genuine_dtmf_pin_is_always_rejected_and_counted_so_the_owner_locks_himself_out(service):
    """A DTMF sample is capped at keystroke.max_llr (1.0) but held to the per-look typing threshold
    (~3.3 LLR): the owner's right PIN with the owner's rhythm is REJECTED and counted every time."""
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5), noise=0.02)  # a very steady typist
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    limit = (await ctx.policy_for("shop")).lockout.biometric_failures
    outcomes = []
    for _ in range(limit):
        d = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin(owner, "4711")], key)
        outcomes.append(d[0].outcome)
        ev = d[0].evidence[0]
        assert ev.llr > ev.threshold, "the owner's rhythm itself passes the per-look typing threshold"
    assert outcomes == [V.OUTCOME_REJECTED] * limit
    assert await _failures(ctx) == limit, "the genuine customer locked out their own biometric"
    after = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin(owner, "4711")], key)
    assert after[-1].retry_after_seconds > 0


async def test_dtmf_rule_is_evaded_by_labelling_the_pin_fixed_text(service):
    """`calibrated` comes from the probe's kind, which the client picks; the profile does not
    remember that it was enrolled from a keypad. Relabelled, the PIN counts in full."""
    channel, ctx, data_dir, address = service
    (data_dir / "policies").mkdir(parents=True, exist_ok=True)
    owner = Typist(np.random.default_rng(5), noise=0.02)
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    relabelled = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin_as_fixed(owner, "4711")], key)
    ev = relabelled[0].evidence[0]
    assert ev.calibrated, "a keypad PIN scored as calibrated typing"
    # Typing alone not allowed by default -> the match asks for a second factor instead of failing.
    assert relabelled[0].outcome == V.OUTCOME_STEP_UP_REQUIRED
    # With keystroke.alone (typing may authenticate on its own) it authenticates: a DTMF PIN alone.
    _write_policy(data_dir, "shop", "[keystroke]\nalone = true\n")
    alone = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin_as_fixed(owner, "4711")], key)
    assert alone[0].outcome == V.OUTCOME_AUTHENTICATED
    dtmf = await asyncio.to_thread(stream, address, [_web_start("ivan"), _pin(owner, "4711")], key)
    assert dtmf[0].outcome == V.OUTCOME_REJECTED, "labelled DTMF, the same PIN never passes"


async def test_pin_guesses_in_a_voice_session_of_a_customer_without_voiceprint_are_scored_uncounted(service):
    """A session opened with an audio format, for a customer with a PIN profile and no voiceprint:
    every look decides NOT_ENROLLED (not counted as a failure), yet the typing is scored and, to an
    evidence principal, the LLR shows -12 for a wrong PIN: an unthrottled PIN oracle."""
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY, roles.EVIDENCE)
    start = start_request("shop", "ivan")
    seen = {}
    for guess in ("0000", "1234", "4711", "9999", "4711", "1111", "2222", "3333"):
        d = await asyncio.to_thread(stream, address, [start, _pin(owner, guess)], key)
        looks = [x for x in d if x.evidence]
        assert looks and looks[0].outcome == V.OUTCOME_NOT_ENROLLED
        seen[guess] = looks[0].evidence[0].llr
    assert seen["4711"] != -12.0 and all(v == -12.0 for g, v in seen.items() if g != "4711")
    assert await _failures(ctx) == 0, "none of the 7 wrong PINs was counted"
    assert all(not times for times in ctx.throttle._failures.values()), "nor counted by the source throttle"


def _no_timing_pin(digits: str) -> V.VerifyRequest:
    """The PIN typed with a correction before every digit after the first and no key-up times: once
    the text matches, no feature is left to compare."""
    events, t = [], 0.0
    for i, ch in enumerate(digits):
        if i:
            events += [KeyEvent("9" if ch != "9" else "8", t), KeyEvent("backspace", t + 0.1)]
            t += 0.2
        events.append(KeyEvent(ch, t))
        t += 0.2
    return V.VerifyRequest(keystrokes=keystroke_pb(make_sample(events, "fixed", digits), "pin"))


async def test_pin_oracle_right_pin_errors_uncounted_wrong_pin_is_rejected(service):
    """Right PIN -> INVALID_ARGUMENT ("no timing ... can be compared"), not counted; wrong PIN ->
    REJECTED. The PIN is learned without its rhythm, despite 'no oracle for the text'."""
    channel, ctx, _, address = service
    owner = Typist(np.random.default_rng(5))
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY)  # no evidence grant needed

    def attempt(digits: str):
        try:
            return [d.outcome for d in stream(address, [_web_start("ivan"), _no_timing_pin(digits)], key)]
        except grpc.RpcError as err:
            return err.code()

    assert await asyncio.to_thread(attempt, "1234") == [V.OUTCOME_REJECTED, V.OUTCOME_REJECTED]
    assert await _failures(ctx) == 1
    assert await asyncio.to_thread(attempt, "4711") == grpc.StatusCode.INVALID_ARGUMENT
    assert await _failures(ctx) == 1, "the right PIN was tried for free"


async def test_one_session_overshoots_the_source_budget_by_max_looks(svc):
    """The source throttle is checked only when a session begins: a budget of 1 still lets one
    session make max_looks (3) counted failures."""
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[lockout]\nsource_failures_per_hour = 1\n")
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner)
    key = await key_for(ctx, "shop", roles.TELEPHONY)
    reqs = [_web_start("ivan"), *[_pin(impostor, "4711") for _ in range(5)]]
    await asyncio.to_thread(stream, address, reqs, key)
    assert await _failures(ctx) == 3


async def test_concurrent_sessions_bypass_the_source_throttle(svc):
    """Open many sessions first (each passes `throttle.check` with no failures yet), then fail in
    all of them: a budget of 3 failures an hour lets one source fail 3 looks on each of 8 customers."""
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[lockout]\nsource_failures_per_hour = 3\n")
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    victims = [f"c{i}" for i in range(8)]
    for v in victims:
        await _pin_customer(channel, owner, v)
    key = await key_for(ctx, "shop", roles.TELEPHONY)
    import threading

    begun = threading.Barrier(len(victims))

    def one(victim: str) -> int:
        from authsvc.api.v1 import verification_pb2_grpc
        from tests.principals import bearer

        def requests():
            yield _web_start(victim)
            begun.wait(60)  # every session has been started (and checked) before anyone fails
            import time

            time.sleep(1.0)
            for _ in range(3):
                yield _pin(impostor, "4711")

        with grpc.insecure_channel(address) as ch:
            call = verification_pb2_grpc.VerificationServiceStub(ch).Verify(
                requests(), metadata=bearer(key), timeout=120
            )
            return sum(1 for d in call if d.outcome == V.OUTCOME_REJECTED and d.evidence)

    results = await asyncio.gather(*(asyncio.to_thread(one, v) for v in victims))
    counted = [await _failures(ctx, customer=v) for v in victims]
    assert sum(counted) == 24 and sum(results) == 24, (counted, results)
    # Five customers now need only two more failures each; a second batch of concurrent sessions
    # is refused only because the throttle finally saw the failures.


async def test_ivr_credential_is_refused_for_every_customer_once_one_caller_fails_enough(svc):
    """The source key is <credential>@<peer host>. Behind a telephony platform every caller shares
    the IVR's credential and address: one phone caller failing on purpose (or ordinary false
    rejections) spends the budget, and then nobody's session starts."""
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "shop", "[lockout]\nsource_failures_per_hour = 6\n")
    owner, impostor = Typist(np.random.default_rng(5)), Typist(np.random.default_rng(6))
    await _pin_customer(channel, owner, "victim")
    await _pin_customer(channel, owner, "genuine")
    ivr = await key_for(ctx, "shop", roles.TELEPHONY)
    # Two calls from a prankster, three looks each.
    for _ in range(2):
        await asyncio.to_thread(stream, address, [_web_start("victim"), *[_pin(impostor, "1") for _ in range(3)]], ivr)
    try:
        await asyncio.to_thread(stream, address, [_web_start("genuine"), _pin(owner, "4711")], ivr)
        raise AssertionError("expected the genuine caller to be refused")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_free_text_session_of_a_finance_tenant_fails(svc):
    """finance: keystroke.target_far 1e-4 / max_looks 3 = 3.3e-5 is below what the free-text
    calibration resolves (8.5e-5): every typing-only free-text look raises ConfigError, after the
    look was scored. Accepted by the policy loader; every such session fails."""
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "bank", 'sector = "finance"\n')
    owner = Typist(np.random.default_rng(5))
    await register(channel, "bank", "fay", ("typing", "totp"))
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="bank", customer_id="fay", samples=[keystroke_pb(owner.free(120)) for _ in range(4)]
        )
    )
    start = V.VerifyRequest(start=V.SessionStart(tenant="bank", customer_id="fay", channel=M.CHANNEL_WEB))
    try:
        await asyncio.to_thread(stream, address, [start, V.VerifyRequest(keystrokes=keystroke_pb(owner.free(120)))])
        raise AssertionError("expected a failure")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
        assert "cannot resolve" in err.details()
