"""Key events: cleaning what can be cleaned, rejecting what cannot, and the enrollment file format."""

from __future__ import annotations

import json
import math
import random

import pytest

from authsvc.errors import InvalidInput
from authsvc.keystroke.events import (
    KeyEvent,
    KeystrokeInputError,
    Sample,
    canonical_key,
    clean_events,
    dtmf_event,
    load_keystroke_file,
    make_sample,
    ms_to_s,
    ns_to_s,
    pair_press_release,
    reconstruct_typed,
)


def test_out_of_order_events_are_sorted_by_press_time():
    events = [KeyEvent("b", 0.30, 0.35), KeyEvent("a", 0.10, 0.18), KeyEvent("c", 0.50, 0.55)]
    assert [e.key for e in clean_events(events)] == ["a", "b", "c"]


def test_exact_duplicate_events_are_dropped():
    a = KeyEvent("a", 0.10, 0.18)
    cleaned = clean_events([a, KeyEvent("b", 0.3, 0.4), a])
    assert cleaned == (a, KeyEvent("b", 0.3, 0.4))


def test_duplicate_press_without_release_is_merged_into_the_one_with_a_release():
    cleaned = clean_events([KeyEvent("a", 0.1, None), KeyEvent("a", 0.1, 0.2)])
    assert cleaned == (KeyEvent("a", 0.1, 0.2),)


def test_two_different_releases_for_one_press_are_rejected():
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([KeyEvent("a", 0.1, 0.2), KeyEvent("a", 0.1, 0.3)])
    assert err.value.field == "events[1].release"


def test_missing_release_is_kept_as_unknown():
    cleaned = clean_events([KeyEvent("a", 0.0, None), KeyEvent("b", 0.2, 0.3)])
    assert cleaned[0].release is None


def test_repeated_key_presses_are_separate_keystrokes():
    cleaned = clean_events([KeyEvent("l", 0.0, 0.1), KeyEvent("l", 0.2, 0.3)])
    assert len(cleaned) == 2


def test_release_before_press_is_rejected_with_the_field_named():
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([KeyEvent("a", 0.0, 0.1), KeyEvent("b", 0.5, 0.4)])
    assert err.value.field == "events[1].release"
    assert "before its press" in str(err.value)


def test_clock_jump_between_presses_is_rejected_with_the_field_named():
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([KeyEvent("a", 0.0, 0.1), KeyEvent("b", 0.3, 0.4), KeyEvent("c", 5000.0, 5000.1)])
    assert err.value.field == "events[2].press"
    assert "clock jump" in str(err.value)


def test_clock_stepping_back_in_arrival_order_is_rejected():
    events = [KeyEvent("a", 100.0, 100.1), KeyEvent("b", 100.3, 100.4), KeyEvent("c", 0.5, 0.6)]
    with pytest.raises(KeystrokeInputError) as err:
        clean_events(events)
    assert err.value.field == "events[2].press"
    assert "stepped back" in str(err.value)


def test_gap_limit_is_configurable():
    events = [KeyEvent("a", 0.0, 0.1), KeyEvent("b", 20.0, 20.1)]
    assert len(clean_events(events)) == 2
    with pytest.raises(KeystrokeInputError):
        clean_events(events, max_gap_s=10.0)


def test_stuck_key_hold_is_rejected():
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([KeyEvent("a", 0.0, 3600.0)])
    assert err.value.field == "events[0].release"


def test_empty_sample_is_rejected():
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([])
    assert err.value.field == "events"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 10**400, "0.1", None, True])
def test_non_finite_or_non_numeric_press_is_rejected(bad):
    with pytest.raises(KeystrokeInputError) as err:
        clean_events([KeyEvent("a", 0.0, 0.1), KeyEvent("b", bad, 0.3)])  # type: ignore[arg-type]
    assert err.value.field == "events[1].press"


def test_too_many_events_are_refused():
    with pytest.raises(KeystrokeInputError):
        clean_events([KeyEvent("a", i * 0.1, None) for i in range(11)], max_events=10)


def test_error_is_a_value_error_and_an_invalid_input():
    with pytest.raises(ValueError):
        clean_events([])
    with pytest.raises(InvalidInput):
        clean_events([])


