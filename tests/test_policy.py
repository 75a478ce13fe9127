"""Tenant policy files, score calibration (FAR -> threshold) and the voice decision."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from authsvc.errors import ConfigError
from authsvc.policy.engine import Outcome, VoiceEvidence, decide_voice, not_enrolled, voice_threshold
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
        ("[voice]\nthreshold = nan\n", "voice.threshold", "outside"),
        ("[voice]\ntarget_far = inf\n", "voice.target_far", "outside"),
        ("[voice]\nmin_net_speech_s = 0.1\n", "voice.min_net_speech_s", "outside"),
        ("[voice]\nmin_net_speech_s = 10\nmax_window_s = 5\n", "voice.max_window_s", "min_net_speech_s"),
        ('tenant = "globex"\n', "tenant", "globex"),
        ("[keystroke]\nx = 1\n", "keystroke", "unknown section"),
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


def _evidence(score: float, threshold: float) -> VoiceEvidence:
    return VoiceEvidence(score, threshold, 0.01, "ge2e", "v1", 4)


def test_score_at_the_threshold_authenticates():
    d = decide_voice(POLICY, 3.2, _evidence(0.7, 0.7))
    assert d.outcome is Outcome.AUTHENTICATED
    assert d.evidence == (_evidence(0.7, 0.7),)
    assert d.policy_id == "acme@test" and d.net_speech_s == 3.2
    assert d.required_net_speech_s == POLICY.voice.min_net_speech_s


def test_score_just_below_the_threshold_is_rejected():
    d = decide_voice(POLICY, 3.2, _evidence(float(np.nextafter(0.7, 0.0)), 0.7))
    assert d.outcome is Outcome.REJECTED
    assert "below" in d.reason


def test_no_evidence_yet_is_pending_and_says_how_much_speech_is_needed():
    d = decide_voice(POLICY, 1.25, None)
    assert d.outcome is Outcome.PENDING and d.evidence == ()
    assert "1.25" in d.reason and f"{POLICY.voice.min_net_speech_s:.2f}" in d.reason


def test_not_enrolled_names_the_customer():
    d = not_enrolled(POLICY, "cust-9")
    assert d.outcome is Outcome.NOT_ENROLLED and "cust-9" in d.reason


def test_threshold_comes_from_calibration_unless_the_policy_fixes_it(synthetic):
    cal, _ = synthetic
    rules = VoiceRules(target_far=0.01)
    assert voice_threshold(rules, cal) == (cal.threshold_for(0.01), 0.01)
    assert voice_threshold(VoiceRules(threshold=0.42), cal) == (0.42, 0.0)
    assert voice_threshold(VoiceRules(threshold=0.42), None) == (0.42, 0.0)
    with pytest.raises(ConfigError, match=r"voice\.target_far"):
        voice_threshold(rules, None)
