"""Profiles and scores: serialisation, bounded history, and genuine-vs-impostor separation
on synthetic typists (always) and on the shared recorded data (when it is present)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from authsvc import keystroke
from authsvc.errors import EncoderMismatch
from authsvc.keystroke import calibration as cal
from authsvc.keystroke.events import KeyEvent, KeystrokeInputError, Sample, make_sample
from authsvc.keystroke.fixed_text import FixedTextProfile
from authsvc.keystroke.free_text import FreeTextProfile
from tests.typists import PASSWORD, Typist

ROOT = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    return Path(os.environ.get("AUTHSVC_DATA", ROOT.parent / "shared" / "data"))


KEYSTROKE100 = shared_data() / "keystroke" / "keystroke100"
FREETEXT = shared_data() / "keystroke" / "freetext-dev"
needs_keystroke100 = pytest.mark.skipif(not KEYSTROKE100.is_dir(), reason=f"no {KEYSTROKE100}")
needs_freetext = pytest.mark.skipif(not FREETEXT.is_dir(), reason=f"no {FREETEXT}")


@pytest.fixture(scope="module")
def typists() -> list[Typist]:
    rng = np.random.default_rng(20240601)
    return [Typist(rng) for _ in range(12)]


# ---- serialisation and history


def test_fixed_profile_survives_a_bytes_round_trip_and_scores_the_same(typists):
    person = typists[0]
    profile = FixedTextProfile.build([person.password() for _ in range(5)])
    data = profile.to_bytes()
    doc = json.loads(data)
    assert (doc["v"], doc["modality"], doc["version"]) == (1, "keystroke_fixed", "1")
    assert PASSWORD not in data.decode()  # the secret text is not stored
    probe = person.password()
    again = FixedTextProfile.from_bytes(data)
    assert again.score(probe).raw == pytest.approx(profile.score(probe).raw, abs=1e-4)
    np.testing.assert_allclose(again.history, profile.history, atol=1e-6)


def test_free_profile_survives_a_bytes_round_trip_and_scores_the_same(typists):
    person = typists[1]
    profile = FreeTextProfile.build([person.free(300)])
    data = profile.to_bytes()
    assert json.loads(data)["modality"] == "keystroke_free"
    probe = person.free(100)
    again = FreeTextProfile.from_bytes(data)
    assert again.score(probe).raw == pytest.approx(profile.score(probe).raw, abs=1e-4)
    assert again.n_keystrokes == profile.n_keystrokes == 300


def test_fixed_update_grows_history_up_to_its_bound_and_keeps_the_newest(typists):
    person = typists[0]
    profile = FixedTextProfile.build([person.password() for _ in range(3)], max_history=6)
    assert profile.n_samples == 3
    profile.update([person.password() for _ in range(2)])
    assert profile.n_samples == 5
    newest = [person.password() for _ in range(4)]
    profile.update(newest)
    assert profile.n_samples == 6
    np.testing.assert_allclose(profile.history[-1], FixedTextProfile.build([newest[-1]]).history[0])


def test_free_update_grows_counts_but_caps_them_so_old_typing_fades(typists):
    person = typists[2]
    profile = FreeTextProfile.build([person.free(200)], max_count=30)
    before = dict(profile.holds)
    profile.update([person.free(200)])
    grown = [k for k in before if profile.holds[k][0] > before[k][0]]
    assert grown
    assert max(n for n, _, _ in profile.holds.values()) <= 30
    assert max(n for n, _, _ in profile.digraphs.values()) <= 30


def test_profile_from_another_model_version_is_refused():
    doc = json.loads(
        FixedTextProfile.build(
            [make_sample([KeyEvent("a", 0, 0.1), KeyEvent("b", 0.2, 0.3)], "fixed", "ab")]
        ).to_bytes()
    )
    doc["version"] = "0"
    with pytest.raises(EncoderMismatch):
        FixedTextProfile.from_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize("data", [b"", b"\x80\x81", b"[]", b'{"v":1,"modality":"voice"}', b"not json"])
def test_corrupt_profile_bytes_raise_input_error(data):
    with pytest.raises(KeystrokeInputError) as err:
        keystroke.load_profile(data)
    assert err.value.field == "profile"


def test_truncated_history_in_profile_bytes_is_rejected(typists):
    doc = json.loads(FixedTextProfile.build([typists[0].password()]).to_bytes())
    doc["history"] = [doc["history"][0][:-1]]
    with pytest.raises(KeystrokeInputError):
        FixedTextProfile.from_bytes(json.dumps(doc).encode())


# ---- text checks


def test_probe_typing_another_text_is_rejected_without_echoing_it(typists):
    profile = FixedTextProfile.build([typists[0].password() for _ in range(3)])
    other = make_sample(typists[0].events("s3cret-ps"), "fixed")
    with pytest.raises(KeystrokeInputError) as err:
        profile.score(other)
    assert err.value.field == "text"
    assert "s3cret" not in str(err.value)


def test_enrollment_entry_of_another_text_is_rejected_naming_its_index(typists):
    entries = [
        typists[0].password(),
        typists[0].password(),
        make_sample(typists[0].events("s3cret-ps"), "fixed"),
    ]
    with pytest.raises(KeystrokeInputError) as err:
        FixedTextProfile.build(entries)
    assert err.value.field == "samples[2].text"


def test_sample_whose_keys_do_not_spell_its_declared_text_is_rejected(typists):
    with pytest.raises(KeystrokeInputError) as err:
        FixedTextProfile.build([make_sample(typists[0].events("abc"), "fixed", "abd")])
    assert err.value.field == "text"


def test_corrected_password_entry_is_scored_without_the_correction_gap(typists):
    person = typists[3]
    profile = FixedTextProfile.build([person.password() for _ in range(5)])
    clean = person.events(PASSWORD)
    # type one wrong character, wait, delete it, go on: same final text
    shift = 2.0
    corrected = [
        *clean[:4],
        KeyEvent("x", clean[3].press + 0.1, clean[3].press + 0.15),
        KeyEvent("backspace", clean[3].press + 1.0, clean[3].press + 1.05),
    ]
    corrected += [KeyEvent(e.key, e.press + shift, e.release + shift) for e in clean[4:]]  # type: ignore[operator]
    score = profile.score(make_sample(corrected, "fixed", PASSWORD))
    full = profile.score(make_sample(clean, "fixed", PASSWORD))
    assert score.n_compared == full.n_compared - 1
    assert score.llr > 0


# ---- separation and LLR sign


def _fixed_trials(typists: list[Typist]) -> tuple[np.ndarray, np.ndarray]:
    genuine, impostor = [], []
    for i, person in enumerate(typists):
        profile = FixedTextProfile.build([person.password() for _ in range(5)])
        genuine += [profile.score(person.password()).llr for _ in range(5)]
        impostor += [profile.score(other.password()).llr for j, other in enumerate(typists) if j != i]
    return np.array(genuine), np.array(impostor)


def test_synthetic_genuine_passwords_outscore_impostors_and_llr_sign_follows(typists):
    genuine, impostor = _fixed_trials(typists)
    assert cal.eer(genuine, impostor) < 0.1
    assert np.median(genuine) > 0 > np.median(impostor)


def test_synthetic_genuine_free_text_outscores_impostors_and_llr_sign_follows(typists):
    profiles = [FreeTextProfile.build([p.free(400)]) for p in typists]
    genuine = [profiles[i].score(p.free(100)).llr for i, p in enumerate(typists) for _ in range(3)]
    impostor = [
        profiles[i].score(q.free(100)).llr
        for i in range(len(typists))
        for j, q in enumerate(typists)
        if j != i
    ]
    assert cal.eer(np.array(genuine), np.array(impostor)) < 0.1
    assert np.median(genuine) > 0 > np.median(impostor)


def test_free_text_probe_sharing_nothing_with_the_profile_is_no_evidence():
    profile = FreeTextProfile.build(
        [make_sample([KeyEvent(k, 0.2 * i, 0.2 * i + 0.1) for i, k in enumerate("abab")])]
    )
    score = profile.score(make_sample([KeyEvent("x", 0.0, 0.1), KeyEvent("y", 0.2, 0.3)]))
    assert (score.raw, score.llr, score.n_compared) == (0.0, 0.0, 0)


def test_platt_fit_recovers_the_known_llr_of_two_gaussians():
    rng = np.random.default_rng(3)
    # N(1, 1) vs N(-1, 1): the true LLR of x is 2x.
    platt = cal.fit_platt(rng.normal(1, 1, 20000), rng.normal(-1, 1, 20000))
    assert platt.a == pytest.approx(2.0, abs=0.1)
    assert platt.b == pytest.approx(0.0, abs=0.05)


def test_eer_of_separable_and_identical_scores():
    assert cal.eer(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    assert cal.eer(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.5)


# ---- the integration API


def test_enroll_then_verify_through_bytes(typists):
    person, other = typists[4], typists[5]
    data = keystroke.enroll([person.password() for _ in range(3)])
    data = keystroke.enroll([person.password() for _ in range(2)], data)
    assert keystroke.load_profile(data).n_samples == 5
    assert keystroke.template_identity(data) == ("keystroke_fixed", "keystroke-fixed-tllr", "1")
    mine, theirs = keystroke.verify(data, person.password()), keystroke.verify(data, other.password())
    assert mine.modality == "keystroke_fixed"
    assert mine.llr == pytest.approx(cal.FIXED.platt.llr(mine.raw))
    assert mine.raw > theirs.raw


def test_enroll_refuses_mixed_kinds_and_a_free_sample_for_a_fixed_profile(typists):
    person = typists[6]
    with pytest.raises(KeystrokeInputError):
        keystroke.enroll([person.password(), person.free(50)])
    data = keystroke.enroll([person.password()])
    with pytest.raises(KeystrokeInputError):
        keystroke.enroll([person.free(50)], data)
    with pytest.raises(KeystrokeInputError):
        keystroke.verify(data, person.free(50))


def test_dtmf_pin_enrolls_and_verifies_as_fixed_text():
    rng = np.random.default_rng(5)

    def entry(speed: float) -> Sample:
        t, evs = 0.0, []
        for d in "4711":
            evs.append(keystroke.dtmf_event(d, t, t + 0.09))
            t += speed * float(np.exp(rng.normal(0, 0.1)))
        return make_sample(evs, "dtmf", "4711")

    data = keystroke.enroll([entry(0.35) for _ in range(5)])
    fast_caller = keystroke.verify(data, entry(0.35))
    slow_caller = keystroke.verify(data, entry(1.2))
    assert fast_caller.raw > slow_caller.raw


# ---- recorded data


@needs_keystroke100
def test_keystroke100_genuine_typings_outscore_impostors():
    from authsvc.keystroke.datasets import keystroke100_sample, load_keystroke100

    lat = load_keystroke100(shared_data())
    users = sorted(lat)[:20]
    samples = {u: [keystroke100_sample(r) for r in lat[u]] for u in users}
    per_user, genuine, impostor = [], [], []
    for u in users:
        profile = FixedTextProfile.build(samples[u][:5])
        g = [profile.score(s).llr for s in samples[u][5:]]
        i = [profile.score(s).llr for v in users if v != u for s in samples[v]]
        per_user.append(cal.eer(np.array(g), np.array(i)))
        genuine += g
        impostor += i
    assert np.mean(per_user) < 0.2
    assert np.median(genuine) > 0 > np.median(impostor)


@needs_freetext
def test_freetext_windows_of_the_same_person_outscore_other_people():
    from authsvc.keystroke.datasets import FREETEXT_FORMS, freetext_dir, load_freetext_file, windows

    root = freetext_dir(shared_data())
    users = ["01", "11", "17", "19"]
    files = {
        (form, u): load_freetext_file(root / form / f"{form[0].lower()}_{u}.csv", form, u)
        for form in FREETEXT_FORMS[:2]
        for u in users
    }
    genuine, impostor = [], []
    for u in users:
        profile = FreeTextProfile.build([Sample(s) for s in files["Facebook", u].sessions])
        for v in users:
            for w in windows(files["Instagram", v].sessions, 100)[:8]:
                (genuine if u == v else impostor).append(profile.score(Sample(w)).llr)
    assert cal.eer(np.array(genuine), np.array(impostor)) < 0.25
    assert np.median(genuine) > 0 > np.median(impostor)


@needs_freetext
def test_broken_freetext_file_rows_are_skipped_and_counted(caplog):
    from authsvc.keystroke.datasets import freetext_dir, load_freetext_file

    path = freetext_dir(shared_data()) / "Facebook" / "f_31.csv"
    if not path.is_file():
        pytest.skip(f"no {path}")
    with caplog.at_level(logging.WARNING):
        f = load_freetext_file(path, "Facebook", "31")
    assert f.sessions == []
    assert f.counts["skipped_rounded_timestamp"] > 0
    assert "skipped" in caplog.text
