"""One-time codes sent to a customer (SMS, e-mail): single use, short-lived, stored as a hash.

A code is 6 random digits (`secrets`). Only HMAC-SHA256(key, tenant | customer |
purpose | nonce | code) is kept, so state bytes never contain the code, and a
digest copied to another customer or purpose never matches. A code
expires after `ttl_s` (300 s), is consumed by its first correct use, and is
dead after `max_attempts` (3) wrong guesses. Digests are compared with
`hmac.compare_digest`. Issuing is rate limited per state (i.e. per customer):
at most `max_issued` codes per `issue_window_s`, and not more often than
every `min_interval_s`; beyond that `issue` raises `RateLimited`.

Wrong codes should also be recorded with `authsvc.stepup.lockout`, which
limits failures across codes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc import crypto
from authsvc.errors import ConfigError, IntegrityError
from authsvc.stepup import as_count, as_time, dump_state, load_state
from authsvc.stepup.lockout import RateLimited
from authsvc.stepup.totp import normalise_code

__all__ = [
    "CodeCheck",
    "CodeOutcome",
    "CodePolicy",
    "CodeState",
    "OneTimeCodes",
    "PendingCode",
    "RateLimited",
    "derive_code_key",
]

NONCE_BYTES = 16
MAX_ISSUED_KEPT = 1000


@dataclass(frozen=True)
class CodePolicy:
    digits: int = 6
    ttl_s: float = 300.0
    max_attempts: int = 3
    max_issued: int = 5
    issue_window_s: float = 3600.0
    min_interval_s: float = 30.0

    def __post_init__(self) -> None:
        if self.digits not in (6, 7, 8):
            raise ConfigError(f"code digits must be 6, 7 or 8, got {self.digits!r}")
        if not 0 < self.ttl_s <= 3600:
            raise ConfigError(f"code ttl_s must be in (0, 3600], got {self.ttl_s!r}")
        if not 1 <= self.max_attempts <= 10:
            raise ConfigError(f"code max_attempts must be 1..10, got {self.max_attempts!r}")
        if not 1 <= self.max_issued <= MAX_ISSUED_KEPT:
            raise ConfigError(f"code max_issued must be 1..{MAX_ISSUED_KEPT}, got {self.max_issued!r}")
        if not self.issue_window_s > 0 or not 0 <= self.min_interval_s <= self.issue_window_s:
            raise ConfigError(
                "code issue_window_s must be positive and min_interval_s within 0..issue_window_s, got "
                f"{self.issue_window_s!r} and {self.min_interval_s!r}"
            )


@dataclass(frozen=True)
class PendingCode:
    purpose: str
    nonce: bytes
    digest: bytes
    issued_at: float
    expires_at: float
    attempts: int = 0


@dataclass(frozen=True)
class CodeState:
    """The customer's outstanding code (at most one; a new code replaces it) and the times of
    codes issued in the current rate window."""

    pending: PendingCode | None = None
    issued: tuple[float, ...] = ()

    def to_bytes(self) -> bytes:
        p = self.pending
        pending = None
        if p is not None:
            pending = {
                "purpose": p.purpose,
                "nonce": p.nonce.hex(),
                "digest": p.digest.hex(),
                "issued_at": p.issued_at,
                "expires_at": p.expires_at,
                "attempts": p.attempts,
            }
        return dump_state("otc", {"pending": pending, "issued": list(self.issued)})

    @classmethod
    def from_bytes(cls, data: bytes) -> CodeState:
        doc = load_state(data, "otc")
        try:
            raw = doc["pending"]
            pending = None
            if raw is not None:
                if not isinstance(raw["purpose"], str):
                    raise ValueError("purpose is not a string")
                pending = PendingCode(
                    raw["purpose"],
                    bytes.fromhex(raw["nonce"]),
                    bytes.fromhex(raw["digest"]),
                    as_time(raw["issued_at"]),
                    as_time(raw["expires_at"]),
                    as_count(raw["attempts"]),
                )
                if len(pending.digest) != hashlib.sha256().digest_size:
                    raise ValueError("digest has the wrong length")
            issued = tuple(as_time(t) for t in doc["issued"])
            if len(issued) > MAX_ISSUED_KEPT:
                raise ValueError("too many issue times")
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"otc state: corrupt ({exc})") from None
        return cls(pending, issued)


class CodeOutcome(StrEnum):
    OK = "OK"
    WRONG_CODE = "WRONG_CODE"
    EXPIRED = "EXPIRED"
    NO_CODE = "NO_CODE"  # none issued, or already used
    ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"


@dataclass(frozen=True)
class CodeCheck:
    """The result of one verification; store `state` whatever the outcome."""

    outcome: CodeOutcome
    state: CodeState
    attempts_left: int

    @property
    def ok(self) -> bool:
        return self.outcome is CodeOutcome.OK


def derive_code_key(data_key: bytes) -> bytes:
    """A 32-byte HMAC key for code digests from a tenant data key (HKDF-SHA256), so the AES key
    is never used directly as an HMAC key."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"authsvc/otc-hmac/v1").derive(data_key)


