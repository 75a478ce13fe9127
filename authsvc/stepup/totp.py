"""RFC 6238 time-based one-time passwords with `cryptography`'s TOTP.

Defaults are what authenticator apps expect: SHA1, 6 digits, 30 s steps,
160-bit secrets. `verify` accepts the current step and `window` steps either
side (clock drift between phone and server), compares in constant time
(`TOTP.verify` uses `constant_time.bytes_eq`), and refuses any step at or
before the last one used, so a code cannot be replayed, even within its 30 s.

Persisted state (`TotpState`) holds the parameters and the last used step, not
the secret: seal the secret with `seal_secret` (AES-256-GCM, `authsvc.crypto`)
and store the blob beside the state.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.hashes import SHA1, SHA256, SHA512
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from authsvc import crypto
from authsvc.errors import ConfigError, IntegrityError, InvalidInput
from authsvc.stepup import as_count, as_flag, dump_state, load_state

SECRET_BYTES = 20  # 160 bits, RFC 4226 section 4 (R6) recommendation
ALGORITHMS = {"SHA1": SHA1, "SHA256": SHA256, "SHA512": SHA512}
MAX_WINDOW = 10


@dataclass(frozen=True)
class TotpParams:
    digits: int = 6
    algorithm: str = "SHA1"
    period: int = 30

    def __post_init__(self) -> None:
        if self.digits not in (6, 7, 8):
            raise ConfigError(f"totp digits must be 6, 7 or 8, got {self.digits!r}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"totp algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}"
            )
        if isinstance(self.period, bool) or not isinstance(self.period, int) or not 1 <= self.period <= 300:
            raise ConfigError(f"totp period must be 1..300 seconds, got {self.period!r}")


DEFAULT = TotpParams()


def _totp(secret: bytes, params: TotpParams) -> TOTP:
    try:
        return TOTP(bytes(secret), params.digits, ALGORITHMS[params.algorithm](), params.period)
    except ValueError as exc:  # e.g. a secret shorter than 128 bits
        raise ConfigError(f"totp secret: {exc}") from None


def new_secret(length: int = SECRET_BYTES) -> bytes:
    """A fresh random secret (20 bytes by default; use 32 for SHA256, 64 for SHA512)."""
    if length < 16:
        raise ConfigError(f"totp secrets must be at least 16 bytes, got {length}")
    return secrets.token_bytes(length)


def provisioning_uri(secret: bytes, account_name: str, issuer: str, params: TotpParams = DEFAULT) -> str:
    """otpauth://totp/ISSUER:ACCOUNT?digits=..&secret=BASE32&algorithm=..&issuer=..&period=..

    Show it once (as a QR code) at enrollment; it contains the secret.
    """
    if not account_name or not issuer:
        raise InvalidInput("account_name" if not account_name else "issuer", "must not be empty")
    return _totp(secret, params).get_provisioning_uri(account_name, issuer)


def time_step(now: float, params: TotpParams = DEFAULT) -> int:
    return int(now // params.period)


def generate(secret: bytes, now: float, params: TotpParams = DEFAULT) -> str:
    """The code for `now` (tests and development tools; the customer's app does this)."""
    return _totp(secret, params).generate(time_step(now, params) * params.period).decode("ascii")


def normalise_code(code: str, digits: int) -> str:
    """Drop spaces (apps show "123 456"); anything but exactly `digits` ASCII digits is refused."""
    if not isinstance(code, str):
        raise InvalidInput("code", f"must be a string of {digits} digits")
    cleaned = re.sub(r"\s", "", code)
    if not re.fullmatch(rf"[0-9]{{{digits}}}", cleaned):
        raise InvalidInput("code", f"must be exactly {digits} digits")
    return cleaned


def verify(
    secret: bytes,
    code: str,
    now: float,
    last_used_step: int | None,
    window: int = 1,
    params: TotpParams = DEFAULT,
) -> int | None:
    """The time step `code` matches (within +-`window` steps of `now`), or None.

    Steps at or before `last_used_step` are never accepted (replay); store the returned step as
    the new `last_used_step`. A malformed code raises `InvalidInput("code", ...)`.
    """
    cleaned = normalise_code(code, params.digits).encode("ascii")
    if not 0 <= window <= MAX_WINDOW:
        raise ConfigError(f"totp window must be 0..{MAX_WINDOW}, got {window}")
    if not math.isfinite(now) or now < 0:
        raise ValueError(f"now must be a non-negative epoch time, got {now!r}")
    totp = _totp(secret, params)
    current = time_step(now, params)
    matched: int | None = None
    # Every candidate is checked (no early exit), each with a constant-time comparison.
    for step in range(current - window, current + window + 1):
        if step < 0 or (last_used_step is not None and step <= last_used_step):
            continue
        try:
            totp.verify(cleaned, step * params.period)
        except InvalidToken:
            continue
        if matched is None:
            matched = step
    return matched


@dataclass(frozen=True)
class TotpState:
    """A customer's TOTP factor, without its secret. `confirmed` turns true on the first
    accepted code after enrollment (proof that the app holds the secret)."""

    params: TotpParams = DEFAULT
    last_used_step: int | None = None
    confirmed: bool = False

    def verify(self, secret: bytes, code: str, now: float, window: int = 1) -> TotpState | None:
        """The next state if `code` is accepted, else None (count that toward lockout)."""
        step = verify(secret, code, now, self.last_used_step, window, self.params)
        if step is None:
            return None
        return replace(self, last_used_step=step, confirmed=True)

    def to_bytes(self) -> bytes:
        return dump_state(
            "totp",
            {
                "digits": self.params.digits,
                "algorithm": self.params.algorithm,
                "period": self.params.period,
                "last_used_step": self.last_used_step,
                "confirmed": self.confirmed,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TotpState:
        doc = load_state(data, "totp")
        try:
            last = doc["last_used_step"]
            return cls(
                TotpParams(as_count(doc["digits"]), str(doc["algorithm"]), as_count(doc["period"])),
                None if last is None else as_count(last),
                as_flag(doc["confirmed"]),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise IntegrityError(f"totp state: corrupt ({exc})") from None


def secret_aad(tenant: str, customer_id: str) -> bytes:
    """Associated data binding a sealed TOTP secret to its tenant and customer."""
    return crypto._aad("authsvc/totp-secret/v1", tenant, customer_id)


def seal_secret(data_key: bytes, secret: bytes, tenant: str, customer_id: str) -> bytes:
    """AES-256-GCM blob of the secret under the tenant's data key (`authsvc.crypto.seal`)."""
    return crypto.seal(data_key, secret, secret_aad(tenant, customer_id))


def open_secret(data_key: bytes, blob: bytes, tenant: str, customer_id: str) -> bytes:
    """Inverse of `seal_secret`; a blob moved to another customer fails with `IntegrityError`."""
    return crypto.open_sealed(data_key, blob, secret_aad(tenant, customer_id), "totp secret")
