"""Key and DTMF events: validation, cleaning and the enrollment file format.

Everything that reaches the keystroke models passes through `clean_events`,
so the models can assume finite, press-ordered, duplicate-free events. What
can be repaired is repaired (order, exact duplicates, unknown releases); what
cannot is rejected with `KeystrokeInputError`, whose `field` names the
offending value, so a gRPC layer can turn it into a BadRequest field
violation. No other exception escapes on bad input.

Times are float seconds on any monotonic origin; `ns_to_s` / `ms_to_s` convert
integer clocks. Limits (documented, overridable per call):

- `MAX_GAP_S` (600 s): a gap between consecutive presses above it is a clock
  jump or two sessions glued together; split such streams before scoring.
- `MAX_BACKSTEP_S` (2 s): events may arrive out of order by less than this
  (they are sorted); a press more than this before one that arrived earlier
  is a clock stepping backwards.
- `MAX_HOLD_S` (60 s): a key held longer is a stuck key or a clock jump.
- `MAX_EVENTS` (20 000): one sample larger than this is refused, not scored.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from authsvc.errors import InvalidInput

MAX_GAP_S = 600.0
MAX_BACKSTEP_S = 2.0
MAX_HOLD_S = 60.0
MAX_EVENTS = 20_000
MAX_FILE_BYTES = 64 * 1024 * 1024
# Key-down repeats closer than this to the previous press of the same key are auto-repeat.
AUTOREPEAT_S = 1.0

Kind = Literal["fixed", "free", "dtmf"]
KINDS: tuple[str, ...] = ("fixed", "free", "dtmf")
DTMF_DIGITS = frozenset("0123456789*#ABCD")

BACKSPACE = "backspace"
# Keys that move the cursor: after one of them the final text of a fixed-text
# entry cannot be known from the key sequence alone.
CURSOR_KEYS = frozenset({"left", "right", "up", "down", "home", "end", "delete", "page_up", "page_down"})
MODIFIERS = frozenset({"shift", "ctrl", "alt", "cmd", "caps_lock", "fn", "alt_gr"})

_SPECIAL_ALIASES = {
    "space": " ",
    "spacebar": " ",
    "backspace": BACKSPACE,
    "back_space": BACKSPACE,
    "bksp": BACKSPACE,
    "\b": BACKSPACE,
    "enter": "enter",
    "return": "enter",
    "\n": "enter",
    "\r": "enter",
    "tab": "tab",
    "\t": "tab",
    "escape": "esc",
    "esc": "esc",
    "shift_l": "shift",
    "shift_r": "shift",
    "lshift": "shift",
    "rshift": "shift",
    "control": "ctrl",
    "ctrl_l": "ctrl",
    "ctrl_r": "ctrl",
    "control_l": "ctrl",
    "control_r": "ctrl",
    "alt_l": "alt",
    "alt_r": "alt",
    "option": "alt",
    "cmd_l": "cmd",
    "cmd_r": "cmd",
    "meta": "cmd",
    "super": "cmd",
    "win": "cmd",
    "capslock": "caps_lock",
    "del": "delete",
    "arrowleft": "left",
    "arrowright": "right",
    "arrowup": "up",
    "arrowdown": "down",
    "pageup": "page_up",
    "pagedown": "page_down",
}


class KeystrokeInputError(InvalidInput):
    """Key events that cannot be cleaned into a usable sample; `field` names the culprit.

    A `ValueError` (through `InvalidInput`), so callers that only know the
    standard library still catch it.
    """


class KnowledgeMismatch(KeystrokeInputError):
    """The typed text is not the enrolled one (a wrong password or PIN). To a verifying session it
    is a failed knowledge attempt, counted and audited, never a distinct error: a distinct answer
    would let a caller guess the text one stream at a time."""


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One key stroke; `release` is None when the key-up was never seen."""

    key: str
    press: float
    release: float | None = None


