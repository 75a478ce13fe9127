"""Signed, short-lived assertions: "this customer of this tenant was authenticated, how, when".

An AUTHENTICATED decision carries one, so another channel (chat after a call)
can accept the customer without asking again. Format, JWS-like but not JWT:

    base64url(header) "." base64url(payload) "." base64url(signature)

header  = canonical JSON {"alg": "EdDSA", "kid": KEY_ID, "typ": "authsvc-assertion/1"}
payload = canonical JSON {"aal", "channel", "exp", "iat", "jti", "methods", "sub", "tenant"}
signature = Ed25519 over the ASCII bytes `base64url(header) "." base64url(payload)`

Canonical JSON is sorted keys, no spaces, UTF-8; base64url has no padding.
Times are integer epoch seconds. `jti` is 128 random bits (urlsafe base64).

Signing keys live in a `SigningKeyRing`: one active key signs; `rotate(now)`
makes a new active key, drops the old private key, and keeps its public key
for verification for `retire_after_s`, which must outlast the longest
assertion lifetime. `to_bytes()` contains the active private key in raw form:
seal it (`authsvc.crypto.seal`, e.g. under the master key with
`keyring_aad(scope)`) before storing it.

Validation refuses, in this order: garbage (`InvalidInput("assertion", ...)`),
an unknown or retired key id, a bad signature, a wrong tenant, an expired (or
not yet valid) assertion, and finally more uses than policy allows, counted by
a `ReplayGuard` so that refused tokens never consume a use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import json
import math
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authsvc import crypto
from authsvc.errors import AuthsvcError, ConfigError, IntegrityError, InvalidInput
from authsvc.stepup import as_time, dump_state, load_state

ALG = "EdDSA"
TYP = "authsvc-assertion/1"
# "" = no assurance level: a biometric match alone is not an authenticator (NIST SP 800-63B).
AALS = ("", "AAL1", "AAL2", "AAL3")
MAX_TOKEN_CHARS = 4096
MAX_FIELD_CHARS = 256
MAX_METHODS = 8
DEFAULT_LIFETIME_S = 300
DEFAULT_CLOCK_SKEW_S = 30.0
DEFAULT_RETIRE_AFTER_S = 3600.0

ASSERTION_EXPIRED = "ASSERTION_EXPIRED"
ASSERTION_NOT_YET_VALID = "ASSERTION_NOT_YET_VALID"
ASSERTION_BAD_SIGNATURE = "ASSERTION_BAD_SIGNATURE"
ASSERTION_WRONG_TENANT = "ASSERTION_WRONG_TENANT"
ASSERTION_REPLAYED = "ASSERTION_REPLAYED"
ASSERTION_UNKNOWN_KEY = "ASSERTION_UNKNOWN_KEY"
ASSERTION_LIFETIME = "ASSERTION_LIFETIME"

_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_JTI_RE = re.compile(r"[A-Za-z0-9_-]{22}")


class AssertionRejected(AuthsvcError):
    """A well-formed assertion that must not be accepted; `reason` says why (ASSERTION_*)."""

    reason = "ASSERTION_REJECTED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- encoding ---------------------------------------------------------------------------------


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str, what: str) -> bytes:
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInput("assertion", f"{what} is not base64url") from None
    if _b64e(data) != text:  # non-canonical trailing bits: one value, one spelling
        raise InvalidInput("assertion", f"{what} is not canonical base64url")
    return data


def canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key")
    return doc


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidInput("assertion", f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidInput("assertion", f"{what} is not a JSON object")
    if canonical_json(doc) != data:
        raise InvalidInput("assertion", f"{what} is not canonical JSON")
    return doc


# --- the assertion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Assertion:
    tenant: str
    customer_id: str
    methods: tuple[str, ...]
    aal: str
    channel: str
    issued_at: int
    expires_at: int
    jti: str
    kid: str
    # The authentication event: every assertion one session issues (more methods, higher
    # assurance) shares it, so "once per authentication" can be enforced. Tokens without it
    # (before 0.3) are their own event.
    auth_id: str = ""

    def payload(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "sub": self.customer_id,
            "methods": list(self.methods),
            "aal": self.aal,
            "channel": self.channel,
            "iat": self.issued_at,
            "exp": self.expires_at,
            "jti": self.jti,
            "aid": self.auth_id or self.jti,
        }


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
        raise InvalidInput(name, f"must be a non-empty string of at most {MAX_FIELD_CHARS} characters")
    return value


def _methods(value: object, name: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_METHODS:
        raise InvalidInput(name, f"must be a list of 1..{MAX_METHODS} method names")
    return tuple(_text(m, name) for m in value)


def _aal(value: object, name: str) -> str:
    if value not in AALS:
        raise InvalidInput(name, f"must be one of {', '.join(map(repr, AALS))}, got {value!r}")
    return str(value)


def _int_time(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(name, "must be a non-negative integer time")
    return value


def _parse_payload(doc: dict[str, Any], kid: str) -> Assertion:
    expected = {"tenant", "sub", "methods", "aal", "channel", "iat", "exp", "jti"}
    if set(doc) not in (expected, expected | {"aid"}):
        raise InvalidInput(
            "assertion", f"payload fields must be {sorted(expected)} (and aid), got {sorted(doc)}"
        )
    f = "assertion"
    jti = _text(doc["jti"], f)
    auth_id = _text(doc.get("aid", jti), f)
    if not _JTI_RE.fullmatch(jti) or not _JTI_RE.fullmatch(auth_id):
        raise InvalidInput(f, "jti and aid must be 128-bit urlsafe ids")
    a = Assertion(
        tenant=_text(doc["tenant"], f),
        customer_id=_text(doc["sub"], f),
        methods=_methods(doc["methods"], f),
        aal=_aal(doc["aal"], f),
        channel=_text(doc["channel"], f),
        issued_at=_int_time(doc["iat"], f),
        expires_at=_int_time(doc["exp"], f),
        jti=jti,
        kid=kid,
        auth_id=auth_id,
    )
    if a.expires_at <= a.issued_at:
        raise InvalidInput(f, "exp is not after iat")
    return a


# --- keys -------------------------------------------------------------------------------------


def key_id(public: bytes) -> str:
    """A key's id: the first 96 bits of SHA-256 of its raw public key, base64url."""
    return _b64e(hashlib.sha256(b"authsvc-assertion-key/v1" + public).digest()[:12])