class OneTimeCodes:
    def __init__(self, key: bytes, policy: CodePolicy | None = None) -> None:
        if len(key) < 16:
            raise ConfigError(f"one-time code HMAC key must be at least 16 bytes, got {len(key)}")
        self._key = bytes(key)
        self.policy = policy or CodePolicy()

    def _digest(self, tenant: str, customer_id: str, purpose: str, nonce: bytes, code: str) -> bytes:
        msg = crypto._aad("authsvc/otc/v1", tenant, customer_id, purpose, nonce.hex(), code)
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def retry_after(self, state: CodeState, now: float) -> float:
        """Seconds until `issue` may succeed (0 when it may now)."""
        pol = self.policy
        recent = sorted(t for t in state.issued if t > now - pol.issue_window_s)
        wait = 0.0
        if recent:
            wait = max(wait, recent[-1] + pol.min_interval_s - now)
        if len(recent) >= pol.max_issued:
            wait = max(wait, recent[len(recent) - pol.max_issued] + pol.issue_window_s - now)
        return max(wait, 0.0)

    def issue(
        self, state: CodeState | None, tenant: str, customer_id: str, purpose: str, now: float
    ) -> tuple[str, CodeState]:
        """A new code (send it, never store it) and the next state; replaces any pending code.

        Raises `RateLimited` (with `retry_after_s`) when the customer had too many codes lately.
        """
        state = state or CodeState()
        wait = self.retry_after(state, now)
        if wait > 0:
            raise RateLimited(f"too many codes requested; try again in {wait:.0f} s", wait)
        code = f"{secrets.randbelow(10**self.policy.digits):0{self.policy.digits}d}"
        nonce = secrets.token_bytes(NONCE_BYTES)
        pending = PendingCode(
            purpose,
            nonce,
            self._digest(tenant, customer_id, purpose, nonce, code),
            now,
            now + self.policy.ttl_s,
        )
        recent = tuple(t for t in state.issued if t > now - self.policy.issue_window_s)
        return code, CodeState(pending, (*recent, now)[-MAX_ISSUED_KEPT:])

    def verify(
        self, state: CodeState | None, code: str, tenant: str, customer_id: str, purpose: str, now: float
    ) -> CodeCheck:
        """Check `code`; a malformed one raises `InvalidInput("code", ...)` and changes nothing."""
        cleaned = normalise_code(code, self.policy.digits)
        state = state or CodeState()
        p = state.pending
        if p is None:
            return CodeCheck(CodeOutcome.NO_CODE, state, 0)
        if now >= p.expires_at:
            return CodeCheck(CodeOutcome.EXPIRED, replace(state, pending=None), 0)
        if p.attempts >= self.policy.max_attempts:
            return CodeCheck(CodeOutcome.ATTEMPTS_EXHAUSTED, state, 0)
        candidate = self._digest(tenant, customer_id, purpose, p.nonce, cleaned)
        if hmac.compare_digest(candidate, p.digest):
            return CodeCheck(CodeOutcome.OK, replace(state, pending=None), 0)
        attempts = p.attempts + 1
        return CodeCheck(
            CodeOutcome.WRONG_CODE,
            replace(state, pending=replace(p, attempts=attempts)),
            self.policy.max_attempts - attempts,
        )
