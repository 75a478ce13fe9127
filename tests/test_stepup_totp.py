"""TOTP (RFC 6238) second factor and the failure lockout that guards every second factor."""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from authsvc.errors import ConfigError, IntegrityError, InvalidInput
from authsvc.stepup import totp
from authsvc.stepup.lockout import LockedOut, Lockout, LockoutState
from authsvc.stepup.totp import TotpParams, TotpState

# RFC 6238 Appendix B: (time, SHA1 code, SHA256 code), 8 digits, 30 s steps.
RFC6238_VECTORS = [
    (59, "94287082", "46119246"),
    (1111111109, "07081804", "68084774"),
    (1111111111, "14050471", "67062674"),
    (1234567890, "89005924", "91819424"),
    (2000000000, "69279037", "90698825"),
    (20000000000, "65353130", "77737706"),
]
SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
EIGHT_SHA1 = TotpParams(digits=8, algorithm="SHA1")
EIGHT_SHA256 = TotpParams(digits=8, algorithm="SHA256")
NOW = 1_700_000_000.0


# --- RFC 6238 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("t", "code", "_sha256"), RFC6238_VECTORS)
def test_rfc6238_sha1_vectors_verify_at_their_time_step(t, code, _sha256):
    assert totp.verify(SEED_SHA1, code, t, None, window=0, params=EIGHT_SHA1) == t // 30
    assert totp.generate(SEED_SHA1, t, EIGHT_SHA1) == code


@pytest.mark.parametrize(("t", "_sha1", "code"), RFC6238_VECTORS)
def test_rfc6238_sha256_vectors_verify_at_their_time_step(t, _sha1, code):
    assert totp.verify(SEED_SHA256, code, t, None, window=0, params=EIGHT_SHA256) == t // 30


def test_rfc6238_code_is_refused_far_from_its_time():
    assert totp.verify(SEED_SHA1, "94287082", 59 + 3600, None, params=EIGHT_SHA1) is None


# --- drift window and replay ------------------------------------------------------------------


def test_default_code_is_six_digits_and_verifies_now():
    secret = totp.new_secret()
    code = totp.generate(secret, NOW)
    assert re.fullmatch(r"[0-9]{6}", code)
    assert totp.verify(secret, code, NOW, None) == int(NOW // 30)


@pytest.mark.parametrize("drift_steps", [-1, 1])
def test_code_one_step_off_is_accepted_for_clock_drift(drift_steps):
    secret = totp.new_secret()
    code = totp.generate(secret, NOW + 30 * drift_steps)
    assert totp.verify(secret, code, NOW, None) == int(NOW // 30) + drift_steps


@pytest.mark.parametrize("drift_steps", [-2, 2])
def test_code_two_steps_off_is_refused_with_the_default_window(drift_steps):
    secret = totp.new_secret()
    code = totp.generate(secret, NOW + 30 * drift_steps)
    assert totp.verify(secret, code, NOW, None) is None
    assert totp.verify(secret, code, NOW, None, window=2) == int(NOW // 30) + drift_steps


def test_window_zero_accepts_only_the_current_step():
    secret = totp.new_secret()
    assert totp.verify(secret, totp.generate(secret, NOW - 30), NOW, None, window=0) is None


def test_same_code_is_refused_the_second_time_within_its_step():
    secret = totp.new_secret()
    code = totp.generate(secret, NOW)
    step = totp.verify(secret, code, NOW, None)
    assert step is not None
    assert totp.verify(secret, code, NOW + 5, last_used_step=step) is None


def test_older_step_is_refused_after_a_newer_one_was_used():
    secret = totp.new_secret()
    used = totp.verify(secret, totp.generate(secret, NOW), NOW, None)
    previous = totp.generate(secret, NOW - 30)  # still inside the drift window
    assert totp.verify(secret, previous, NOW, last_used_step=used) is None


def test_next_step_code_is_accepted_after_the_current_one_was_used():
    secret = totp.new_secret()
    used = totp.verify(secret, totp.generate(secret, NOW), NOW, None)
    assert totp.verify(secret, totp.generate(secret, NOW + 30), NOW + 30, last_used_step=used) == used + 1


def test_wrong_code_is_refused():
    secret = totp.new_secret()
    good = totp.generate(secret, NOW)
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    assert totp.verify(secret, wrong, NOW, None) is None


def test_spaces_inside_a_code_are_ignored():
    secret = totp.new_secret()
    code = totp.generate(secret, NOW)
    assert totp.verify(secret, f" {code[:3]} {code[3:]} ", NOW, None) == int(NOW // 30)


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", "１２３４５６", "123-456", "12345678"])
def test_malformed_six_digit_code_is_invalid_input(code):
    with pytest.raises(InvalidInput) as err:
        totp.verify(totp.new_secret(), code, NOW, None)
    assert err.value.field == "code"


def test_six_digit_code_is_malformed_when_eight_are_configured():
    with pytest.raises(InvalidInput):
        totp.verify(SEED_SHA1, "123456", NOW, None, params=EIGHT_SHA1)


def test_constant_time_verify_of_cryptography_is_used(monkeypatch):
    from cryptography.hazmat.primitives.twofactor.totp import TOTP

    calls = []
    real = TOTP.verify

    def spy(self, code, time):
        calls.append(time)
        return real(self, code, time)

    monkeypatch.setattr(TOTP, "verify", spy)
    secret = totp.new_secret()
    totp.verify(secret, totp.generate(secret, NOW), NOW, None)
    assert len(calls) == 3  # every step of the window, no early exit


@pytest.mark.parametrize(
    "kwargs", [{"digits": 5}, {"digits": 9}, {"algorithm": "MD5"}, {"period": 0}, {"period": 30.5}]
)
def test_bad_totp_parameters_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        TotpParams(**kwargs)


def test_short_secret_is_refused():
    with pytest.raises(ConfigError):
        totp.new_secret(10)
    with pytest.raises(ConfigError):
        totp.verify(os.urandom(10), "123456", NOW, None)


# --- provisioning URI -------------------------------------------------------------------------


def test_provisioning_uri_carries_what_authenticator_apps_read():
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "alice@example.com", "Acme Bank")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth" and parts.netloc == "totp"
    assert unquote(parts.path) == "/Acme Bank:alice@example.com"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "secret": base64.b32encode(secret).decode(),
        "issuer": "Acme Bank",
        "algorithm": "SHA1",
        "digits": "6",
        "period": "30",
    }


def test_provisioning_uri_names_sha256_and_eight_digits():
    uri = totp.provisioning_uri(SEED_SHA256, "c-42", "Clinic", EIGHT_SHA256)
    assert "algorithm=SHA256" in uri and "digits=8" in uri


def test_new_secret_is_twenty_random_bytes():
    a, b = totp.new_secret(), totp.new_secret()
    assert len(a) == 20 and a != b


# --- state and sealing ------------------------------------------------------------------------


def test_state_advances_on_success_and_round_trips_without_the_secret():
    secret = totp.new_secret()
    state = TotpState()
    assert not state.confirmed
    after = state.verify(secret, totp.generate(secret, NOW), NOW)
    assert after is not None and after.confirmed and after.last_used_step == int(NOW // 30)
    data = after.to_bytes()
    assert secret not in data and base64.b32encode(secret) not in data
    assert TotpState.from_bytes(data) == after
    assert after.verify(secret, totp.generate(secret, NOW), NOW) is None  # replay


def test_state_keeps_non_default_parameters():
    state = TotpState(EIGHT_SHA256, 12, True)
    assert TotpState.from_bytes(state.to_bytes()) == state


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"v":1,"kind":"otc"}',
        b'{"v":2,"kind":"totp"}',
        b'{"v":1,"kind":"totp","digits":6,"algorithm":"MD5","period":30,"last_used_step":null,"confirmed":true}',
        b'{"v":1,"kind":"totp","digits":6,"algorithm":"SHA1","period":30,"last_used_step":-1,"confirmed":true}',
    ],
)
def test_corrupt_totp_state_is_an_integrity_error(data):
    with pytest.raises(IntegrityError):
        TotpState.from_bytes(data)