def test_garbage_input_raises_only_keystroke_input_error():
    rng = random.Random(7)
    values = [0.0, 0.1, -1.0, 1e12, math.nan, math.inf, "x", None, 5, -0.0, 1e-300]
    keys = ["a", "", "Key.space", "'b'", None, 3, "Key.backspace", "left"]
    for _ in range(500):
        events = [
            KeyEvent(rng.choice(keys), rng.choice(values), rng.choice(values))  # type: ignore[arg-type]
            for _ in range(rng.randint(0, 6))
        ]
        kind = rng.choice(["fixed", "free", "dtmf", "nope"])
        try:
            sample = make_sample(events, kind, rng.choice([None, "ab", "12"]))
            reconstruct_typed(sample.events)
        except KeystrokeInputError:
            pass


def test_a_sample_built_directly_is_cleaned_too():
    sample = Sample((KeyEvent("b", 0.3, 0.4), KeyEvent("a", 0.1, 0.2), KeyEvent("a", 0.1, 0.2)))
    assert [e.key for e in sample.events] == ["a", "b"]
    with pytest.raises(KeystrokeInputError):
        Sample((KeyEvent("a", 0.3, 0.1),))


def test_dtmf_sample_refuses_keys_that_are_not_digits():
    with pytest.raises(KeystrokeInputError) as err:
        make_sample([KeyEvent("1", 0.0, 0.1), KeyEvent("x", 0.3, 0.4)], "dtmf", "1x")
    assert err.value.field == "text"
    with pytest.raises(KeystrokeInputError) as err:
        make_sample([KeyEvent("1", 0.0, 0.1), KeyEvent("x", 0.3, 0.4)], "dtmf")
    assert err.value.field == "events[1].key"


def test_time_helpers_convert_ns_and_ms_to_seconds():
    assert ns_to_s(1_500_000_000) == 1.5
    assert ms_to_s(250) == 0.25


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("'a'", "a"),
        ('"\'"', "'"),
        ("Key.space", " "),
        ("Key.backspace", "backspace"),
        ("Backspace", "backspace"),
        ("Key.shift_r", "shift"),
        ("Enter", "enter"),
        ("A", "A"),
    ],
)
def test_key_names_from_pynput_and_browsers_are_canonical(name, canonical):
    assert canonical_key(name) == canonical


def test_backspace_corrections_reconstruct_the_final_text():
    keys = ["t", "r", "x", "backspace", "y", "4"]
    events = clean_events([KeyEvent(k, 0.1 * i, 0.1 * i + 0.05) for i, k in enumerate(keys)])
    typed = reconstruct_typed(events)
    assert typed.text == "try4"
    assert [e.press for e in typed.events] == [0.0, 0.1, pytest.approx(0.4), pytest.approx(0.5)]
    assert typed.after_correction == (False, False, True, False)


def test_backspace_on_empty_text_and_modifiers_add_nothing():
    keys = ["backspace", "shift", "A", "b"]
    typed = reconstruct_typed(clean_events([KeyEvent(k, 0.1 * i, None) for i, k in enumerate(keys)]))
    assert typed.text == "Ab"


def test_cursor_keys_make_fixed_text_ambiguous_and_are_rejected():
    events = clean_events([KeyEvent("a", 0.0, 0.1), KeyEvent("Key.left", 0.2, 0.3), KeyEvent("b", 0.4, 0.5)])
    with pytest.raises(KeystrokeInputError) as err:
        reconstruct_typed(events)
    assert err.value.field == "events[1].key"


def test_dtmf_digit_becomes_a_key_event():
    assert dtmf_event("5", 1.0, 1.08) == KeyEvent("5", 1.0, 1.08)
    assert dtmf_event("a", 1.0, None).key == "A"
    with pytest.raises(KeystrokeInputError) as err:
        dtmf_event("x", 1.0, 1.1)
    assert err.value.field == "digit"


