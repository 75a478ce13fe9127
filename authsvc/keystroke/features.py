"""Timing features of key events: hold, press-to-press (DD) and release-to-press (UD).

For consecutive keystrokes i and i+1 (in press order):

- hold[i] = release[i] - press[i]          (NaN when the release is unknown)
- dd[i]   = press[i+1] - press[i]          (always known, >= 0 after cleaning)
- ud[i]   = press[i+1] - release[i]        (NaN when release[i] is unknown;
                                            negative when keys overlap)

UD is DD minus hold, so the models score hold and DD only, on a log scale:
typing times are skewed and their spread grows with their size, which a
log makes roughly constant (one within-person spread fits every digraph).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from authsvc.keystroke.events import MODIFIERS, KeyEvent

# Times are floored at 1 ms before taking logs: a 0 s hold or DD (same clock
# tick) is real but carries no rhythm beyond "very short".
MIN_TIME_S = 1e-3
# Free-text digraphs slower than this are pauses (thinking, reading), not rhythm.
MAX_DIGRAPH_S = 1.5


@dataclass(frozen=True)
class TimingFeatures:
    keys: tuple[str, ...]
    hold: np.ndarray  # (n,)
    dd: np.ndarray  # (n-1,)
    ud: np.ndarray  # (n-1,)


def timing_features(events: Sequence[KeyEvent]) -> TimingFeatures:
    """Hold, DD and UD of cleaned (press-ordered) events; see the module docstring."""
    press = np.array([e.press for e in events], dtype=np.float64)
    release = np.array([np.nan if e.release is None else e.release for e in events], dtype=np.float64)
    hold = release - press
    dd = np.diff(press)
    ud = press[1:] - release[:-1]
    return TimingFeatures(tuple(e.key for e in events), hold, dd, ud)


def log_time(seconds: np.ndarray | float) -> np.ndarray:
    """Natural log of a duration floored at `MIN_TIME_S`; NaN stays NaN."""
    x = np.asarray(seconds, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.log(np.maximum(x, MIN_TIME_S))


def free_text_key(key: str) -> str:
    """Key identity for free text: case folded, so 'A' and 'a' share statistics (same physical key)."""
    return key.lower() if len(key) == 1 else key


@dataclass(frozen=True)
class FreeTextObservations:
    """Per-occurrence log times of a free-text stretch, grouped for profile statistics."""

    hold_keys: tuple[str, ...]
    hold: np.ndarray  # log seconds
    digraphs: tuple[tuple[str, str], ...]
    dd: np.ndarray  # log seconds
    n_keystrokes: int


def free_text_observations(
    events: Sequence[KeyEvent], max_digraph_s: float = MAX_DIGRAPH_S
) -> FreeTextObservations:
    """Holds of every key with a known release, DD of consecutive non-modifier keys.

    Modifiers are left out of digraphs: whether shift went down before or
    after the previous letter is layout habit noise, while their holds still
    count. Digraphs slower than `max_digraph_s` are pauses and are dropped.
    """
    keys = [free_text_key(e.key) for e in events]
    hold_keys: list[str] = []
    holds: list[float] = []
    for k, e in zip(keys, events, strict=True):
        if e.release is not None:
            hold_keys.append(k)
            holds.append(e.release - e.press)
    typing = [(k, e.press) for k, e in zip(keys, events, strict=True) if k not in MODIFIERS]
    pairs: list[tuple[str, str]] = []
    dds: list[float] = []
    for (k1, t1), (k2, t2) in pairwise(typing):
        if t2 - t1 <= max_digraph_s:
            pairs.append((k1, k2))
            dds.append(t2 - t1)
    return FreeTextObservations(
        tuple(hold_keys), log_time(np.array(holds)), tuple(pairs), log_time(np.array(dds)), len(events)
    )
