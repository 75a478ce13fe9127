"""Tenant policy files, score calibration (FAR -> threshold) and the voice decision."""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from authsvc.errors import ConfigError
from authsvc.policy.engine import (
    CustomerView,
    ModalityEvidence,
    Outcome,
    StepUpState,
    decide,
    voice_threshold,
)
from authsvc.policy.schema import PolicyBook, TenantPolicy, VoiceRules, parse_policy
from authsvc.scoring.calibration import Calibration, calibration_path, load_calibration

VALID = """
tenant = "acme"

[voice]
target_far = 0.001
min_net_speech_s = 4
redecide_interval_s = 1.5
min_enroll_speech_s = 2.0
max_window_s = 20.0
"""


# --- parse_policy -----------------------------------------------------------------------------


def test_valid_policy_file_is_parsed_into_rules():
    policy = parse_policy(VALID, "acme", "acme.toml")
    assert policy.tenant == "acme"
    assert policy.voice == VoiceRules(
        target_far=0.001,
        min_net_speech_s=4.0,
        redecide_interval_s=1.5,
        min_enroll_speech_s=2.0,
        max_window_s=20.0,
    )
    assert policy.policy_id.startswith("acme@")


def test_policy_id_changes_with_the_file_content():
    a = parse_policy(VALID, "acme", "acme.toml")
    b = parse_policy(VALID.replace("0.001", "0.002"), "acme", "acme.toml")
    assert a.policy_id != b.policy_id
    assert a.policy_id == parse_policy(VALID, "acme", "other-origin").policy_id


def test_empty_policy_file_gives_default_rules():
    assert parse_policy("", "acme", "acme.toml").voice == VoiceRules()


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[voice]\ntarget_farr = 0.01\n", "voice.target_farr", "unknown field"),
        ('[voice]\ntarget_far = "low"\n', "voice.target_far", "must be a number"),
        ("[voice]\nmin_net_speech_s = true\n", "voice.min_net_speech_s", "must be a number"),
        ("[voice]\ntarget_far = 0.9\n", "voice.target_far", "outside"),
        ("[voice]\ntarget_far = 0.0\n", "voice.target_far", "outside"),
        ("[voice]\nthreshold = 1.5\n", "voice.threshold", "outside"),
        ("[voice]\nthreshold = nan\n", "voice.threshold", "finite"),
        ("[voice]\ntarget_far = inf\n", "voice.target_far", "finite"),
        ("[voice]\nmin_net_speech_s = 0.1\n", "voice.min_net_speech_s", "outside"),
        ("[voice]\nmin_net_speech_s = 10\nmax_window_s = 5\n", "voice.max_window_s", "min_net_speech_s"),
        ('tenant = "globex"\n', "tenant", "globex"),
        ("[keystroke]\nx = 1\n", "keystroke.x", "unknown field"),
        ("[biometrics]\nx = 1\n", "biometrics", "unknown section"),
        ("voice = 3\n", "[voice]", "must be a table"),
    ],
    ids=[
        "unknown-field",
        "string-for-number",
        "bool-for-number",
        "far-too-high",
        "far-zero",
        "threshold-above-1",
        "threshold-nan",
        "far-inf",
        "net-speech-too-small",
        "window-below-net-speech",
        "tenant-mismatch",
        "unknown-field-in-section",
        "unknown-section",
        "voice-not-table",
    ],
)
def test_bad_policy_is_a_config_error_naming_the_field(text, field, words):
    with pytest.raises(ConfigError) as err:
        parse_policy(text, "acme", "/etc/authsvc/policies/acme.toml")
    message = str(err.value)
    assert message.startswith("/etc/authsvc/policies/acme.toml:"), "the message must name the file"
    assert field in message and words in message, message


def test_bad_toml_is_a_config_error_with_the_line():
    with pytest.raises(ConfigError) as err:
        parse_policy("[voice]\ntarget_far = = 0.01\n", "acme", "acme.toml")
    assert "acme.toml" in str(err.value) and "not valid TOML" in str(err.value)
    assert "line 2" in str(err.value)


# --- PolicyBook -------------------------------------------------------------------------------


