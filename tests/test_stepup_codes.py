"""One-time codes (hashed, single use, expiring, attempt- and rate-limited) and their senders."""

from __future__ import annotations

import hmac
import json
import logging
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from authsvc.errors import ConfigError, IntegrityError, InvalidInput
from authsvc.stepup import codes as codes_module
from authsvc.stepup.codes import (
    CodeOutcome,
    CodePolicy,
    CodeState,
    OneTimeCodes,
    RateLimited,
    derive_code_key,
)
from authsvc.stepup.senders import CodeSender, FileSender, LogSender, load_sender

NOW = 1_700_000_000.0
T, C, P = "acme", "cust-1", "login"


@pytest.fixture
def otc() -> OneTimeCodes:
    return OneTimeCodes(os.urandom(32))


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# --- issue and verify -------------------------------------------------------------------------


def test_issued_code_is_six_digits_and_verifies_once(otc):
    code, state = otc.issue(None, T, C, P, NOW)
    assert len(code) == 6 and code.isascii() and code.isdigit()
    check = otc.verify(state, code, T, C, P, NOW + 10)
    assert check.ok and check.outcome is CodeOutcome.OK
    again = otc.verify(check.state, code, T, C, P, NOW + 11)
    assert not again.ok and again.outcome is CodeOutcome.NO_CODE


def test_code_expires_after_ttl(otc):
    code, state = otc.issue(None, T, C, P, NOW)
    assert otc.verify(state, code, T, C, P, NOW + 299.9).ok
    expired = otc.verify(state, code, T, C, P, NOW + 300)
    assert expired.outcome is CodeOutcome.EXPIRED and expired.state.pending is None


def test_custom_ttl_is_honoured():
    otc = OneTimeCodes(os.urandom(32), CodePolicy(ttl_s=60))
    code, state = otc.issue(None, T, C, P, NOW)
    assert otc.verify(state, code, T, C, P, NOW + 61).outcome is CodeOutcome.EXPIRED


def test_three_wrong_attempts_kill_the_code(otc):
    code, state = otc.issue(None, T, C, P, NOW)
    for left in (2, 1, 0):
        check = otc.verify(state, _wrong(code), T, C, P, NOW + 1)
        assert check.outcome is CodeOutcome.WRONG_CODE and check.attempts_left == left
        state = check.state
    final = otc.verify(state, code, T, C, P, NOW + 2)  # even the right code, now
    assert not final.ok and final.outcome is CodeOutcome.ATTEMPTS_EXHAUSTED


def test_right_code_after_one_wrong_attempt_is_accepted(otc):
    code, state = otc.issue(None, T, C, P, NOW)
    state = otc.verify(state, _wrong(code), T, C, P, NOW + 1).state
    assert otc.verify(state, code, T, C, P, NOW + 2).ok


def test_new_code_replaces_the_pending_one(otc, monkeypatch):
    draws = iter([111111, 222222])
    monkeypatch.setattr(codes_module.secrets, "randbelow", lambda n: next(draws))
    first, state = otc.issue(None, T, C, P, NOW)
    second, state = otc.issue(state, T, C, P, NOW + 60)
    assert (first, second) == ("111111", "222222")
    assert otc.verify(state, first, T, C, P, NOW + 61).outcome is CodeOutcome.WRONG_CODE
    assert otc.verify(state, second, T, C, P, NOW + 61).ok


@pytest.mark.parametrize(
    ("tenant", "customer", "purpose"),
    [("other", C, P), (T, "cust-2", P), (T, C, "change_phone")],
    ids=["tenant", "customer", "purpose"],
)
def test_code_is_bound_to_tenant_customer_and_purpose(otc, tenant, customer, purpose):
    code, state = otc.issue(None, T, C, P, NOW)
    assert otc.verify(state, code, tenant, customer, purpose, NOW + 1).outcome is CodeOutcome.WRONG_CODE


def test_code_hashed_with_another_key_does_not_verify():
    code, state = OneTimeCodes(os.urandom(32)).issue(None, T, C, P, NOW)
    assert not OneTimeCodes(os.urandom(32)).verify(state, code, T, C, P, NOW + 1).ok


def test_verify_without_an_issued_code_is_no_code(otc):
    assert otc.verify(None, "123456", T, C, P, NOW).outcome is CodeOutcome.NO_CODE


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5", None])
def test_malformed_code_is_invalid_input_and_costs_no_attempt(otc, code):
    _, state = otc.issue(None, T, C, P, NOW)
    with pytest.raises(InvalidInput) as err:
        otc.verify(state, code, T, C, P, NOW + 1)
    assert err.value.field == "code"
    assert state.pending is not None and state.pending.attempts == 0


def test_comparison_uses_hmac_compare_digest(otc, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(codes_module.hmac, "compare_digest", spy)
    code, state = otc.issue(None, T, C, P, NOW)
    otc.verify(state, _wrong(code), T, C, P, NOW + 1)
    otc.verify(state, code, T, C, P, NOW + 1)
    assert len(calls) == 2
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_state_holds_a_hash_never_the_code(otc, monkeypatch):
    monkeypatch.setattr(codes_module.secrets, "randbelow", lambda n: 493817)
    code, state = otc.issue(None, T, C, P, NOW)
    assert code == "493817"
    data = state.to_bytes()
    assert b"493817" not in data
    doc = json.loads(data)
    assert len(bytes.fromhex(doc["pending"]["digest"])) == 32
    restored = CodeState.from_bytes(data)
    assert restored == state
    assert otc.verify(restored, code, T, C, P, NOW + 1).ok


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"v":1,"kind":"otc","pending":null}',
        b'{"v":1,"kind":"otc","pending":{"purpose":"x"},"issued":[]}',
        b'{"v":1,"kind":"otc","pending":null,"issued":["soon"]}',
        b'{"v":1,"kind":"lockout","pending":null,"issued":[]}',
    ],
)
def test_corrupt_code_state_is_an_integrity_error(data):
    with pytest.raises(IntegrityError):
        CodeState.from_bytes(data)


