"""Signed cross-channel assertions: issue, validate, refusals, replay policy and key rotation."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authsvc import crypto
from authsvc.errors import ConfigError, IntegrityError, InvalidInput
from authsvc.stepup import assertions
from authsvc.stepup.assertions import (
    AssertionRejected,
    MemoryReplayGuard,
    SigningKeyRing,
    issue,
    validate,
)

NOW = 1_700_000_000.0
CLAIMS = {
    "tenant": "acme",
    "customer_id": "cust-1",
    "methods": ["voice", "totp"],
    "aal": "AAL2",
    "channel": "voice",
}


@pytest.fixture
def ring() -> SigningKeyRing:
    return SigningKeyRing.generate(NOW - 10, retire_after_s=3600)


def _issue(
    ring: SigningKeyRing, now: float = NOW, lifetime_s: int = 300, **overrides
) -> tuple[str, assertions.Assertion]:
    return issue(ring, **{**CLAIMS, **overrides}, now=now, lifetime_s=lifetime_s)


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rejected(reason: str, ring, token, tenant="acme", now=NOW + 1, guard=None, **kw) -> AssertionRejected:
    with pytest.raises(AssertionRejected) as err:
        validate(ring, token, tenant, now, guard or MemoryReplayGuard(), **kw)
    assert err.value.reason == reason
    return err.value


# --- round trip and format --------------------------------------------------------------------


def test_issue_then_validate_round_trip(ring):
    token, issued = _issue(ring)
    got = validate(ring, token, "acme", NOW + 60, MemoryReplayGuard())
    assert got == issued
    assert got.tenant == "acme" and got.customer_id == "cust-1"
    assert got.methods == ("voice", "totp") and got.aal == "AAL2" and got.channel == "voice"
    assert got.issued_at == int(NOW) and got.expires_at == int(NOW) + 300
    assert got.kid == ring.active_kid


def test_token_is_three_base64url_parts_with_canonical_json(ring):
    token, issued = _issue(ring)
    header_b64, payload_b64, sig_b64 = token.split(".")
    assert "=" not in token
    header, payload = _b64d(header_b64), _b64d(payload_b64)
    assert json.loads(header) == {"alg": "EdDSA", "kid": ring.active_kid, "typ": "authsvc-assertion/1"}
    doc = json.loads(payload)
    assert payload == json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    assert doc == {
        "tenant": "acme",
        "sub": "cust-1",
        "methods": ["voice", "totp"],
        "aal": "AAL2",
        "channel": "voice",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "jti": issued.jti,
        # A first assertion is its own authentication event.
        "aid": issued.jti,
    }
    assert len(_b64d(sig_b64)) == 64
    assert len(_b64d(issued.jti)) == 16


def test_every_assertion_has_a_fresh_jti(ring):
    assert len({_issue(ring)[1].jti for _ in range(50)}) == 50


def test_signature_verifies_with_the_published_public_key(ring):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    token, _ = _issue(ring)
    h, p, s = token.split(".")
    public = Ed25519PublicKey.from_public_bytes(ring.public_keys(NOW)[ring.active_kid])
    public.verify(_b64d(s), f"{h}.{p}".encode())  # raises if not


# --- refusals ---------------------------------------------------------------------------------


def test_tampered_payload_is_a_bad_signature(ring):
    token, _ = _issue(ring)
    h, p, s = token.split(".")
    doc = json.loads(_b64d(p))
    doc["sub"] = "cust-2"
    forged = _b64e(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    _rejected("ASSERTION_BAD_SIGNATURE", ring, f"{h}.{forged}.{s}")


def test_tampered_aal_is_a_bad_signature(ring):
    token, _ = _issue(ring, aal="AAL1", methods=["voice"])
    h, p, s = token.split(".")
    forged = _b64e(_b64d(p).replace(b'"AAL1"', b'"AAL2"'))
    _rejected("ASSERTION_BAD_SIGNATURE", ring, f"{h}.{forged}.{s}")


def test_tampered_signature_is_refused(ring):
    token, _ = _issue(ring)
    h, p, s = token.split(".")
    sig = bytearray(_b64d(s))
    sig[10] ^= 0x01
    _rejected("ASSERTION_BAD_SIGNATURE", ring, f"{h}.{p}.{_b64e(bytes(sig))}")


def test_signature_by_a_foreign_key_with_a_known_kid_is_refused(ring):
    token, _ = _issue(ring)
    h, p, _ = token.split(".")
    foreign = Ed25519PrivateKey.generate().sign(f"{h}.{p}".encode())
    _rejected("ASSERTION_BAD_SIGNATURE", ring, f"{h}.{p}.{_b64e(foreign)}")


def test_token_from_another_ring_is_an_unknown_key(ring):
    token, _ = _issue(SigningKeyRing.generate(NOW))
    _rejected("ASSERTION_UNKNOWN_KEY", ring, token)


def test_expired_assertion_is_refused_after_the_clock_skew(ring):
    token, issued = _issue(ring, lifetime_s=120)
    validate(ring, token, "acme", issued.expires_at + 29, MemoryReplayGuard(), clock_skew_s=30)
    err = _rejected("ASSERTION_EXPIRED", ring, token, now=issued.expires_at + 30, clock_skew_s=30)
    assert "expired" in str(err)
    _rejected("ASSERTION_EXPIRED", ring, token, now=issued.expires_at, clock_skew_s=0)


def test_assertion_from_the_future_is_refused(ring):
    token, _ = _issue(ring, now=NOW + 600)
    _rejected("ASSERTION_NOT_YET_VALID", ring, token, now=NOW)


def test_wrong_tenant_is_refused_and_does_not_use_up_the_assertion(ring):
    guard = MemoryReplayGuard()
    token, _ = _issue(ring)
    _rejected("ASSERTION_WRONG_TENANT", ring, token, tenant="globex", guard=guard)
    assert len(guard) == 0
    validate(ring, token, "acme", NOW + 1, guard)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c.d",
        "a.b.c",
        "!!!.???.***",
        "x" * 5000,
        _b64e(b"not json") + ".e30.AAAA",
        _b64e(b'{"alg":"none","kid":"k","typ":"authsvc-assertion/1"}') + ".e30.AAAA",
        _b64e(b'{"alg":"EdDSA","kid":5,"typ":"authsvc-assertion/1"}') + ".e30.AAAA",
    ],
    ids=[
        "empty",
        "one-part",
        "two-parts",
        "four-parts",
        "bad-b64",
        "bad-chars",
        "huge",
        "hdr-json",
        "alg-none",
        "kid",
    ],
)
def test_garbage_is_invalid_input_naming_the_assertion(ring, token):
    with pytest.raises(InvalidInput) as err:
        validate(ring, token, "acme", NOW, MemoryReplayGuard())
    assert err.value.field == "assertion"


def test_non_string_token_is_invalid_input(ring):
    with pytest.raises(InvalidInput):
        validate(ring, None, "acme", NOW, MemoryReplayGuard())  # type: ignore[arg-type]


def test_validly_signed_but_non_canonical_payload_is_invalid_input(ring):
    # Only a holder of the signing key could do this; still, one assertion has one spelling.
    h = _b64e(assertions.canonical_json({"alg": "EdDSA", "kid": ring.active_kid, "typ": assertions.TYP}))
    p = _b64e(b'{"tenant": "acme"}')
    _, sig = ring.sign(f"{h}.{p}".encode())
    with pytest.raises(InvalidInput):
        validate(ring, f"{h}.{p}.{_b64e(sig)}", "acme", NOW, MemoryReplayGuard())


# --- replay policy ----------------------------------------------------------------------------


def test_second_use_is_refused_with_max_uses_one(ring):
    guard = MemoryReplayGuard()
    token, _ = _issue(ring)
    validate(ring, token, "acme", NOW + 1, guard)
    _rejected("ASSERTION_REPLAYED", ring, token, now=NOW + 2, guard=guard)


def test_max_uses_allows_exactly_n_uses(ring):
    guard = MemoryReplayGuard()
    token, _ = _issue(ring)
    for i in range(3):
        validate(ring, token, "acme", NOW + i, guard, max_uses=3)
    _rejected("ASSERTION_REPLAYED", ring, token, now=NOW + 5, guard=guard, max_uses=3)


def test_use_scope_counts_uses_per_channel(ring):
    guard = MemoryReplayGuard()
    token, _ = _issue(ring)
    validate(ring, token, "acme", NOW + 1, guard, use_scope="chat")
    validate(ring, token, "acme", NOW + 1, guard, use_scope="web")
    _rejected("ASSERTION_REPLAYED", ring, token, guard=guard, use_scope="chat")


def test_replay_guard_forgets_uses_after_expiry():
    guard = MemoryReplayGuard()
    assert guard.consume("j1", 1, forget_at=NOW + 100, now=NOW)
    assert not guard.consume("j1", 1, forget_at=NOW + 100, now=NOW + 99)
    assert guard.consume("j2", 1, forget_at=NOW + 500, now=NOW + 100)  # triggers forgetting j1
    assert len(guard) == 1


def test_max_uses_below_one_is_a_config_error(ring):
    token, _ = _issue(ring)
    with pytest.raises(ConfigError):
        validate(ring, token, "acme", NOW, MemoryReplayGuard(), max_uses=0)


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_old_tokens_valid_until_retired_new_tokens_use_new_kid(ring):
    old_kid = ring.active_kid
    old_token, _ = _issue(ring, now=NOW, lifetime_s=3600)
    new_kid = ring.rotate(NOW + 10)
    assert new_kid != old_kid and ring.active_kid == new_kid
    new_token, new = _issue(ring, now=NOW + 20)
    assert new.kid == new_kid
    assert json.loads(_b64d(new_token.split(".")[0]))["kid"] == new_kid
    # The old key still verifies until retire_after_s (3600 s) after the rotation.
    assert validate(ring, old_token, "acme", NOW + 30, MemoryReplayGuard()).kid == old_kid
    assert validate(ring, new_token, "acme", NOW + 30, MemoryReplayGuard()).kid == new_kid
    assert set(ring.public_keys(NOW + 30)) == {old_kid, new_kid}
    # After that the old key is retired: its tokens are refused even if not yet expired.
    _rejected("ASSERTION_UNKNOWN_KEY", ring, old_token, now=NOW + 10 + 3600, clock_skew_s=0)
    assert set(ring.public_keys(NOW + 10 + 3600)) == {new_kid}


def test_rotation_drops_the_old_private_key_and_prunes_retired_keys(ring):
    first = ring.active_kid
    ring.rotate(NOW)
    doc = json.loads(ring.to_bytes())
    keys = {k["kid"]: k for k in doc["keys"]}
    assert keys[first]["private"] is None and keys[ring.active_kid]["private"] is not None
    ring.rotate(NOW + 4000)  # the first key retired at NOW + 3600
    assert first not in ring.kids()


def test_lifetime_longer_than_key_retirement_is_refused(ring):
    with pytest.raises(ConfigError):
        _issue(ring, lifetime_s=3601)


def test_key_ring_round_trips_through_bytes(ring):
    token, _ = _issue(ring)
    ring.rotate(NOW + 5)
    restored = SigningKeyRing.from_bytes(ring.to_bytes())
    assert restored.active_kid == ring.active_kid and restored.kids() == ring.kids()
    validate(restored, token, "acme", NOW + 6, MemoryReplayGuard())
    token2, _ = _issue(restored, now=NOW + 6)
    validate(ring, token2, "acme", NOW + 7, MemoryReplayGuard())


def test_sealed_key_ring_opens_with_its_aad():
    ring = SigningKeyRing.generate(NOW)
    key = os.urandom(32)
    blob = crypto.seal(key, ring.to_bytes(), assertions.keyring_aad("global"))
    opened = SigningKeyRing.from_bytes(
        crypto.open_sealed(key, blob, assertions.keyring_aad("global"), "keyring")
    )
    assert opened.active_kid == ring.active_kid
    with pytest.raises(IntegrityError):
        crypto.open_sealed(key, blob, assertions.keyring_aad("acme"), "keyring")


def test_key_ring_with_a_mismatched_private_key_is_an_integrity_error(ring):
    doc = json.loads(ring.to_bytes())
    doc["keys"][0]["private"] = _b64e(Ed25519PrivateKey.generate().private_bytes_raw())
    with pytest.raises(IntegrityError):
        SigningKeyRing.from_bytes(json.dumps(doc).encode())


def test_corrupt_key_ring_bytes_are_an_integrity_error():
    with pytest.raises(IntegrityError):
        SigningKeyRing.from_bytes(b"garbage")


@pytest.mark.parametrize(
    "overrides",
    [
        {"tenant": ""},
        {"customer_id": ""},
        {"methods": []},
        {"methods": "voice"},
        {"aal": "AAL9"},
        {"channel": ""},
    ],
)
def test_issue_refuses_bad_claims(ring, overrides):
    with pytest.raises(InvalidInput):
        _issue(ring, **overrides)


# --- a stolen signing key must not outlive its rotation ------------------------------------------


def test_a_token_living_longer_than_the_tenant_allows_is_refused():
    ring = SigningKeyRing.generate(NOW, retire_after_s=90 * 86400)
    token, _ = _issue(ring, lifetime_s=30 * 86400)  # what a holder of a leaked key would mint
    assertions.check(ring, token, "acme", NOW + 10)  # without a policy limit it verifies
    with pytest.raises(AssertionRejected) as err:
        assertions.check(ring, token, "acme", NOW + 10, max_lifetime_s=300)
    assert err.value.reason == assertions.ASSERTION_LIFETIME


def test_a_superseded_key_signing_after_the_grace_period_is_refused():
    ring = SigningKeyRing.generate(NOW, retire_after_s=2 * 86400)
    stolen = RingKeyCopy(ring)
    before, _ = _issue(ring, now=NOW + 5)
    ring.rotate(NOW + 10)
    # Signed before the rotation, or by a node that had not re-read the ring yet: accepted.
    assertions.check(ring, before, "acme", NOW + 20, signing_grace_s=90)
    late = stolen.sign_at(NOW + 60)
    assertions.check(ring, late, "acme", NOW + 70, signing_grace_s=90)
    forged = stolen.sign_at(NOW + 3600)  # an hour after its rotation, with the copied key
    with pytest.raises(AssertionRejected) as err:
        assertions.check(ring, forged, "acme", NOW + 3610, signing_grace_s=90)
    assert err.value.reason == assertions.ASSERTION_UNKNOWN_KEY and "after it was retired" in str(err.value)


def test_revoking_retired_keys_stops_them_verifying_at_once():
    ring = SigningKeyRing.generate(NOW)
    token, _ = _issue(ring)
    ring.rotate(NOW + 1)
    assertions.check(ring, token, "acme", NOW + 2)
    assert len(ring.revoke_retired()) == 1
    with pytest.raises(AssertionRejected) as err:
        assertions.check(ring, token, "acme", NOW + 3)
    assert err.value.reason == assertions.ASSERTION_UNKNOWN_KEY


class RingKeyCopy:
    """The active private key of a ring, copied out (as a thief would) before it rotates."""

    def __init__(self, ring: SigningKeyRing) -> None:
        self.ring = SigningKeyRing.from_bytes(ring.to_bytes())

    def sign_at(self, now: float) -> str:
        return _issue(self.ring, now=now)[0]
