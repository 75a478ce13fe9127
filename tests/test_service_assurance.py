"""Policies, step-up, assertions, consent and audit, end to end through the gRPC server.

The finance flow of issue 4: a matching caller gets STEP_UP_REQUIRED, then
AUTHENTICATED after a correct TOTP code, with an assertion that a chat
session of the same tenant accepts and another tenant's refuses.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc, common_pb2, enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812 - the enum-heavy module, short
from authsvc.policy.schema import KeystrokeRules
from authsvc.stepup import totp
from tests.conftest import Clock  # noqa: F401 - re-exported for other test modules
from tests.principals import ensure_registered
from tests.typists import Typist
from tests.wire import call_requests, enroll_request, keystroke_pb, stream

FINANCE = 'sector = "finance"\n[lockout]\nmax_failures = 3\nlockout_s = 600\n'


def _write_policy(data_dir, tenant: str, text: str) -> None:
    (data_dir / "policies" / f"{tenant}.toml").write_text(text)


async def _register(channel, tenant, customer, methods, opt_out=False):
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    reply = await stub.RegisterCustomer(
        enrollment_pb2.RegisterCustomerRequest(
            tenant=tenant,
            customer_id=customer,
            methods=methods,
            opt_out_biometrics=opt_out,
            consent_text_version="consent-2026-11",
            confirm_template_removal=True,
        )
    )
    return reply.customer


async def _enroll_voice(channel, tenant, customer, utterances):
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await ensure_registered(channel, tenant, customer)
    for u in utterances:
        await stub.EnrollVoice(enroll_request(tenant, customer, u), timeout=60)


async def _totp(channel, clock, tenant, customer) -> bytes:
    """Enrolls and confirms a TOTP authenticator; -> its secret, read from the provisioning URI."""
    await ensure_registered(channel, tenant, customer)
    stub = assurance_pb2_grpc.StepUpServiceStub(channel)
    reply = await stub.EnrollTotp(
        assurance_pb2.EnrollTotpRequest(tenant=tenant, customer_id=customer, issuer="Bank")
    )
    query = urllib.parse.parse_qs(urllib.parse.urlparse(reply.provisioning_uri).query)
    secret = __import__("base64").b32decode(query["secret"][0] + "=" * (-len(query["secret"][0]) % 8))
    confirm = await stub.ConfirmTotp(
        assurance_pb2.ConfirmTotpRequest(
            tenant=tenant, customer_id=customer, code=totp.generate(secret, clock.now)
        )
    )
    assert confirm.confirmed
    clock.now += 30  # the next code is a new time step; the confirmation's code cannot be replayed
    return secret


def _answer(code: str, factor=common_pb2.SECOND_FACTOR_TOTP):
    return V.VerifyRequest(step_up=V.StepUpAnswer(factor=factor, code=code))


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def _finance_customer(svc, speech):
    channel, _, data_dir, _, clock = svc
    _write_policy(data_dir, "bank", FINANCE)
    target, _ = _speakers(speech)
    await _register(channel, "bank", "alice", [common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_TOTP])
    await _enroll_voice(channel, "bank", "alice", target[:4])
    return await _totp(channel, clock, "bank", "alice")


async def test_finance_caller_steps_up_with_totp_and_chat_accepts_the_assertion(svc, speech):
    channel, _, _, address, clock = svc
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    requests = [*call_requests("bank", "alice", target[4]), _answer(totp.generate(secret, clock.now))]
    decisions = await asyncio.to_thread(stream, address, requests)

    outcomes = [d.outcome for d in decisions]
    assert V.OUTCOME_STEP_UP_REQUIRED in outcomes
    step = decisions[outcomes.index(V.OUTCOME_STEP_UP_REQUIRED)]
    assert list(step.step_up_factors) == [common_pb2.SECOND_FACTOR_TOTP]
    assert step.fused_llr >= step.fused_threshold_llr and not step.HasField("assertion")
    assert step.evidence[0].target_far <= 1e-4, "finance thresholds follow NIST's 1 in 10,000"
    done = decisions[-1]
    assert done.outcome == V.OUTCOME_AUTHENTICATED, done.reason
    a = done.assertion
    assert a.assurance_level == "AAL2" and a.tenant == "bank" and a.customer_id == "alice"
    assert set(a.methods) == {common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_TOTP}
    assert a.expires_unix_ms > a.issued_unix_ms and a.token.count(".") == 2

    chat = V.VerifyRequest(
        start=V.SessionStart(
            tenant="bank", customer_id="alice", channel=common_pb2.CHANNEL_CHAT, assertion=a.token
        )
    )
    chat_decisions = await asyncio.to_thread(stream, address, [chat])
    assert chat_decisions[0].outcome == V.OUTCOME_AUTHENTICATED
    assert chat_decisions[0].assertion.id == a.id

    validator = assurance_pb2_grpc.AssertionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await validator.ValidateAssertion(
            assurance_pb2.ValidateAssertionRequest(tenant="shop", token=a.token)
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # The finance preset allows one use per assertion: the chat session spent it.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await validator.ValidateAssertion(
            assurance_pb2.ValidateAssertionRequest(tenant="bank", token=a.token)
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in err.value.details()


async def test_tampered_assertion_is_refused(svc, speech):
    channel, _, _, address, clock = svc
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    requests = [*call_requests("bank", "alice", target[4]), _answer(totp.generate(secret, clock.now))]
    token = (await asyncio.to_thread(stream, address, requests))[-1].assertion.token
    header, body, sig = token.split(".")
    claims = json.loads(__import__("base64").urlsafe_b64decode(body + "=="))
    claims["sub"] = "mallory"
    forged_body = __import__("base64").urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    validator = assurance_pb2_grpc.AssertionServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await validator.ValidateAssertion(
            assurance_pb2.ValidateAssertionRequest(tenant="bank", token=f"{header}.{forged_body}.{sig}")
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_wrong_codes_lead_to_lockout(svc, speech):
    _, _, _, address, clock = svc
    await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    wrong = [_answer("000000"), _answer("111111"), _answer("222222"), _answer("333333")]
    requests = [*call_requests("bank", "alice", target[4]), *wrong]
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(stream, address, requests)
    # The fourth answer comes after lockout: no step-up is pending any more.
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    decisions = await asyncio.to_thread(stream, address, [*call_requests("bank", "alice", target[4])[:2]])
    assert decisions[0].outcome == V.OUTCOME_REJECTED
    assert decisions[0].retry_after_seconds > 500 and "locked out" in decisions[0].reason
    clock.now += 601
    later = await asyncio.to_thread(stream, address, call_requests("bank", "alice", target[4]))
    assert V.OUTCOME_STEP_UP_REQUIRED in [d.outcome for d in later], "the lockout ends after lockout_s"


async def test_step_up_answers_report_attempts_left(svc, speech):
    _, _, _, address, _ = svc
    await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    requests = [*call_requests("bank", "alice", target[4]), _answer("000000"), _answer("111111")]
    decisions = await asyncio.to_thread(stream, address, requests)
    answers = decisions[-3:-1]
    assert [d.outcome for d in answers] == [V.OUTCOME_STEP_UP_REQUIRED] * 2
    assert [d.attempts_remaining for d in answers] == [2, 1]
    assert "wrong" in answers[0].reason


async def test_one_time_code_is_sent_and_accepted_once(svc, speech):
    channel, _, data_dir, address, _ = svc
    _write_policy(data_dir, "bank", FINANCE)
    target, _ = _speakers(speech)
    await _register(
        channel, "bank", "bob", [common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_ONE_TIME_CODE]
    )
    await _enroll_voice(channel, "bank", "bob", target[:4])
    await assurance_pb2_grpc.StepUpServiceStub(channel).SetCodeDestination(
        assurance_pb2.SetCodeDestinationRequest(tenant="bank", customer_id="bob", destination="+4930123456")
    )
    outbox = data_dir / "outbox" / "codes.jsonl"

    def requests():
        yield from call_requests("bank", "bob", target[4])
        yield V.VerifyRequest(send_code=V.OneTimeCodeRequest())
        deadline = time.monotonic() + 60
        while not outbox.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        code = json.loads(outbox.read_text().splitlines()[-1])["code"]
        yield _answer(code, common_pb2.SECOND_FACTOR_ONE_TIME_CODE)
        yield _answer(code, common_pb2.SECOND_FACTOR_ONE_TIME_CODE)

    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(stream, address, requests())
    # After AUTHENTICATED nothing is pending, so reusing the code is refused outright.
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    sent = json.loads(outbox.read_text().splitlines()[-1])
    assert sent["destination"] == "+4930123456"


async def test_general_tenant_caller_is_authenticated_passively(service, speech):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "carol", target[:4])
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "carol", target[4]))
    done = decisions[-1]
    assert done.outcome == V.OUTCOME_AUTHENTICATED
    assert done.assertion.assurance_level == "", "a biometric alone is no AAL (NIST SP 800-63B)"
    assert "no AAL" in done.reason
    assert list(done.assertion.methods) == [common_pb2.AUTH_METHOD_VOICE]


async def test_opted_out_customer_is_never_scored(service, speech):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "dave", target[:2])
    customer = await _register(channel, "shop", "dave", [common_pb2.AUTH_METHOD_TOTP], opt_out=True)
    assert customer.opted_out and customer.consent.text_version == "consent-2026-11"
    assert not customer.templates, "opting out erases the voiceprint"
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "dave", target[4]))
    assert {d.outcome for d in decisions} == {V.OUTCOME_OPTED_OUT}
    assert all(not d.evidence for d in decisions)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_voice(channel, "shop", "dave", target[:1])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_policy_file_is_refused_with_a_precise_message(svc, speech):
    _, _, data_dir, address, _ = svc
    _write_policy(data_dir, "bank", 'sector = "finance"\n[voice]\ntarget_far = 0.01\n')
    target, _ = _speakers(speech)
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(stream, address, call_requests("bank", "erin", target[0]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "voice.target_far" in err.value.details() and "bank.toml" in err.value.details()


async def test_stream_mixing_audio_and_key_events_fuses_both(service, speech):
    channel, _, _, address = service
    target, _ = _speakers(speech)
    typist = Typist(np.random.default_rng(7))
    await _enroll_voice(channel, "shop", "frank", target[:4])
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    reply = await stub.EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="frank",
            samples=[keystroke_pb(typist.password(), "password") for _ in range(6)],
        )
    )
    assert reply.samples_added == 6
    call = call_requests("shop", "frank", target[4])
    requests = [call[0], V.VerifyRequest(keystrokes=keystroke_pb(typist.password(), "password")), *call[1:]]
    decisions = await asyncio.to_thread(stream, address, requests)
    typed = decisions[0]
    assert [e.modality for e in typed.evidence] == [common_pb2.MODALITY_KEYSTROKE_FIXED]
    assert typed.evidence[0].llr > 0 and typed.evidence[0].profile == "password"
    final = decisions[-1]
    modalities = {e.modality for e in final.evidence}
    assert modalities == {common_pb2.MODALITY_VOICE, common_pb2.MODALITY_KEYSTROKE_FIXED}
    cap = KeystrokeRules().max_llr
    by = {e.modality: e.llr for e in final.evidence}
    typed_llr = by[common_pb2.MODALITY_KEYSTROKE_FIXED]
    assert final.fused_llr == pytest.approx(by[common_pb2.MODALITY_VOICE] + min(typed_llr, cap))
    assert final.outcome == V.OUTCOME_AUTHENTICATED
    assert set(final.assertion.methods) == {common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_TYPING}


async def test_impostor_typing_lowers_the_fused_evidence(service, speech):
    channel, _, _, address = service
    rng = np.random.default_rng(11)
    owner, impostor = Typist(rng), Typist(rng)
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await ensure_registered(channel, "shop", "gina")
    await stub.EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="gina",
            samples=[keystroke_pb(owner.password(), "password") for _ in range(6)],
        )
    )
    start = V.VerifyRequest(
        start=V.SessionStart(tenant="shop", customer_id="gina", channel=common_pb2.CHANNEL_WEB)
    )
    genuine = await asyncio.to_thread(
        stream, address, [start, V.VerifyRequest(keystrokes=keystroke_pb(owner.password(), "password"))]
    )
    other = await asyncio.to_thread(
        stream, address, [start, V.VerifyRequest(keystrokes=keystroke_pb(impostor.password(), "password"))]
    )
    assert genuine[-1].evidence[0].llr > other[-1].evidence[0].llr
    assert other[-1].outcome == V.OUTCOME_REJECTED


async def test_malformed_key_events_get_invalid_argument_naming_the_event(service):
    _, _, _, address = service
    start = V.VerifyRequest(
        start=V.SessionStart(tenant="shop", customer_id="h", channel=common_pb2.CHANNEL_WEB)
    )
    bad = common_pb2.KeystrokeSample(
        kind=common_pb2.KEYSTROKE_KIND_FREE_TEXT,
        events=[common_pb2.KeyEvent(key="a", down_s=1.0, up_s=0.5)],
    )
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(stream, address, [start, V.VerifyRequest(keystrokes=bad)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("keystrokes.events[0]"), err.value.details()


async def test_audit_lists_decisions_step_ups_enrollments_erasures_and_policy_changes(svc, speech):
    channel, _, data_dir, address, clock = svc
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    await asyncio.to_thread(
        stream,
        address,
        [*call_requests("bank", "alice", target[4]), _answer(totp.generate(secret, clock.now))],
    )
    _write_policy(data_dir, "bank", FINANCE + "[assertion]\nlifetime_s = 60\n")
    await asyncio.to_thread(stream, address, call_requests("bank", "alice", target[3])[:3])
    erased = await enrollment_pb2_grpc.EnrollmentServiceStub(channel).DeleteCustomer(
        enrollment_pb2.DeleteCustomerRequest(tenant="bank", customer_id="alice")
    )
    assert erased.templates_deleted == 4 and erased.secrets_deleted >= 1, "templates and factor secrets go"
    audit = assurance_pb2_grpc.AuditServiceStub(channel)
    events = (
        await audit.ListAuditEvents(assurance_pb2.ListAuditEventsRequest(tenant="bank", page_size=500))
    ).events
    actions = {e.action for e in events}
    assert {
        "register",
        "enroll.voice",
        "factor.totp.enroll",
        "decision",
        "step_up",
        "assertion.issue",
        "policy.change",
        "erase",
    } <= actions
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)
    assert any(e.action == "step_up" and e.outcome == "passed" for e in events)
    text = " ".join(e.details for e in events)
    assert secret.hex() not in text and "score" not in text, "no secrets or biometric data in the audit log"
    other = await audit.ListAuditEvents(assurance_pb2.ListAuditEventsRequest(tenant="shop"))
    # The test's own provisioning of "shop" is all its trail holds.
    assert {e.action for e in other.events} == {"tenant.create", "credential.create"}, "audit is per tenant"


async def test_dtmf_pin_timings_are_scored_in_a_call(service, speech):
    """A PIN keyed on the phone: tone start/end times from the telephony platform."""
    channel, _, _, address = service
    typist = Typist(np.random.default_rng(5))

    def pin():
        from authsvc.keystroke import make_sample

        return make_sample(typist.events("4711"), "dtmf", "4711")

    await ensure_registered(channel, "shop", "ivan")
    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop", customer_id="ivan", samples=[keystroke_pb(pin(), "pin") for _ in range(6)]
        )
    )
    target, _ = _speakers(speech)
    await _enroll_voice(channel, "shop", "ivan", target[1:4])  # a voice call needs a voiceprint
    call = call_requests("shop", "ivan", target[0])
    decisions = await asyncio.to_thread(
        stream, address, [call[0], *call[1:50], V.VerifyRequest(keystrokes=keystroke_pb(pin(), "pin"))]
    )
    typed = next(d for d in decisions if d.evidence)
    assert typed.evidence[0].modality == common_pb2.MODALITY_KEYSTROKE_FIXED
    assert typed.evidence[0].profile == "pin" and typed.evidence[0].enrolled_samples == 6
    assert not typed.evidence[0].calibrated, "keypad timing has no calibration of its own"
    assert typed.outcome == V.OUTCOME_PENDING, "on a call, the voice decides"


async def test_an_authenticated_call_after_the_key_is_due_for_rotation_rotates_it(svc, speech):
    # The assertion is issued inside the decision's unit of work; re-reading and rotating the
    # ring happen before it (one unit of work may not wait for another: SQLite would hang).
    channel, ctx, _, address, clock = svc
    ctx.trust.clock = clock
    target, _ = _speakers(speech)
    await _register(channel, "shop", "erin", [common_pb2.AUTH_METHOD_VOICE])
    await _enroll_voice(channel, "shop", "erin", target[:4])
    first = (await asyncio.to_thread(stream, address, call_requests("shop", "erin", target[4])))[-1]
    clock.now += 2 * 24 * 3600  # past the refresh interval and the key's rotation age
    later = await asyncio.wait_for(
        asyncio.to_thread(stream, address, call_requests("shop", "erin", target[6])), 120
    )
    assert later[-1].outcome == V.OUTCOME_AUTHENTICATED
    assert later[-1].assertion.key_id != first.assertion.key_id


@pytest.mark.parametrize("token", ["99999999999999999999", "²", "-1", "1e3"])
async def test_a_page_token_this_service_did_not_issue_is_invalid_argument(svc, token):
    channel = svc[0]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await assurance_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            assurance_pb2.ListAuditEventsRequest(tenant="bank", page_token=token)
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.value.details()


async def test_a_repeated_outcome_is_not_audited_again_but_each_change_and_the_end_are(svc, speech):
    """Re-decisions that repeat the outcome are metrics, not audit rows (a wrong code's answer
    repeats STEP_UP_REQUIRED; its step-up attempt has its own row): the trail holds each counted
    look, each change of outcome and the final answer, so it grows per call, not per re-decision."""
    _, ctx, _, address, clock = svc
    secret = await _finance_customer(svc, speech)
    target, _ = _speakers(speech)
    right = totp.generate(secret, clock.now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    requests = [*call_requests("bank", "alice", target[4]), _answer(wrong), _answer(wrong), _answer(right)]
    decisions = await asyncio.to_thread(stream, address, requests)
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    events = await ctx.auditor.list("bank", 500, customer_id="alice")
    rows = {e.details["sequence"]: e.details for e in events if e.action == "decision"}
    assert sum(e.action == "step_up" and e.outcome == "failed" for e in events) == 2
    previous, repeats = V.OUTCOME_PENDING, 0
    for d in decisions:
        changed, previous = d.outcome != previous, d.outcome
        if changed or d.final:
            assert d.sequence in rows, f"{d.outcome} at {d.sequence} (a change or the end) not audited"
            assert rows[d.sequence]["final"] == d.final
        elif d.sequence in rows:
            assert "look" in rows[d.sequence], f"a repeated outcome at {d.sequence} was audited"
        elif d.outcome != V.OUTCOME_PENDING:
            repeats += 1
    assert repeats >= 2, "no re-decision repeated a verdict: the rule was not exercised"
    assert any("look" in r for r in rows.values()), "counted looks are audited"
