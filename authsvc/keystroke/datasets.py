"""Loaders for the two shared keystroke data sets (read in place, never copied).

- keystroke100: 100 users x 10 typings of "try4-mbs", 7 press-to-press
  latencies in ms per typing (no holds). `keystroke100_sample` turns a row into
  key events with unknown releases, so benchmarks run the production path.
- freetext-dev: free text of 14 users on three forms, rows `P|R,KEY,TIMESTAMP_NS`
  (one Twitter file uses `EID,key,direction,time` with direction 0 = press,
  1 = release, which is read too). Rows whose timestamp is not an integer
  (rounded like `1.65392e+18`), that contain tabs, or that do not parse are
  skipped and counted, with one `logging.warning` per file. A stream is split
  into sessions at backward time steps and at gaps over `MAX_GAP_S`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from authsvc.keystroke.events import (
    MAX_GAP_S,
    KeyEvent,
    Sample,
    canonical_key,
    make_sample,
    ns_to_s,
    pair_press_release,
)

log = logging.getLogger(__name__)

KEYSTROKE100_TEXT = "try4-mbs"
FREETEXT_FORMS = ("Facebook", "Instagram", "Twitter")
_INT_NS = re.compile(r"^\d{1,20}$")


def keystroke100_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "keystroke" / "keystroke100"


def freetext_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "keystroke" / "freetext-dev"


def load_keystroke100(data_dir: Path) -> dict[int, np.ndarray]:
    """user number -> (typings, 7) press-to-press latencies in seconds."""
    root = keystroke100_dir(data_dir)
    users: dict[int, np.ndarray] = {}
    for d in root.glob("user*"):
        m = re.fullmatch(r"user(\d+)", d.name)
        if m and (d / "latency.txt").is_file():
            lat = np.loadtxt(d / "latency.txt", ndmin=2) / 1000.0
            users[int(m.group(1))] = lat
    if not users:
        raise FileNotFoundError(f"no keystroke100 users under {root}")
    return dict(sorted(users.items()))


def keystroke100_sample(latencies_s: np.ndarray, text: str = KEYSTROKE100_TEXT) -> Sample:
    """One typing as key events: presses at the cumulative latencies, releases unknown."""
    press = np.concatenate([[0.0], np.cumsum(latencies_s)])
    if len(press) != len(text):
        raise ValueError(f"{len(latencies_s)} latencies do not fit the {len(text)} characters of {text!r}")
    return make_sample([KeyEvent(c, float(t), None) for c, t in zip(text, press, strict=True)], "fixed", text)


@dataclass
class FreeTextFile:
    form: str
    user: str
    path: Path
    sessions: list[tuple[KeyEvent, ...]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def n_keystrokes(self) -> int:
        return sum(len(s) for s in self.sessions)


def _rows(path: Path, counts: Counter) -> list[tuple[str, str, int]]:
    """(P|R, canonical key, t_ns) rows of one file; broken rows counted in `counts`."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    eid = bool(lines) and lines[0].replace(" ", "").lower().startswith("eid,key,direction,time")
    if eid:
        counts["format_eid_direction"] += 1
        lines = lines[1:]
    out: list[tuple[str, str, int]] = []
    for row in csv.reader(lines):
        if not row:
            continue
        if any("\t" in f for f in row):
            counts["skipped_tab"] += 1
            continue
        if eid:
            if len(row) != 4 or row[2].strip() not in ("0", "1"):
                counts["skipped_malformed"] += 1
                continue
            action, key, stamp = ("P" if row[2].strip() == "0" else "R"), row[1], row[3].strip()
        else:
            if len(row) != 3 or row[0] not in ("P", "R"):
                counts["skipped_malformed"] += 1
                continue
            action, key, stamp = row
        if not _INT_NS.match(stamp):
            counts[
                "skipped_rounded_timestamp" if "e+" in stamp.lower() or "." in stamp else "skipped_malformed"
            ] += 1
            continue
        if len(key) > 3 and key[0] == key[-1] and key[0] in "'\"":
            # pynput reports an auto-completed word as one quoted 'key': not a keystroke.
            counts["skipped_multichar_insert"] += 1
            continue
        key = canonical_key(key)
        out.append((action, key, int(stamp)))
    return out


def load_freetext_file(path: Path, form: str, user: str) -> FreeTextFile:
    counts: Counter = Counter()
    rows = _rows(path, counts)
    f = FreeTextFile(form, user, path, counts=counts)
    sessions: list[list[tuple[str, str, int]]] = []
    for row in rows:
        if sessions and sessions[-1]:
            gap = row[2] - sessions[-1][-1][2]
            if gap < 0 or gap > MAX_GAP_S * 1e9:
                counts["session_breaks"] += 1
                sessions.append([])
        elif not sessions:
            sessions.append([])
        sessions[-1].append(row)
    for sess in sessions:
        origin = sess[0][2]
        events, repairs = pair_press_release([(a, k, ns_to_s(t - origin)) for a, k, t in sess])
        counts.update(repairs)
        if events:
            f.sessions.append(make_sample(events).events)
    skipped = {k: v for k, v in counts.items() if k.startswith("skipped")}
    if skipped:
        log.warning(
            "%s: skipped %s rows (%s)",
            path,
            sum(skipped.values()),
            ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())),
        )
    return f


def load_freetext(data_dir: Path) -> list[FreeTextFile]:
    """Every form file of freetext-dev (users with no usable rows included, with empty sessions)."""
    root = freetext_dir(data_dir)
    files: list[FreeTextFile] = []
    for form in FREETEXT_FORMS:
        for path in sorted((root / form).glob("*.csv")):
            m = re.fullmatch(r"[a-z]_(\w+)", path.stem)
            if m:
                files.append(load_freetext_file(path, form, m.group(1)))
    if not files:
        raise FileNotFoundError(f"no freetext-dev files under {root}")
    return files


def windows(sessions: list[tuple[KeyEvent, ...]], size: int) -> list[tuple[KeyEvent, ...]]:
    """Consecutive, non-overlapping windows of `size` keystrokes inside sessions (tails dropped)."""
    out = []
    for s in sessions:
        out.extend(s[i : i + size] for i in range(0, len(s) - size + 1, size))
    return out
