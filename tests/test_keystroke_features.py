"""Timing features computed from hand-made events whose hold, DD and UD are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from authsvc.keystroke.events import KeyEvent, clean_events, make_sample
from authsvc.keystroke.features import (
    MIN_TIME_S,
    free_text_observations,
    log_time,
    timing_features,
)
from authsvc.keystroke.fixed_text import fixed_features

# "cat": c down 0.000 up 0.100, a down 0.250 up 0.300, t down 0.400 up 0.520
CAT = [KeyEvent("c", 0.000, 0.100), KeyEvent("a", 0.250, 0.300), KeyEvent("t", 0.400, 0.520)]


def test_hold_dd_and_ud_have_the_hand_computed_values():
    f = timing_features(clean_events(CAT))
    assert f.keys == ("c", "a", "t")
    np.testing.assert_allclose(f.hold, [0.100, 0.050, 0.120], atol=1e-12)
    np.testing.assert_allclose(f.dd, [0.250, 0.150], atol=1e-12)
    np.testing.assert_allclose(f.ud, [0.150, 0.100], atol=1e-12)


def test_ud_is_negative_when_the_next_key_goes_down_before_the_previous_is_released():
    f = timing_features(clean_events([KeyEvent("t", 0.0, 0.2), KeyEvent("h", 0.15, 0.25)]))
    assert f.ud[0] == pytest.approx(-0.05)
    assert f.dd[0] == pytest.approx(0.15)


def test_missing_release_makes_hold_and_following_ud_unknown_but_keeps_dd():
    events = [KeyEvent("c", 0.0, None), KeyEvent("a", 0.25, 0.30), KeyEvent("t", 0.4, 0.52)]
    f = timing_features(clean_events(events))
    assert math.isnan(f.hold[0]) and math.isnan(f.ud[0])
    np.testing.assert_allclose(f.dd, [0.25, 0.15], atol=1e-12)
    assert f.ud[1] == pytest.approx(0.10)


def test_features_of_shuffled_events_equal_those_of_ordered_events():
    shuffled = [CAT[2], CAT[0], CAT[1]]
    a, b = timing_features(clean_events(shuffled)), timing_features(clean_events(CAT))
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.dd, b.dd)


def test_fixed_text_features_are_log_holds_then_log_dd():
    text, x = fixed_features(make_sample(CAT, "fixed", "cat"))
    assert text == "cat"
    np.testing.assert_allclose(np.exp(x), [0.100, 0.050, 0.120, 0.250, 0.150], rtol=1e-12)


def test_dd_spanning_a_backspace_correction_is_left_out():
    events = [
        KeyEvent("c", 0.0, 0.1),
        KeyEvent("x", 0.2, 0.3),
        KeyEvent("backspace", 0.6, 0.7),
        KeyEvent("a", 0.9, 1.0),
        KeyEvent("t", 1.1, 1.2),
    ]
    text, x = fixed_features(make_sample(events, "fixed", "cat"))
    assert text == "cat"
    holds, dd = np.exp(x[:3]), x[3:]
    np.testing.assert_allclose(holds, [0.1, 0.1, 0.1], rtol=1e-9)
    assert math.isnan(dd[0])  # c -> a spans the correction
    assert np.exp(dd[1]) == pytest.approx(0.2)  # a -> t is clean


def test_free_text_observations_fold_case_skip_modifier_digraphs_and_pauses():
    events = [
        KeyEvent("shift", 0.00, 0.20),
        KeyEvent("H", 0.10, 0.18),
        KeyEvent("i", 0.30, 0.36),
        KeyEvent(" ", 5.00, 5.05),  # after a 4.7 s pause: no i-space digraph
        KeyEvent("h", 5.20, None),
    ]
    obs = free_text_observations(clean_events(events))
    assert obs.hold_keys == ("shift", "h", "i", " ")
    np.testing.assert_allclose(np.exp(obs.hold), [0.20, 0.08, 0.06, 0.05], rtol=1e-9)
    assert obs.digraphs == (("h", "i"), (" ", "h"))
    np.testing.assert_allclose(np.exp(obs.dd), [0.20, 0.20], rtol=1e-9)
    assert obs.n_keystrokes == 5


def test_log_time_floors_zero_durations_and_keeps_nan():
    out = log_time(np.array([0.0, 0.5, np.nan]))
    assert out[0] == pytest.approx(math.log(MIN_TIME_S))
    assert out[1] == pytest.approx(math.log(0.5))
    assert math.isnan(out[2])