def test_pairing_a_press_release_stream_drops_autorepeat_and_orphans():
    rows = [
        ("R", "z", 0.0),  # released before the log started
        ("P", "a", 0.1),
        ("P", "a", 0.6),  # auto-repeat while held
        ("R", "a", 0.7),
        ("P", "b", 0.8),  # never released
    ]
    events, counts = pair_press_release(rows)
    assert events == [KeyEvent("a", 0.1, 0.7), KeyEvent("b", 0.8, None)]
    assert counts == {"autorepeat_dropped": 1, "orphan_release_dropped": 1, "missing_release": 1}


def test_press_long_after_a_lost_release_starts_a_new_keystroke():
    events, _ = pair_press_release([("P", "a", 0.0), ("P", "a", 5.0), ("R", "a", 5.1)])
    assert events == [KeyEvent("a", 0.0, None), KeyEvent("a", 5.0, 5.1)]


def _jsonl(tmp_path, records):
    path = tmp_path / "enroll.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_enrollment_file_is_read_into_samples(tmp_path):
    fixed = {
        "text": "ab",
        "kind": "fixed",
        "events": [{"key": "a", "down": 0.0, "up": 0.09}, {"key": "b", "down": 0.2, "up": 0.28}],
    }
    dtmf = {
        "text": "12",
        "kind": "dtmf",
        "events": [{"key": "1", "down": 0.0, "up": 0.1}, {"key": "2", "down": 0.5}],
    }
    free = {"kind": "free", "events": [{"key": "Key.space", "down": 1.0, "up": 1.1}]}
    samples = load_keystroke_file(_jsonl(tmp_path, [fixed, "", dtmf, free]))
    assert [s.kind for s in samples] == ["fixed", "dtmf", "free"]
    assert samples[0].events[1] == KeyEvent("b", 0.2, 0.28)
    assert samples[1].events[1].release is None
    assert samples[2].events[0].key == " "


def test_bad_line_in_enrollment_file_is_reported_with_its_line_number(tmp_path):
    good = {"text": "ab", "kind": "fixed", "events": [{"key": "a", "down": 0.0, "up": 0.1}]}
    bad = {"text": "ab", "kind": "fixed", "events": [{"key": "a", "down": 0.5, "up": 0.1}]}
    with pytest.raises(KeystrokeInputError) as err:
        load_keystroke_file(_jsonl(tmp_path, [good, bad]))
    assert err.value.field == "line 2: events[0].release"


def test_invalid_json_and_missing_text_are_reported_with_line_numbers(tmp_path):
    for garbage in ["{not json", "[" * 100_000, '{"events": 1' + "0" * 5000 + "}"]:
        with pytest.raises(KeystrokeInputError) as err:
            load_keystroke_file(_jsonl(tmp_path, [garbage]))
        assert err.value.field == "line 1"
    no_text = {"kind": "fixed", "events": [{"key": "a", "down": 0.0}]}
    with pytest.raises(KeystrokeInputError) as err:
        load_keystroke_file(_jsonl(tmp_path, [no_text]))
    assert err.value.field == "line 1: text"
    bad_digit = {"kind": "dtmf", "text": "1", "events": [{"key": "q", "down": 0.0}]}
    with pytest.raises(KeystrokeInputError) as err:
        load_keystroke_file(_jsonl(tmp_path, [bad_digit]))
    assert err.value.field == "line 1: events[0].key"


def test_press_release_csv_file_becomes_one_free_text_sample(tmp_path):
    path = tmp_path / "typing.csv"
    path.write_text("P,'h',1000000000\nP,'i',1150000000\nR,'h',1080000000\nR,'i',1230000000\n")
    (sample,) = load_keystroke_file(path)
    assert sample.kind == "free"
    assert [(e.key, e.press, e.release) for e in sample.events] == [
        ("h", 0.0, pytest.approx(0.08)),
        ("i", pytest.approx(0.15), pytest.approx(0.23)),
    ]


def test_rounded_timestamp_in_csv_is_rejected_with_line_number(tmp_path):
    path = tmp_path / "typing.csv"
    path.write_text("P,'h',1000000000\nP,'i',1.65392e+18\n")
    with pytest.raises(KeystrokeInputError) as err:
        load_keystroke_file(path)
    assert err.value.field == "line 2"
