"""Second factors (TOTP, one-time codes), their lockout, and signed cross-channel assertions.

Everything here is pure domain logic: state is explicit (small dataclasses
with `to_bytes()` / `from_bytes()`), time is a `now: float` argument (seconds
since the epoch), and nothing is persisted or sent from here. Secrets (TOTP
secrets, signing keys) never appear in state bytes unsealed by accident: the
caller seals them with `authsvc.crypto.seal` before storing them.

Modules:
  totp        RFC 6238 time-based codes (`cryptography`'s TOTP)
  codes       one-time codes: hashed, single use, expiring, attempt- and rate-limited
  senders     the `CodeSender` interface, development senders, `load_sender(spec)`
  lockout     consecutive-failure lockout per (tenant, customer, factor)
  assertions  Ed25519-signed short-lived assertions, the signing key ring, replay guard

This package only holds the state envelope the modules share.
"""

from __future__ import annotations

import json
import math
from typing import Any

from authsvc.errors import IntegrityError

STATE_VERSION = 1


def dump_state(kind: str, body: dict[str, Any]) -> bytes:
    """Compact versioned JSON: {"v": 1, "kind": kind, ...body}."""
    doc = {"v": STATE_VERSION, "kind": kind, **body}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def load_state(data: bytes, kind: str) -> dict[str, Any]:
    """Parse an envelope written by `dump_state`; anything else is an `IntegrityError` naming `kind`."""
    try:
        doc = json.loads(bytes(data).decode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise IntegrityError(f"{kind} state: not versioned JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{kind} state: not a JSON object")
    if doc.get("kind") != kind:
        raise IntegrityError(f"{kind} state: holds {doc.get('kind')!r} state instead")
    if doc.get("v") != STATE_VERSION:
        raise IntegrityError(
            f"{kind} state: format version {doc.get('v')!r}, this build reads {STATE_VERSION}"
        )
    return doc


def as_count(value: object) -> int:
    """A non-negative JSON integer (bools refused), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


def as_time(value: object) -> float:
    """A finite JSON number (epoch seconds or a duration), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def as_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value