@dataclass
class RingKey:
    kid: str
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None  # only the active key keeps its private half
    created_at: float
    superseded_at: float | None = None  # when another key became active


class SigningKeyRing:
    """Ed25519 signing keys with ids: one active (signs), older ones verify until retired."""

    def __init__(self, keys: list[RingKey], active_kid: str, retire_after_s: float) -> None:
        if not retire_after_s > 0:
            raise ConfigError(f"retire_after_s must be positive, got {retire_after_s}")
        by_kid = {k.kid: k for k in keys}
        if len(by_kid) != len(keys):
            raise ConfigError("key ring has duplicate key ids")
        active = by_kid.get(active_kid)
        if active is None or active.private is None or active.superseded_at is not None:
            raise ConfigError(f"key ring: active key {active_kid!r} is missing or has no private key")
        self._keys = by_kid
        self._active = active_kid
        self.retire_after_s = float(retire_after_s)

    @classmethod
    def generate(cls, now: float, retire_after_s: float = DEFAULT_RETIRE_AFTER_S) -> SigningKeyRing:
        key = _new_key(now)
        return cls([key], key.kid, retire_after_s)

    @property
    def active_kid(self) -> str:
        return self._active

    @property
    def active_created_at(self) -> float:
        return self._keys[self._active].created_at

    def kids(self) -> list[str]:
        return list(self._keys)

    def rotate(self, now: float) -> str:
        """A new active key; the old one verifies for `retire_after_s` more. -> the new key id."""
        old = self._keys[self._active]
        old.private = None
        old.superseded_at = now
        key = _new_key(now)
        self._keys[key.kid] = key
        self._active = key.kid
        self.prune(now)
        return key.kid

    def _usable(self, key: RingKey, now: float) -> bool:
        return key.superseded_at is None or now < key.superseded_at + self.retire_after_s

    def revoke_retired(self) -> list[str]:
        """Forget every key but the active one at once (after a suspected leak): tokens they
        signed stop verifying. -> their ids."""
        gone = [kid for kid in self._keys if kid != self._active]
        for kid in gone:
            del self._keys[kid]
        return gone

    def superseded_at(self, kid: str) -> float | None:
        key = self._keys.get(kid)
        return None if key is None else key.superseded_at

    def prune(self, now: float) -> list[str]:
        """Forget retired keys; -> their ids."""
        gone = [kid for kid, k in self._keys.items() if not self._usable(k, now)]
        for kid in gone:
            del self._keys[kid]
        return gone

    def public_keys(self, now: float) -> dict[str, bytes]:
        """kid -> raw 32-byte public key of every key that still verifies (to publish to validators
        running elsewhere)."""
        return {kid: _raw_public(k.public) for kid, k in self._keys.items() if self._usable(k, now)}

    def verification_key(self, kid: str, now: float) -> Ed25519PublicKey:
        key = self._keys.get(kid)
        if key is None:
            raise AssertionRejected(ASSERTION_UNKNOWN_KEY, f"assertion signed with unknown key {kid!r}")
        if not self._usable(key, now):
            raise AssertionRejected(ASSERTION_UNKNOWN_KEY, f"assertion signed with retired key {kid!r}")
        return key.public

    def sign(self, data: bytes) -> tuple[str, bytes]:
        key = self._keys[self._active]
        if key.private is None:  # __init__ and rotate prevent this
            raise ConfigError(f"key ring: active key {key.kid!r} has no private key")
        return key.kid, key.private.sign(data)

    def to_bytes(self) -> bytes:
        """Versioned JSON with the active private key raw (base64): seal before storing."""
        keys = []
        for k in self._keys.values():
            keys.append(
                {
                    "kid": k.kid,
                    "public": _b64e(_raw_public(k.public)),
                    "private": None if k.private is None else _b64e(k.private.private_bytes_raw()),
                    "created_at": k.created_at,
                    "superseded_at": k.superseded_at,
                }
            )
        return dump_state(
            "assertion-keyring", {"active": self._active, "retire_after_s": self.retire_after_s, "keys": keys}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SigningKeyRing:
        doc = load_state(data, "assertion-keyring")
        try:
            keys = [_load_key(raw) for raw in doc["keys"]]
            return cls(keys, str(doc["active"]), as_time(doc["retire_after_s"]))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise IntegrityError(f"assertion key ring: corrupt ({exc})") from None


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes_raw()


def _new_key(now: float) -> RingKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    return RingKey(key_id(_raw_public(public)), public, private, float(now))


def _load_key(raw: dict[str, Any]) -> RingKey:
    public_raw = base64.urlsafe_b64decode(raw["public"] + "==")
    public = Ed25519PublicKey.from_public_bytes(public_raw)
    private = None
    if raw["private"] is not None:
        private = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(raw["private"] + "=="))
        if _raw_public(private.public_key()) != public_raw:
            raise ValueError(f"key {raw['kid']!r}: private key does not match its public key")
    if raw["kid"] != key_id(public_raw):
        raise ValueError(f"key {raw['kid']!r}: id does not match its public key")
    superseded = raw["superseded_at"]
    return RingKey(
        raw["kid"],
        public,
        private,
        as_time(raw["created_at"]),
        None if superseded is None else as_time(superseded),
    )