@dataclass(frozen=True)
class Sample:
    """One typing sample: a password entry, a PIN, or a stretch of free text.

    `text` is what the customer was expected to type (fixed text / PIN); it
    may be None for free text. Construction validates and cleans the events
    (`clean_events`), so every Sample that exists is safe to score.
    """

    events: tuple[KeyEvent, ...]
    kind: Kind = "free"
    text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise KeystrokeInputError("kind", f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise KeystrokeInputError("text", f"text must be a string, got {type(self.text).__name__}")
        events = clean_events(self.events)
        if self.kind == "dtmf":
            if self.text is not None and any(c.upper() not in DTMF_DIGITS for c in self.text):
                raise KeystrokeInputError("text", "DTMF text may hold only 0-9, *, #, A-D")
            for i, e in enumerate(events):
                if e.key.upper() not in DTMF_DIGITS:
                    raise KeystrokeInputError(f"events[{i}].key", f"{e.key!r} is not a DTMF digit")
        object.__setattr__(self, "events", events)


def ns_to_s(t_ns: int) -> float:
    """Integer nanoseconds -> float seconds (subtract an origin first for epoch clocks)."""
    return t_ns / 1e9


def ms_to_s(t_ms: float) -> float:
    return t_ms / 1e3


def canonical_key(name: str) -> str:
    """Map the many spellings of a key to one name.

    Printable keys are their single character (case kept: the typed text of a
    password is case-sensitive); pynput's quoted form `'a'` and `Key.space`
    are understood; special keys become lower-case names such as `backspace`,
    `shift`, `enter`. Space is the printable " ".
    """
    if not isinstance(name, str) or not name:
        raise KeystrokeInputError("key", f"key must be a non-empty string, got {name!r}")
    if len(name) >= 3 and name[0] == name[-1] and name[0] in "'\"":
        name = name[1:-1]  # pynput repr of a character key: 'a', "'"
        if len(name) == 1:
            return name
    if len(name) == 1:
        return _SPECIAL_ALIASES.get(name, name)
    low = name.lower()
    if low.startswith("key."):
        low = low[4:]
    return _SPECIAL_ALIASES.get(low, low)


def is_printable(key: str) -> bool:
    """A canonical key that produces one character of text."""
    return len(key) == 1


def dtmf_event(digit: str, start: float, end: float | None) -> KeyEvent:
    """A DTMF digit as a key event: tone start = press, tone end = release."""
    if not isinstance(digit, str) or digit.upper() not in DTMF_DIGITS or len(digit) != 1:
        raise KeystrokeInputError("digit", f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return KeyEvent(digit.upper(), start, end)


def _finite(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KeystrokeInputError(field, f"timestamp must be a number of seconds, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise KeystrokeInputError(field, f"timestamp must be finite, got {value!r}")
    return value


def clean_events(
    events: Iterable[KeyEvent],
    *,
    max_gap_s: float = MAX_GAP_S,
    max_backstep_s: float = MAX_BACKSTEP_S,
    max_hold_s: float = MAX_HOLD_S,
    max_events: int = MAX_EVENTS,
) -> tuple[KeyEvent, ...]:
    """Validate and tidy a sequence of key events -> press-ordered tuple.

    Repairs: sorts by press time (stable, so equal presses keep arrival
    order), canonicalises key names, drops exact duplicates, and merges
    a duplicate press whose release is missing into the one that has it.
    Rejects: empty input, non-finite times, release before press, a hold
    longer than `max_hold_s`, a gap longer than `max_gap_s`, a press that
    arrives more than `max_backstep_s` before an earlier arrival, two different
    releases for the same key press, more than `max_events` events.
    """
    raw = list(events)
    if not raw:
        raise KeystrokeInputError("events", "no key events: an empty sample cannot be scored")
    if len(raw) > max_events:
        raise KeystrokeInputError("events", f"{len(raw)} events exceed the limit of {max_events} per sample")
    checked: list[KeyEvent] = []
    latest = -math.inf
    for i, ev in enumerate(raw):
        if not isinstance(ev, KeyEvent):
            raise KeystrokeInputError(f"events[{i}]", f"expected a KeyEvent, got {type(ev).__name__}")
        press = _finite(ev.press, f"events[{i}].press")
        release = None if ev.release is None else _finite(ev.release, f"events[{i}].release")
        if press < latest - max_backstep_s:
            raise KeystrokeInputError(
                f"events[{i}].press",
                f"press at {press:.3f} s arrived after one at {latest:.3f} s: the clock stepped back more "
                f"than {max_backstep_s:g} s",
            )
        latest = max(latest, press)
        if release is not None and release < press:
            raise KeystrokeInputError(
                f"events[{i}].release",
                f"key {ev.key!r} released at {release:.6f} s, {press - release:.6f} s before its press",
            )
        if release is not None and release - press > max_hold_s:
            raise KeystrokeInputError(
                f"events[{i}].release",
                f"key {ev.key!r} held {release - press:.1f} s, more than {max_hold_s:g} s: "
                "stuck key or clock jump",
            )
        try:
            key = canonical_key(ev.key)
        except KeystrokeInputError as exc:
            raise KeystrokeInputError(f"events[{i}].key", exc.description) from None
        checked.append(KeyEvent(key, press, release))
    kept: dict[tuple[str, float], int] = {}
    unique: list[tuple[int, KeyEvent]] = []
    for j, ev in enumerate(checked):
        seen = kept.get((ev.key, ev.press))
        if seen is None:
            kept[(ev.key, ev.press)] = len(unique)
            unique.append((j, ev))
            continue
        prev = unique[seen][1]
        if ev.release is None or prev.release == ev.release:
            continue
        if prev.release is None:
            unique[seen] = (j, ev)
            continue
        raise KeystrokeInputError(
            f"events[{j}].release",
            f"key {ev.key!r} pressed at {ev.press:.6f} s has two different releases "
            f"({prev.release:.6f} s and {ev.release:.6f} s)",
        )
    unique.sort(key=lambda item: item[1].press)
    out: list[KeyEvent] = []
    for j, ev in unique:
        if out and ev.press - out[-1].press > max_gap_s:
            raise KeystrokeInputError(
                f"events[{j}].press",
                f"{ev.press - out[-1].press:.1f} s between presses exceeds {max_gap_s:g} s: "
                "clock jump or separate sessions",
            )
        out.append(ev)
    return tuple(out)


def make_sample(events: Iterable[KeyEvent], kind: str = "free", text: str | None = None) -> Sample:
    """Validated, cleaned `Sample` from any iterable of events."""
    return Sample(tuple(events), kind, text)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TypedText:
    """What a fixed-text entry finally says, and the key events that produced it.

    `after_correction[i]` is True when a backspace came between kept event
    i-1 and kept event i: the gap between them is not the customer's rhythm.
    """

    text: str
    events: tuple[KeyEvent, ...]
    after_correction: tuple[bool, ...]


def reconstruct_typed(events: Sequence[KeyEvent]) -> TypedText:
    """Replay cleaned events as an editor would: printable keys append, backspace deletes.

    Modifiers and enter/tab/esc add no text. Cursor keys (arrows, delete,
    home/end) are rejected: the final text cannot be known from key order.
    """
    stack: list[tuple[str, KeyEvent, bool]] = []
    dirty = False
    for i, ev in enumerate(events):
        if is_printable(ev.key):
            stack.append((ev.key, ev, dirty))
            dirty = False
        elif ev.key == BACKSPACE:
            if stack:
                stack.pop()
            dirty = True
        elif ev.key in CURSOR_KEYS:
            raise KeystrokeInputError(
                f"events[{i}].key",
                f"cursor key {ev.key!r} makes the typed text ambiguous; fixed-text samples allow only "
                "characters and backspace",
            )
    return TypedText(
        "".join(c for c, _, _ in stack),
        tuple(e for _, e, _ in stack),
        tuple(d for _, _, d in stack),
    )


# ---------------------------------------------------------------- files


def _event_from_json(obj: Any, where: str) -> KeyEvent:
    if not isinstance(obj, dict):
        raise KeystrokeInputError(where, f"an event must be an object with key/down/up, got {obj!r}")
    if "key" not in obj or "down" not in obj:
        raise KeystrokeInputError(where, "an event needs at least 'key' and 'down'")
    key = obj["key"]
    if not isinstance(key, str):
        raise KeystrokeInputError(f"{where}.key", f"key must be a string, got {key!r}")
    down = _finite(obj["down"], f"{where}.down")
    up = obj.get("up")
    up = None if up is None else _finite(up, f"{where}.up")
    return KeyEvent(key, down, up)


def parse_sample_json(obj: Any) -> Sample:
    """One JSON Lines record (see docs/keystroke-format.md) -> validated `Sample`."""
    if not isinstance(obj, dict):
        raise KeystrokeInputError("sample", "each line must be a JSON object")
    kind = obj.get("kind", "free")
    text = obj.get("text")
    events = obj.get("events")
    if not isinstance(events, list):
        raise KeystrokeInputError("events", "'events' must be a list of {key, down, up} objects")
    evs = [_event_from_json(e, f"events[{i}]") for i, e in enumerate(events)]
    if kind == "dtmf":
        for i, e in enumerate(evs):
            try:
                evs[i] = dtmf_event(e.key, e.press, e.release)
            except KeystrokeInputError as exc:
                raise KeystrokeInputError(f"events[{i}].key", exc.description) from None
    if kind in ("fixed", "dtmf") and text is None:
        raise KeystrokeInputError("text", f"a {kind} sample must say which text was typed")
    return make_sample(evs, kind, text)


def load_keystroke_file(path: str | Path) -> list[Sample]:
    """Read an enrollment file: JSON Lines (one sample a line) or a P/R CSV stream.

    CSV files (`.csv`, rows `P|R,KEY,TIMESTAMP_NS`) become one free-text
    sample. Errors carry the line number in `field`, e.g. `line 3: events[2].up`.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise KeystrokeInputError("path", f"{path} is larger than {MAX_FILE_BYTES // 2**20} MiB")
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeystrokeInputError("path", f"cannot read {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        return [_load_pr_csv(content)]
    samples: list[Sample] = []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise KeystrokeInputError(f"line {lineno}", f"not valid JSON: {exc}") from None
        try:
            samples.append(parse_sample_json(obj))
        except KeystrokeInputError as exc:
            raise KeystrokeInputError(f"line {lineno}: {exc.field}", exc.description) from None
    if not samples:
        raise KeystrokeInputError("path", f"{path} holds no samples")
    return samples


def pair_press_release(
    rows: Iterable[tuple[str, str, float]], *, max_hold_s: float = MAX_HOLD_S
) -> tuple[list[KeyEvent], dict[str, int]]:
    """Turn a stream of (P|R, key, time s) rows into key events -> (events, repair counts).

    A release matches the open press of the same key. A press of a key that
    is still down within `AUTOREPEAT_S` of its previous press is auto-repeat
    and is dropped; later than that, the earlier release was lost and the
    earlier press keeps `release=None`. A release with no open press, or one
    more than `max_hold_s` after it, is dropped.
    """
    down: dict[str, int] = {}
    last_press: dict[str, float] = {}
    events: list[list[Any]] = []
    counts = {"autorepeat_dropped": 0, "orphan_release_dropped": 0, "missing_release": 0}
    for action, key, t in rows:
        if action == "P":
            if key in down and t - last_press[key] <= AUTOREPEAT_S:
                counts["autorepeat_dropped"] += 1
                last_press[key] = t
                continue
            down[key] = len(events)
            last_press[key] = t
            events.append([key, t, None])
        else:
            j = down.pop(key, None)
            if j is None or t < events[j][1] or t - events[j][1] > max_hold_s:
                counts["orphan_release_dropped"] += 1
            else:
                events[j][2] = t
    counts["missing_release"] = sum(1 for e in events if e[2] is None)
    return [KeyEvent(k, p, r) for k, p, r in events], counts


def _load_pr_csv(content: str) -> Sample:
    rows: list[tuple[str, str, float]] = []
    origin: int | None = None
    for lineno, row in enumerate(csv.reader(content.splitlines()), start=1):
        if not row:
            continue
        if len(row) != 3 or row[0] not in ("P", "R"):
            raise KeystrokeInputError(
                f"line {lineno}", f"expected P|R,KEY,TIMESTAMP_NS, got {','.join(row)!r}"
            )
        try:
            t_ns = int(row[2])
        except ValueError:
            raise KeystrokeInputError(
                f"line {lineno}", f"timestamp {row[2]!r} is not an integer number of nanoseconds"
            ) from None
        origin = t_ns if origin is None else origin
        try:
            key = canonical_key(row[1])
        except KeystrokeInputError as exc:
            raise KeystrokeInputError(f"line {lineno}", exc.description) from None
        rows.append((row[0], key, ns_to_s(t_ns - origin)))
    events, _ = pair_press_release(rows)
    return make_sample(events, "free")