# --- rate limit -------------------------------------------------------------------------------


def test_issue_is_rate_limited_per_window():
    otc = OneTimeCodes(os.urandom(32), CodePolicy(max_issued=3, issue_window_s=600, min_interval_s=0))
    state = None
    for i in range(3):
        _, state = otc.issue(state, T, C, P, NOW + i)
    with pytest.raises(RateLimited) as err:
        otc.issue(state, T, C, P, NOW + 10)
    assert err.value.reason == "RATE_LIMITED"
    assert err.value.retry_after_s == pytest.approx(590)
    _, state = otc.issue(state, T, C, P, NOW + 600)  # the first has left the window
    with pytest.raises(RateLimited):
        otc.issue(state, T, C, P, NOW + 600.5)


def test_resend_is_refused_within_min_interval(otc):
    _, state = otc.issue(None, T, C, P, NOW)
    with pytest.raises(RateLimited) as err:
        otc.issue(state, T, C, P, NOW + 10)
    assert err.value.retry_after_s == pytest.approx(20)
    otc.issue(state, T, C, P, NOW + 30)


def test_rate_limit_survives_a_round_trip_through_bytes():
    otc = OneTimeCodes(os.urandom(32), CodePolicy(max_issued=1, issue_window_s=600, min_interval_s=0))
    _, state = otc.issue(None, T, C, P, NOW)
    with pytest.raises(RateLimited):
        otc.issue(CodeState.from_bytes(state.to_bytes()), T, C, P, NOW + 1)


@pytest.mark.parametrize(
    "kwargs",
    [{"digits": 4}, {"ttl_s": 0}, {"max_attempts": 0}, {"max_issued": 0}, {"min_interval_s": 7200}],
)
def test_bad_code_policy_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        CodePolicy(**kwargs)


def test_short_hmac_key_is_refused_and_derived_key_is_stable():
    with pytest.raises(ConfigError):
        OneTimeCodes(b"short")
    data_key = os.urandom(32)
    assert derive_code_key(data_key) == derive_code_key(data_key) != data_key
    assert len(derive_code_key(data_key)) == 32


# --- senders ----------------------------------------------------------------------------------


def test_file_sender_appends_json_lines_to_a_0600_file(tmp_path: Path):
    path = tmp_path / "codes.jsonl"
    sender = FileSender(path, clock=lambda: 1234.5)
    sender.send("+15550100", "123456", "login", "acme")
    sender.send("a@example.com", "654321", "change_phone", "acme")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"time": 1234.5, "tenant": "acme", "destination": "+15550100", "purpose": "login", "code": "123456"},
        {
            "time": 1234.5,
            "tenant": "acme",
            "destination": "a@example.com",
            "purpose": "change_phone",
            "code": "654321",
        },
    ]
    assert isinstance(sender, CodeSender)


def test_file_sender_refuses_a_file_others_can_read(tmp_path: Path):
    path = tmp_path / "codes.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as err:
        FileSender(path)
    assert "chmod 600" in str(err.value)


def test_log_sender_logs_the_code_at_warning(caplog):
    caplog.set_level(logging.WARNING, logger="authsvc.stepup.senders")
    LogSender().send("+15550100", "123456", "login", "acme")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("development only" in m for m in messages)
    assert any("123456" in m and "+15550100" in m and "DEV ONLY" in m for m in messages)


def test_load_sender_log_and_file_specs(tmp_path: Path):
    assert isinstance(load_sender("log"), LogSender)
    sender = load_sender(f"file:{tmp_path / 'c.jsonl'}")
    assert isinstance(sender, FileSender) and sender.path == tmp_path / "c.jsonl"


def test_load_sender_imports_an_operator_provider_class(tmp_path: Path, monkeypatch):
    pkg = tmp_path / "acme_sms"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "provider.py").write_text(
        textwrap.dedent(
            """
            SENT = []

            class Sms:
                def send(self, destination, code, purpose, tenant):
                    SENT.append((destination, code, purpose, tenant))

            class NoSend:
                pass

            class Broken:
                def __init__(self):
                    raise RuntimeError("ACME_SMS_TOKEN is not set")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sender = load_sender("python:acme_sms.provider:Sms")
    sender.send("+15550100", "123456", "login", "acme")
    assert sys.modules["acme_sms.provider"].SENT == [("+15550100", "123456", "login", "acme")]
    with pytest.raises(ConfigError, match="has no send"):
        load_sender("python:acme_sms.provider:NoSend")
    with pytest.raises(ConfigError, match="ACME_SMS_TOKEN"):
        load_sender("python:acme_sms.provider:Broken")


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "sms",
        "file:",
        "smtp:mail.example.com",
        "python:",
        "python:no_such_module_xyz:Sender",
        "python:json:NoSuchClass",
        "python:json",
    ],
)
def test_bad_sender_spec_is_a_config_error_naming_it(spec):
    with pytest.raises(ConfigError) as err:
        load_sender(spec)
    assert spec.strip() in str(err.value) or not spec.strip()
