"""Replay detection and the fraud assessment beside the decision (issue 11).

Attacks: a customer's own enrollment recording replayed over the telephone (8 kHz
mu-law, gain, noise) must be seen as recorded material, and under a regulated preset
must never authenticate, even with a correct second factor; a caller-facing principal
gets the risk level without the score (no oracle for tuning a replay).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.codecs import Encoding, decode, encode
from authsvc.audio.fingerprint import Fingerprint, fingerprint, fingerprints_at_speeds, match
from authsvc.audio.resample import resample
from authsvc.errors import ConfigError
from authsvc.fraud import replay
from authsvc.identity.roles import TELEPHONY
from authsvc.policy.engine import CustomerView, Outcome, StepUpState, decide
from authsvc.policy.risk import HIGH, LOW, NOT_ENOUGH_AUDIO, REPLAY, DetectorRisk, FraudAssessment
from authsvc.policy.schema import build_policy
from authsvc.stepup import totp
from tests.principals import key_for
from tests.test_policy import _evidence
from tests.test_service_assurance import _answer, _finance_customer, _speakers
from tests.wire import call_requests, stream


def _replay(decision) -> list:
    return [r for r in decision.fraud.risks if r.detector == "replay"]


def _telephone(wav16k: np.ndarray, seed: int = 0) -> np.ndarray:
    """A replay through a phone line: 8 kHz, -4 dB, noise at 25 dB SNR, G.711 mu-law; -> float."""
    rng = np.random.default_rng(seed)
    x = resample(wav16k, 16000, 8000) * 10 ** (-4 / 20)
    x = x + rng.normal(size=x.size) * np.sqrt(np.mean(x**2) / 10 ** (25 / 10))
    pcm = decode(encode(np.clip(x, -1, 1).astype(np.float32), Encoding.MULAW), Encoding.MULAW)
    return pcm.astype(np.float32) / 32768.0


def test_a_replay_through_the_phone_matches_its_recording_and_new_speech_does_not(speech):
    target, other = _speakers(speech)
    enrolled = [fingerprint(u, 16000) for u in target[:3]]
    replayed = fingerprint(_telephone(target[1][: 5 * 16000]), 8000)
    assert replay.assess(replayed, enrolled).level == HIGH
    for fresh in (target[4], other[0]):  # the customer saying something new; another speaker
        risk = replay.assess(fingerprint(_telephone(fresh[: 5 * 16000]), 8000), enrolled)
        assert risk.level == LOW, risk.reason
        assert risk.score < replay.MIN_ALIGNED


def test_too_little_audio_is_not_judged_and_never_reads_as_low_risk(speech):
    target, _ = _speakers(speech)
    short = fingerprint(_telephone(target[1][:16000]), 8000)
    risk = replay.assess(short, [fingerprint(target[1], 16000)])
    assert risk.level == NOT_ENOUGH_AUDIO and not risk.high and "needs" in risk.reason


def test_fingerprints_round_trip_and_garbage_is_refused(speech):
    fp = fingerprint(speech[sorted(speech)[0]][0], 16000)
    back = Fingerprint.from_bytes(fp.to_bytes())
    assert np.array_equal(back.hashes, fp.hashes) and np.array_equal(back.times, fp.times)
    assert match(back, fp).aligned == fp.hashes.size or match(back, fp).aligned > 0.9 * fp.hashes.size
    for junk in (b"", b"abc", b"\x00" * 7):
        with pytest.raises(ValueError):
            Fingerprint.from_bytes(junk)
    assert fingerprint(np.zeros(8000, np.float32), 8000).hashes.size == 0, "silence has no landmarks"


HIGH_REPLAY = FraudAssessment(
    (DetectorRisk(REPLAY, HIGH, 30.0, 9.0, "30 landmarks", "landmark-1", "matches"),)
)
MATCH = (_evidence(5.0, 1.0),)
VOICE = CustomerView(frozenset({"voice"}))


@pytest.mark.parametrize(
    ("action", "outcome", "reported"),
    [
        ("reject", Outcome.REJECTED, True),
        ("step_up", Outcome.STEP_UP_REQUIRED, True),
        ("flag", Outcome.AUTHENTICATED, True),
        ("ignore", Outcome.AUTHENTICATED, False),
    ],
)
def test_policy_says_what_a_high_replay_risk_does_to_a_match(action, outcome, reported):
    policy = build_policy("acme", {"fraud": {"replay": action}}, "test", "p")
    d = decide(policy, VOICE, MATCH, StepUpState(), 5.0, fraud=HIGH_REPLAY)
    assert d.outcome is outcome, d.reason
    assert (d.fraud == HIGH_REPLAY) is reported
    if action == "reject":
        assert "replay risk high" in d.reason and "30 landmarks" not in d.summary


def test_a_low_risk_changes_nothing_and_a_second_factor_cannot_launder_a_replay():
    low = FraudAssessment((DetectorRisk(REPLAY, LOW, 1.0, 9.0, "none", "landmark-1"),))
    general = build_policy("acme", {}, "test", "p")
    assert decide(general, VOICE, MATCH, StepUpState(), 5.0, fraud=low).outcome is Outcome.AUTHENTICATED
    finance = build_policy("bank", {"sector": "finance"}, "test", "p")
    passed = StepUpState(passed_factor="totp", passed_kind="totp")
    d = decide(finance, replace(VOICE, factors=("totp",)), MATCH, passed, 5.0, fraud=HIGH_REPLAY)
    assert d.outcome is Outcome.REJECTED, "a correct TOTP beside a replayed voice is still a replay"


@pytest.mark.parametrize("weak", ["flag", "ignore", "step_up"])
def test_a_regulated_policy_may_not_soften_what_a_replay_does(weak):
    with pytest.raises(ConfigError, match=r"fraud\.replay"):
        build_policy("bank", {"sector": "finance", "fraud": {"replay": weak}}, "test", "p")


async def test_a_replayed_enrollment_recording_never_authenticates_a_finance_caller(svc, speech):
    _, ctx, _, address, clock = svc
    secret = await _finance_customer(svc, speech)  # enrolled with target[:4], TOTP confirmed
    target, _ = _speakers(speech)
    # The attacker has one of the customer's recordings, and even their TOTP code.
    recording = resample(_telephone(target[0]), 8000, 16000)
    decisions = await asyncio.to_thread(stream, address, call_requests("bank", "alice", recording))
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decisions), [d.reason for d in decisions]
    scored = [d for d in decisions if d.fraud.risks]
    assert scored, [(d.outcome, d.reason) for d in decisions][-3:]
    assert all(r.level == V.RISK_LEVEL_HIGH for d in scored for r in _replay(d)), [
        (d.reason, list(d.fraud.risks)) for d in scored
    ]
    assert scored[0].outcome == V.OUTCOME_REJECTED and "replay risk high" in scored[0].reason
    assert scored[0].fraud.risks[0].detector == "replay" and scored[0].fraud.risks[0].version
    async with ctx.store.transaction() as tx:
        status = await ctx.attempts.status(await ctx.policy_for("bank"), "bank", "alice", tx)
    assert status.failures >= 1, "a replay is a counted failed attempt"
    # ... and even their TOTP code. By now the replays have reached the biometric limit, so the
    # code only re-enables the biometric (finance: never a factor alone), which rejects again.
    requests = [*call_requests("bank", "alice", recording), _answer(totp.generate(secret, clock.now))]
    again = await asyncio.to_thread(stream, address, requests)
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in again), [d.reason for d in again]
    assert again[-1].outcome == V.OUTCOME_REJECTED and "replay risk high" in again[-1].reason

    # The genuine customer, saying something new, is still let in.
    fresh = [*call_requests("bank", "alice", target[4]), _answer(totp.generate(secret, clock.now + 30))]
    genuine = await asyncio.to_thread(stream, address, fresh)
    assert genuine[-1].outcome == V.OUTCOME_AUTHENTICATED, genuine[-1].reason
    assert all(r.level == V.RISK_LEVEL_LOW for d in genuine for r in _replay(d))


async def test_a_telephony_principal_sees_the_risk_but_no_replay_score(svc, speech):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    from tests.test_service_assurance import _enroll_voice

    await _enroll_voice(channel, "shop", "carol", target[:4])
    ivr = await key_for(ctx, "shop", TELEPHONY)
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "carol", target[1]), ivr)
    risks = [r for d in decisions for r in _replay(d)]
    assert risks and all(r.level == V.RISK_LEVEL_HIGH for r in risks)
    assert all(r.score == 0 and r.threshold == 0 and "landmarks" not in r.reason for r in risks)
    # The general preset asks for a second factor instead of authenticating a suspected recording.
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decisions), [d.reason for d in decisions]
    assert any(d.outcome == V.OUTCOME_STEP_UP_REQUIRED for d in decisions)


async def test_a_recording_of_an_authenticated_call_replayed_later_is_caught(svc, speech):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    from tests.test_service_assurance import _enroll_voice

    await _enroll_voice(channel, "shop", "erin", target[:2])
    first = await asyncio.to_thread(stream, address, call_requests("shop", "erin", target[3]))
    assert first[-1].outcome == V.OUTCOME_AUTHENTICATED, first[-1].reason
    async with ctx.store.transaction() as tx:
        kept = [t for t in await ctx.vault.load("shop", "erin", "voice_fingerprint", tx)]
    assert sum(t.encoder_id.startswith("call-") for t in kept) == 1, "the authenticated call is kept"
    # Someone recorded that call (a line tap, a voicemail) and plays it back.
    replayed = resample(_telephone(target[3], seed=7), 8000, 16000)
    again = await asyncio.to_thread(stream, address, call_requests("shop", "erin", replayed))
    assert any(r.level == V.RISK_LEVEL_HIGH for d in again for r in _replay(d)), [d.reason for d in again]
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in again)
    # Erased customers keep nothing, calls included.
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await stub.DeleteCustomer(enrollment_pb2.DeleteCustomerRequest(tenant="shop", customer_id="erin"))
    async with ctx.store.transaction() as tx:
        assert not await tx.templates("shop", "erin")


@pytest.mark.parametrize("factor", [0.93, 0.96, 1.03, 1.07])
def test_a_replay_sped_up_or_slowed_down_a_few_percent_is_still_caught(speech, factor):
    from scipy.signal import resample_poly

    target, other = _speakers(speech)
    refs = [fingerprint(u, 16000) for u in target[:3]]
    # Played back at another speed: every peak moves in time and frequency.
    edited = resample_poly(target[1], 100, round(factor * 100)).astype(np.float32)
    assert not replay.assess(fingerprint(_telephone(edited), 8000), refs).high, "one speed alone misses it"
    assert replay.assess(fingerprints_at_speeds(_telephone(edited), 8000), refs).high
    # The search over speeds does not turn new speech into a replay.
    for fresh in (target[4], target[6], other[0]):
        assert not replay.assess(fingerprints_at_speeds(_telephone(fresh), 8000), refs).high


async def test_a_replay_stays_high_for_the_rest_of_the_call_and_counts_as_a_failed_attempt(svc, speech):
    channel, ctx, _, address, _ = svc
    target, _ = _speakers(speech)
    from tests.test_service_assurance import _enroll_voice

    await _enroll_voice(channel, "shop", "gil", target[:4])
    # A replayed recording, then a minute of line hiss, then the caller's own fresh words.
    rng = np.random.default_rng(3)
    hiss = (rng.normal(0, 0.003, 16000 * 61)).astype(np.float32)
    call = np.concatenate([target[0], hiss, target[6]])
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "gil", call))
    levels = [r.level for d in decisions for r in _replay(d)]
    assert V.RISK_LEVEL_HIGH in levels and levels[-1] == V.RISK_LEVEL_HIGH, levels
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in decisions), [d.reason for d in decisions]
    async with ctx.store.transaction() as tx:
        status = await ctx.attempts.status(await ctx.policy_for("shop"), "shop", "gil", tx)
    assert status.failures >= 1, "a look with a high replay risk is a failed attempt, even under step-up"
    rows = [e for e in await ctx.auditor.list("shop", 200, customer_id="gil") if e.action == "decision"]
    assert any(e.details.get("fraud", {}).get("replay", "").startswith("high/") for e in rows)


async def test_a_detector_the_policy_ignores_is_not_run_nor_reported(svc, speech, monkeypatch):
    channel, _, data_dir, address, _ = svc
    target, _ = _speakers(speech)
    from authsvc import session
    from tests.test_service_assurance import _enroll_voice

    await _enroll_voice(channel, "shop", "hal", target[:4])
    (data_dir / "policies" / "shop.toml").write_text(
        'sector = "general"\n[fraud]\nreplay = "ignore"\nsynthetic = "ignore"\nfraudster = "ignore"\n'
    )

    def never(*_args, **_kwargs):
        raise AssertionError("an ignored detector ran")

    monkeypatch.setattr(session, "fingerprints_at_speeds", never)
    monkeypatch.setattr(session.VerificationSession, "_synthetic_risk", never)
    monkeypatch.setattr(session.VerificationSession, "_fraudster_risk", never)
    # The tenant chose to ignore replays: its own enrollment recording is then only a voice match.
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "hal", target[0]))
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    assert all(not d.fraud.risks for d in decisions)