def test_sealed_secret_opens_only_for_its_customer():
    key = os.urandom(32)
    secret = totp.new_secret()
    blob = totp.seal_secret(key, secret, "acme", "c-1")
    assert secret not in blob
    assert totp.open_secret(key, blob, "acme", "c-1") == secret
    with pytest.raises(IntegrityError):
        totp.open_secret(key, blob, "acme", "c-2")
    with pytest.raises(IntegrityError):
        totp.open_secret(key, blob, "other", "c-1")


# --- lockout ----------------------------------------------------------------------------------


def _fail(policy: Lockout, state: LockoutState, n: int, now: float) -> LockoutState:
    for _ in range(n):
        policy.check(state, now)
        state = policy.record_failure(state, now)
    return state


def test_lockout_after_max_failures_and_unlock_after_lockout_s():
    policy = Lockout(max_failures=5, lockout_s=900)
    state = _fail(policy, LockoutState(), 4, NOW)
    policy.check(state, NOW)  # four failures: still allowed
    assert policy.attempts_left(state, NOW) == 1
    state = policy.record_failure(state, NOW)
    with pytest.raises(LockedOut) as err:
        policy.check(state, NOW + 1)
    assert err.value.reason == "LOCKED_OUT"
    assert err.value.retry_after_s == pytest.approx(899)
    with pytest.raises(LockedOut):
        policy.check(state, NOW + 899.9)
    policy.check(state, NOW + 900)  # unlocked
    assert policy.attempts_left(state, NOW + 900) == 5


def test_failures_while_locked_do_not_extend_the_lock():
    policy = Lockout(max_failures=2, lockout_s=60)
    state = _fail(policy, LockoutState(), 2, NOW)
    assert policy.record_failure(state, NOW + 30) == state
    policy.check(state, NOW + 60)


def test_success_resets_the_failure_count():
    policy = Lockout(max_failures=3, lockout_s=60)
    state = _fail(policy, LockoutState(), 2, NOW)
    state = policy.record_success(state)
    state = _fail(policy, state, 2, NOW)
    policy.check(state, NOW)


def test_hundred_consecutive_failures_disable_the_factor_until_reset():
    policy = Lockout(max_failures=10, lockout_s=60)
    state, now = LockoutState(), NOW
    for _ in range(9):
        state = _fail(policy, state, 10, now)
        now += 60
    state = _fail(policy, state, 9, now)
    state = policy.record_failure(state, now)  # the 100th
    assert state.disabled and state.consecutive == 100
    with pytest.raises(LockedOut) as err:
        policy.check(state, now + 10**9)
    assert err.value.retry_after_s is None
    policy.check(policy.reset(), now)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"max_failures": 101},
        {"lockout_s": 0},
        {"max_failures": 5, "max_consecutive": 200},
    ],
)
def test_lockout_policy_beyond_nist_limits_is_refused(kwargs):
    with pytest.raises(ConfigError):
        Lockout(**kwargs)


def test_lockout_state_round_trips_and_rejects_garbage():
    policy = Lockout(max_failures=2, lockout_s=60)
    state = _fail(policy, LockoutState(), 2, NOW)
    assert state.locked_until == NOW + 60
    assert LockoutState.from_bytes(state.to_bytes()) == state
    with pytest.raises(IntegrityError):
        LockoutState.from_bytes(b'{"v":1,"kind":"lockout","failures":"x"}')