def test_policy_book_returns_the_default_without_a_file(tmp_path: Path):
    for book in (PolicyBook(None), PolicyBook(tmp_path / "policies")):
        policy = book.get("acme")
        assert policy == TenantPolicy(tenant="acme", policy_id="default")


def test_policy_book_picks_up_an_edited_file_without_restart(tmp_path: Path):
    book = PolicyBook(tmp_path)
    path = tmp_path / "acme.toml"
    path.write_text("[voice]\ntarget_far = 0.01\n")
    first = book.get("acme")
    assert first.voice.target_far == 0.01
    assert book.get("acme") is first, "an unchanged file is not re-parsed"

    path.write_text("[voice]\ntarget_far = 0.001\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    edited = book.get("acme")
    assert edited.voice.target_far == 0.001
    assert edited.policy_id != first.policy_id
    # Other tenants are untouched by acme's file.
    assert book.get("globex").policy_id == "default"


def test_policy_book_reports_a_broken_file(tmp_path: Path):
    (tmp_path / "acme.toml").write_text("[voice]\ntarget_far = 2\n")
    with pytest.raises(ConfigError, match=r"voice\.target_far"):
        PolicyBook(tmp_path).get("acme")


# --- calibration ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic() -> tuple[Calibration, np.ndarray]:
    rng = np.random.default_rng(3)
    scores = rng.normal(0.3, 0.1, 20_000)
    return Calibration.from_impostor_scores(scores, "toy", "v1", "synthetic normal(0.3, 0.1)"), scores


@pytest.fixture(scope="module")
def shipped() -> Calibration:
    version = json.loads(calibration_path("ge2e").read_text())["encoder_version"]
    return load_calibration("ge2e", version)


def test_threshold_accepts_the_target_share_of_impostors(synthetic):
    cal, scores = synthetic
    for far in (0.2, 0.05, 0.01, 0.002):
        threshold = cal.threshold_for(far)
        accepted = np.mean(scores >= threshold)
        assert accepted == pytest.approx(far, rel=0.15), (far, threshold)
        assert cal.far_at(threshold) == pytest.approx(far, rel=0.01)


@pytest.mark.parametrize("which", ["synthetic", "shipped"])
def test_lower_target_far_means_higher_threshold(which, synthetic, shipped):
    cal = synthetic[0] if which == "synthetic" else shipped
    fars = np.geomspace(0.5, 1.0 / cal.impostor_trials, 40)
    thresholds = [cal.threshold_for(f) for f in fars]
    assert all(b >= a for a, b in itertools.pairwise(thresholds))
    assert cal.threshold_for(0.1) < cal.threshold_for(0.01) < cal.threshold_for(0.001)


def test_far_below_what_the_trials_resolve_is_refused(synthetic):
    cal, _ = synthetic
    floor = 1.0 / cal.impostor_trials
    cal.threshold_for(floor)
    with pytest.raises(ConfigError) as err:
        cal.threshold_for(floor / 2)
    assert str(cal.impostor_trials) in str(err.value)


def test_calibration_for_another_encoder_version_is_refused(tmp_path: Path, synthetic):
    cal, _ = synthetic
    path = tmp_path / "toy.json"
    path.write_text(cal.to_json())
    assert load_calibration("toy", "v1", path) == cal
    with pytest.raises(ConfigError) as err:
        load_calibration("toy", "v2", path)
    assert "v1" in str(err.value) and "v2" in str(err.value)


def test_missing_calibration_points_to_explicit_threshold(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"voice\.threshold"):
        load_calibration("toy", "v1", tmp_path / "absent.json")


# --- decisions --------------------------------------------------------------------------------

POLICY = TenantPolicy(tenant="acme", policy_id="acme@test")
FINANCE = parse_policy('sector = "finance"\n', "bank", "bank.toml")
VOICE_ONLY = CustomerView(frozenset({"voice"}), factors=("totp",))


def _evidence(
    llr: float, threshold_llr: float, modality: str = "voice", floor: float = -9.0, calibrated: bool = True
) -> ModalityEvidence:
    return ModalityEvidence(
        modality,
        llr,
        llr,
        threshold_llr,
        threshold_llr,
        0.01,
        "ge2e",
        "v1",
        4,
        floor_llr=floor,
        calibrated=calibrated,
    )


def test_score_at_the_threshold_authenticates():
    d = decide(POLICY, VOICE_ONLY, (_evidence(0.7, 0.7),), StepUpState(), 3.2)
    assert d.outcome is Outcome.AUTHENTICATED and d.methods == ("voice",)
    assert d.assurance_level == "" and "no AAL" in d.reason, "a biometric alone is not an authenticator"
    assert d.evidence == (_evidence(0.7, 0.7),)
    assert d.policy_id == "acme@test" and d.net_speech_s == 3.2
    assert d.required_net_speech_s == POLICY.voice.min_net_speech_s


def test_score_just_below_the_threshold_is_rejected():
    d = decide(POLICY, VOICE_ONLY, (_evidence(float(np.nextafter(0.7, 0.0)), 0.7),), StepUpState(), 3.2)
    assert d.outcome is Outcome.REJECTED
    assert "below" in d.reason


def test_no_evidence_yet_is_pending_and_says_how_much_speech_is_needed():
    d = decide(POLICY, VOICE_ONLY, (), StepUpState(), 1.25)
    assert d.outcome is Outcome.PENDING and d.evidence == ()
    assert "1.25" in d.reason and f"{POLICY.voice.min_net_speech_s:.2f}" in d.reason


def test_customer_without_templates_is_not_enrolled():
    d = decide(POLICY, CustomerView(frozenset()), (), StepUpState())
    assert d.outcome is Outcome.NOT_ENROLLED


def test_opted_out_wins_over_any_evidence():
    d = decide(POLICY, CustomerView(frozenset({"voice"}), opted_out=True), (_evidence(9, 1),), StepUpState())
    assert d.outcome is Outcome.OPTED_OUT


TYPED = CustomerView(frozenset({"voice", "keystroke_fixed/pin", "keystroke_free"}), factors=("totp",))


def test_voice_leads_and_typing_tops_up_a_near_miss_by_at_most_the_cap():
    cap = POLICY.keystroke.max_llr
    near_miss, strong_typing = _evidence(2.0 - cap / 2, 2.0), _evidence(30.0, 2.5, "keystroke_fixed/pin")
    d = decide(POLICY, TYPED, (near_miss, strong_typing), StepUpState(), 3.2, voice_required=True)
    assert d.fused_llr == 2.0 - cap / 2 + cap and d.fused_threshold_llr == 2.0, "the bar is the voice's own"
    assert d.outcome is Outcome.AUTHENTICATED and d.methods == ("voice", "typing")
    far_miss = decide(POLICY, TYPED, (_evidence(2.0 - cap - 0.01, 2.0), strong_typing), StepUpState(), 3.2)
    assert far_miss.outcome is Outcome.REJECTED, "fabricated timings add no more than the cap"
    against = decide(
        POLICY, TYPED, (_evidence(3.0, 2.0), _evidence(-2.0, 1.0, "keystroke_free")), StepUpState(), 3.2
    )
    assert against.outcome is Outcome.REJECTED and against.fused_llr == 1.0, "evidence against counts in full"


def test_every_fused_modality_must_clear_its_own_floor():
    voice_below_floor = _evidence(-0.09, 2.0, floor=0.5)
    perfect_typing = _evidence(2.5, 2.5, "keystroke_fixed/pin", floor=0.0)
    d = decide(
        replace(POLICY, keystroke=replace(POLICY.keystroke, max_llr=10.0)),
        TYPED,
        (voice_below_floor, perfect_typing),
        StepUpState(),
        3.2,
        voice_required=True,
    )
    assert d.fused_llr >= d.fused_threshold_llr and d.outcome is Outcome.REJECTED, "even with no cap"
    assert "floor" in d.reason


def test_a_voice_call_is_decided_by_voice_and_typing_alone_needs_the_policy():
    typing = _evidence(9.0, 2.5, "keystroke_fixed/pin")
    waiting = decide(POLICY, TYPED, (typing,), StepUpState(), 1.0, voice_required=True)
    assert waiting.outcome is Outcome.PENDING, "matching digits do not authenticate a voice call"
    typing_only = decide(POLICY, TYPED, (typing,), StepUpState())
    assert typing_only.outcome is Outcome.STEP_UP_REQUIRED and "typing alone" in typing_only.reason
    alone = replace(POLICY, keystroke=replace(POLICY.keystroke, alone=True))
    assert decide(alone, TYPED, (typing,), StepUpState()).outcome is Outcome.AUTHENTICATED
    dtmf = _evidence(9.0, 2.5, "keystroke_fixed/pin", calibrated=False)
    uncalibrated = decide(alone, TYPED, (dtmf,), StepUpState())
    assert uncalibrated.outcome is Outcome.STEP_UP_REQUIRED and "never decides alone" in uncalibrated.reason
    weak = decide(
        alone,
        TYPED,
        (_evidence(2.0, 2.5, "keystroke_fixed/pin", floor=0.0, calibrated=False),),
        StepUpState(),
    )
    assert weak.outcome is Outcome.REJECTED, (
        "held to the same bar as calibrated typing: a label cannot lower it"
    )
    below_floor = decide(
        alone,
        TYPED,
        (_evidence(-3.0, 2.5, "keystroke_fixed/pin", floor=0.0, calibrated=False),),
        StepUpState(),
    )
    assert below_floor.outcome is Outcome.REJECTED


def test_a_score_that_is_not_a_number_is_rejected_never_accepted():
    nan = float("nan")
    for evidence in ((_evidence(nan, 2.0),), (_evidence(5.0, 2.0), _evidence(nan, 1.0, "keystroke_free"))):
        d = decide(POLICY, TYPED, evidence, StepUpState(), 3.2, voice_required=True)
        assert d.outcome is Outcome.REJECTED, d.reason


def test_an_emailed_code_never_authenticates_on_its_own():
    off = StepUpState(biometric_off=True, passed_factor="one_time_code", passed_kind="email")
    d = decide(POLICY, CustomerView(frozenset({"voice"}), factors=("one_time_code",)), (), off)
    assert d.outcome is Outcome.STEP_UP_REQUIRED and "e-mailed code alone" in d.reason


def test_a_voice_call_needs_a_voiceprint():
    pin_only = CustomerView(frozenset({"keystroke_fixed/pin"}))
    d = decide(POLICY, pin_only, (), StepUpState(), voice_required=True)
    assert d.outcome is Outcome.NOT_ENROLLED and "voice" in d.reason


def test_disabled_biometric_offers_another_factor_that_then_decides_alone_at_aal1():
    off = StepUpState(biometric_off=True, attempts_remaining=3)
    d = decide(FINANCE, VOICE_ONLY, (), off)
    assert d.outcome is Outcome.STEP_UP_REQUIRED and d.step_up_factors == ("totp",) and d.evidence == ()
    passed = decide(FINANCE, VOICE_ONLY, (), replace(off, passed_factor="totp", passed_kind="totp"))
    assert passed.outcome is Outcome.AUTHENTICATED and passed.methods == ("totp",)
    assert passed.assurance_level == "AAL1", "one possession factor on its own is AAL1"
    nothing = decide(FINANCE, CustomerView(frozenset({"voice"})), (), off)
    assert nothing.outcome is Outcome.REJECTED and "administrator" in nothing.reason


def test_finance_match_needs_a_second_factor_then_authenticates_at_aal2():
    step = decide(FINANCE, VOICE_ONLY, (_evidence(5, 2),), StepUpState(attempts_remaining=5), 4.0)
    assert step.outcome is Outcome.STEP_UP_REQUIRED and step.step_up_factors == ("totp",)
    assert step.attempts_remaining == 5
    done = decide(
        FINANCE, VOICE_ONLY, (_evidence(5, 2),), StepUpState(passed_factor="totp", passed_kind="totp"), 4.0
    )
    assert done.outcome is Outcome.AUTHENTICATED and done.assurance_level == "AAL2"
    assert done.methods == ("voice", "totp")
    sms = StepUpState(passed_factor="one_time_code", passed_kind="sms")
    assert decide(FINANCE, VOICE_ONLY, (_evidence(5, 2),), sms).assurance_level == "AAL2"
    email = decide(FINANCE, VOICE_ONLY, (_evidence(5, 2),), replace(sms, passed_kind="email"))
    assert email.outcome is Outcome.AUTHENTICATED and email.assurance_level == ""
    assert "e-mailed code is not an authenticator" in email.reason
    no_match = decide(FINANCE, VOICE_ONLY, (_evidence(1, 2),), StepUpState(passed_factor="totp"), 4.0)
    assert no_match.outcome is Outcome.REJECTED, "a second factor never replaces the biometric match"


def test_locked_out_customer_is_rejected_with_a_retry_time():
    d = decide(FINANCE, VOICE_ONLY, (_evidence(5, 2),), StepUpState(retry_after_s=120), 4.0)
    assert d.outcome is Outcome.REJECTED and d.retry_after_s == 120 and "locked out" in d.reason


def test_threshold_comes_from_calibration_unless_the_policy_fixes_it(synthetic):
    cal, _ = synthetic
    policy = replace(POLICY, voice=VoiceRules(target_far=0.01))
    looks = policy.decision.max_looks
    assert voice_threshold(policy, cal) == (cal.threshold_for(0.01 / looks), 0.01 / looks), "per look"
    fixed = replace(POLICY, voice=VoiceRules(threshold=0.42))
    assert voice_threshold(fixed, cal) == (0.42, 0.0)
    assert voice_threshold(fixed, None) == (0.42, 0.0)
    with pytest.raises(ConfigError, match=r"voice\.target_far"):
        voice_threshold(policy, None)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('sector = "bank"\n', "sector", "not one of"),
        ('sector = "finance"\n[voice]\ntarget_far = 0.001\n', "voice.target_far", "NIST SP 800-63B"),
        ('sector = "health"\n[keystroke]\ntarget_far = 0.01\n', "keystroke.target_far", "false-match rate"),
        ('sector = "finance"\n[step_up]\nrequired = false\n', "step_up.required", "possession factor"),
        ('sector = "finance"\n[voice]\nthreshold = 0.9\n', "voice.threshold", "not allowed"),
        ('[step_up]\nfactors = ["sms"]\n', "step_up.factors", "unknown factor"),
        ("[step_up]\nrequired = true\nfactors = []\n", "step_up.factors", "at least one"),
        ("[lockout]\nmax_failures = 500\n", "lockout.max_failures", "outside"),
        ("[lockout]\nmax_failures = 2.5\n", "lockout.max_failures", "whole number"),
        ('[step_up]\nrequired = "yes"\n', "step_up.required", "true or false"),
    ],
    ids=[
        "bad-sector",
        "finance-far",
        "health-keystroke-far",
        "finance-no-step-up",
        "finance-raw-threshold",
        "unknown-factor",
        "no-factors",
        "nist-failure-cap",
        "fractional-count",
        "string-bool",
    ],
)
def test_sector_rules_are_enforced_with_messages_naming_the_field(text, field, words):
    with pytest.raises(ConfigError) as err:
        parse_policy(text, "acme", "acme.toml")
    assert field in str(err.value) and words in str(err.value), str(err.value)


def test_finance_preset_requires_step_up_and_nist_false_match_rate():
    policy = parse_policy('sector = "finance"\n[assertion]\nlifetime_s = 120\n', "bank", "bank.toml")
    assert policy.step_up.required and set(policy.step_up.factors) == {"totp", "one_time_code"}
    assert policy.voice.target_far <= 1e-4 and policy.keystroke.target_far <= 1e-4
    assert policy.lockout.max_failures <= 10
    assert policy.assertion.lifetime_s == 120  # a file overrides single preset fields
    general = parse_policy("", "shop", "shop.toml")
    assert not general.step_up.required and general.voice.target_far == 0.01


def test_policy_book_reports_a_changed_policy(tmp_path):
    changes = []
    book = PolicyBook(tmp_path, on_change=lambda t, old, new: changes.append((t, old, new)))
    first = book.get("acme")
    (tmp_path / "acme.toml").write_text('sector = "health"\n')
    second = book.get("acme")
    assert second.sector == "health"
    assert changes == [("acme", first.policy_id, second.policy_id)]