def keyring_aad(scope: str) -> bytes:
    """Associated data for sealing a key ring's bytes (`scope`: "global" or a tenant id)."""
    return crypto._aad("authsvc/assertion-keyring/v1", scope)


# --- replay -----------------------------------------------------------------------------------


class ReplayGuard(Protocol):
    def consume(self, key: str, max_uses: int, forget_at: float, now: float) -> bool:
        """Record one use of `key` and -> True, or -> False (recording nothing) when it has
        already been used `max_uses` times. The count may be forgotten once `now >= forget_at`
        (the assertion can no longer validate then). Must be atomic per key."""
        ...


class MemoryReplayGuard:
    """Use counts in this process's memory; forgotten after expiry.

    Only correct when every validation of a tenant's assertions runs in this process; a
    scale-out deployment implements `ReplayGuard` on the shared store (an atomic
    INSERT ... ON CONFLICT DO UPDATE ... WHERE uses < max_uses).
    """

    def __init__(self) -> None:
        self._uses: dict[str, tuple[int, float]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._uses)

    def _forget(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, key = heapq.heappop(self._expiry)
            entry = self._uses.get(key)
            if entry is not None and entry[1] <= now:
                del self._uses[key]

    def consume(self, key: str, max_uses: int, forget_at: float, now: float) -> bool:
        with self._lock:
            self._forget(now)
            uses, until = self._uses.get(key, (0, forget_at))
            if uses >= max_uses:
                return False
            if key not in self._uses:
                heapq.heappush(self._expiry, (until, key))
            self._uses[key] = (uses + 1, until)
            return True


# --- issue and validate -----------------------------------------------------------------------


def issue(
    ring: SigningKeyRing,
    *,
    tenant: str,
    customer_id: str,
    methods: list[str] | tuple[str, ...],
    aal: str,
    channel: str,
    now: float,
    lifetime_s: int = DEFAULT_LIFETIME_S,
    auth_id: str | None = None,
) -> tuple[str, Assertion]:
    """A signed assertion valid from `now` for `lifetime_s` seconds -> (token, Assertion).
    `auth_id`: the authentication event it belongs to (None: a new one, its own id)."""
    if isinstance(lifetime_s, bool) or not isinstance(lifetime_s, int) or lifetime_s < 1:
        raise ConfigError(f"assertion lifetime_s must be a positive integer, got {lifetime_s!r}")
    if lifetime_s > ring.retire_after_s:
        raise ConfigError(
            f"assertion lifetime_s ({lifetime_s}) exceeds the key ring's retire_after_s "
            f"({ring.retire_after_s:g}): assertions would outlive their key after a rotation"
        )
    if not math.isfinite(now) or now < 0:
        raise ValueError(f"now must be a non-negative epoch time, got {now!r}")
    iat = math.floor(now)
    jti = _b64e(secrets.token_bytes(16))
    if auth_id is not None and not _JTI_RE.fullmatch(auth_id):
        raise ValueError("auth_id must be an assertion id")
    claims = Assertion(
        tenant=_text(tenant, "tenant"),
        customer_id=_text(customer_id, "customer_id"),
        methods=_methods(methods, "methods"),
        aal=_aal(aal, "aal"),
        channel=_text(channel, "channel"),
        issued_at=iat,
        expires_at=iat + lifetime_s,
        jti=jti,
        kid=ring.active_kid,
        auth_id=auth_id or jti,
    )
    header = _b64e(canonical_json({"alg": ALG, "kid": ring.active_kid, "typ": TYP}))
    body = _b64e(canonical_json(claims.payload()))
    signing_input = f"{header}.{body}".encode("ascii")
    _, signature = ring.sign(signing_input)
    return f"{header}.{body}.{_b64e(signature)}", claims


def validate(
    ring: SigningKeyRing,
    token: str,
    expected_tenant: str,
    now: float,
    replay_guard: ReplayGuard,
    *,
    max_uses: int = 1,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
    use_scope: str = "",
) -> Assertion:
    """The assertion, if `token` may be accepted now by `expected_tenant`; else raises
    `InvalidInput("assertion", ...)` (garbage) or `AssertionRejected` (with an ASSERTION_* reason).

    Each accepted validation consumes one of `max_uses` uses of the assertion's jti (per
    `use_scope`, e.g. the validating channel, when the policy allows one use per channel).
    """
    if max_uses < 1:
        raise ConfigError(f"max_uses must be at least 1, got {max_uses}")
    claims = check(ring, token, expected_tenant, now, clock_skew_s=clock_skew_s)
    guard_key = claims.jti if not use_scope else f"{claims.jti}/{use_scope}"
    if not replay_guard.consume(guard_key, max_uses, forget_at(claims, clock_skew_s), now):
        raise replayed(max_uses)
    return claims


def forget_at(claims: Assertion, clock_skew_s: float = DEFAULT_CLOCK_SKEW_S) -> float:
    """When a use count of the assertion may be forgotten: it can no longer validate then."""
    return claims.expires_at + clock_skew_s


def replayed(max_uses: int) -> AssertionRejected:
    return AssertionRejected(
        ASSERTION_REPLAYED, f"assertion already used {max_uses} time(s), the most its policy allows"
    )


def key_id_of(token: str) -> str:
    """The kid of a well-formed token's header ("" for anything else): to tell a key this ring
    does not know yet (another node rotated) from garbage, before anything is verified."""
    try:
        header_b64 = token.strip().split(".")[0]
        kid = _json_object(_b64d(header_b64, "header"), "header").get("kid")
    except (InvalidInput, IndexError):
        return ""
    return kid if isinstance(kid, str) else ""


def check(
    ring: SigningKeyRing,
    token: str,
    expected_tenant: str,
    now: float,
    *,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
    max_lifetime_s: float | None = None,
    signing_grace_s: float = DEFAULT_CLOCK_SKEW_S,
) -> Assertion:
    """Everything `validate` checks except use counts: format, key, signature, tenant, time.

    A stolen signing key must not outlive its rotation: a token that lives longer than
    `max_lifetime_s` (the tenant's assertion lifetime), or that a superseded key signed more
    than `signing_grace_s` after it was superseded, is refused although its signature verifies.
    """
    if not isinstance(token, str) or not token:
        raise InvalidInput("assertion", "is empty")
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidInput("assertion", f"longer than {MAX_TOKEN_CHARS} characters")
    token = token.strip()
    if not _TOKEN_RE.fullmatch(token):
        raise InvalidInput("assertion", "is not three base64url parts separated by dots")
    header_b64, payload_b64, sig_b64 = token.split(".")
    header = _json_object(_b64d(header_b64, "header"), "header")
    if header.get("alg") != ALG or header.get("typ") != TYP or set(header) != {"alg", "kid", "typ"}:
        raise InvalidInput("assertion", f"header must be alg {ALG}, typ {TYP} and a kid")
    kid = header["kid"]
    if not isinstance(kid, str) or not kid or len(kid) > MAX_FIELD_CHARS:
        raise InvalidInput("assertion", "kid must be a non-empty string")
    payload_raw = _b64d(payload_b64, "payload")
    signature = _b64d(sig_b64, "signature")

    public = ring.verification_key(kid, now)
    try:
        public.verify(signature, f"{header_b64}.{payload_b64}".encode("ascii"))
    except InvalidSignature:
        raise AssertionRejected(ASSERTION_BAD_SIGNATURE, "assertion signature does not verify") from None

    claims = _parse_payload(_json_object(payload_raw, "payload"), kid)
    if claims.tenant != expected_tenant:
        raise AssertionRejected(ASSERTION_WRONG_TENANT, "assertion was issued for another tenant")
    if now >= claims.expires_at + clock_skew_s:
        raise AssertionRejected(ASSERTION_EXPIRED, f"assertion expired {now - claims.expires_at:.0f} s ago")
    if claims.issued_at > now + clock_skew_s:
        raise AssertionRejected(ASSERTION_NOT_YET_VALID, "assertion is issued in the future (clock skew?)")
    if max_lifetime_s is not None and claims.expires_at - claims.issued_at > max_lifetime_s:
        raise AssertionRejected(ASSERTION_LIFETIME, "assertion lives longer than its tenant's policy allows")
    superseded = ring.superseded_at(kid)
    if superseded is not None and claims.issued_at > superseded + signing_grace_s:
        raise AssertionRejected(
            ASSERTION_UNKNOWN_KEY, f"assertion signed by key {kid!r} after it was retired"
        )
    return claims
