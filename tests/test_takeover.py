"""The account-takeover chain of issue 9, step by step, as an attacker with network access tries it.

A finance customer with a voiceprint, a confirmed TOTP and a code destination. Without a
credential, with the tenant's telephony credential, and with another tenant's administrator,
every step (read the customer list and audit trail, re-register dropping the voiceprint, enroll
the attacker's voice, replace the TOTP, redirect the codes) is refused with its code, nothing in
the store changes, and every refusal is audited. The tenant's enrollment principal may add, but
replaces what protects the customer only with a fresh assertion of that customer (or as a
tenant-admin), each change audited with what authorized it.
"""

from __future__ import annotations

import asyncio
import base64
import urllib.parse

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import assurance_pb2, common_pb2, enrollment_pb2
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import roles
from authsvc.stepup import totp
from tests.principals import key_for, register
from tests.test_identity import call, invoke, reason_of, refusals
from tests.test_service_assurance import Clock
from tests.wire import call_requests, enroll_request, stream

POLICY = 'sector = "finance"\n[assertion]\nlifetime_s = 900\nchange_window_s = 120\n'
M = common_pb2
P = "/authsvc.v1."


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


@pytest.fixture
async def bank(service, speech):
    """Tenant "bank" (finance) and its customer "victim", set up by the tenant's own operator."""
    channel, ctx, data_dir, address = service
    clock = Clock()
    ctx.factors.clock = clock
    ctx.trust.clock = clock
    await ctx.tenants.raise_sector("bank", "finance", "test")
    (data_dir / "policies").mkdir(parents=True, exist_ok=True)
    (data_dir / "policies" / "bank.toml").write_text(POLICY)
    victim, _ = _speakers(speech)
    await register(channel, "bank", "victim", ("voice", "totp", "one_time_code"))
    from authsvc.api.v1 import assurance_pb2_grpc, enrollment_pb2_grpc

    enroll = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for u in victim[:4]:
        await enroll.EnrollVoice(enroll_request("bank", "victim", u), timeout=60)
    factors = assurance_pb2_grpc.StepUpServiceStub(channel)
    uri = (
        await factors.EnrollTotp(assurance_pb2.EnrollTotpRequest(tenant="bank", customer_id="victim"))
    ).provisioning_uri
    b32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    code = totp.generate(secret, clock.now)
    assert (
        await factors.ConfirmTotp(
            assurance_pb2.ConfirmTotpRequest(tenant="bank", customer_id="victim", code=code)
        )
    ).confirmed
    clock.now += 30
    await factors.SetCodeDestination(
        assurance_pb2.SetCodeDestinationRequest(
            tenant="bank", customer_id="victim", destination="+4930000001"
        )
    )
    return ctx, address, clock, secret


async def _state(ctx) -> tuple:
    """What protects the victim: templates, TOTP secret and state, code destination."""
    async with ctx.store.transaction() as tx:
        templates = sorted((t.modality, t.digest) for t in await tx.templates("bank", "victim"))
        record = await tx.get_customer("bank", "victim")
        state = {n: await tx.get_state("bank", "victim", n) for n in await tx.state_names("bank", "victim")}
    return templates, record, state


def _steps(attacker_audio) -> list[tuple[str, object]]:
    drop = enrollment_pb2.RegisterCustomerRequest(
        tenant="bank",
        customer_id="victim",
        methods=[M.AUTH_METHOD_TOTP, M.AUTH_METHOD_ONE_TIME_CODE],
        consent_text_version="x",
        confirm_template_removal=True,
    )
    return [
        (f"{P}EnrollmentService/ListCustomers", enrollment_pb2.ListCustomersRequest(tenant="bank")),
        (f"{P}AuditService/ListAuditEvents", assurance_pb2.ListAuditEventsRequest(tenant="bank")),
        (
            f"{P}EnrollmentService/GetCustomer",
            enrollment_pb2.GetCustomerRequest(tenant="bank", customer_id="victim"),
        ),
        (f"{P}EnrollmentService/RegisterCustomer", drop),
        (f"{P}EnrollmentService/EnrollVoice", enroll_request("bank", "victim", attacker_audio)),
        (
            f"{P}StepUpService/EnrollTotp",
            assurance_pb2.EnrollTotpRequest(tenant="bank", customer_id="victim"),
        ),
        (
            f"{P}StepUpService/SetCodeDestination",
            assurance_pb2.SetCodeDestinationRequest(
                tenant="bank", customer_id="victim", destination="+4930666666"
            ),
        ),
    ]


@pytest.mark.parametrize("attacker", ["no-credential", "bank-telephony", "globex-tenant-admin"])
async def test_every_step_of_the_takeover_is_refused_changes_nothing_and_is_audited(bank, speech, attacker):
    ctx, address, _, _ = bank
    _, intruder = _speakers(speech)
    key, code, reason = {
        "no-credential": (None, grpc.StatusCode.UNAUTHENTICATED, "CREDENTIAL_MISSING"),
        "bank-telephony": (
            await key_for(ctx, "bank", roles.TELEPHONY),
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_GRANTED",
        ),
        "globex-tenant-admin": (
            await key_for(ctx, "globex", roles.TENANT_ADMIN, roles.ENROLLMENT),
            grpc.StatusCode.PERMISSION_DENIED,
            "TENANT_NOT_GRANTED",
        ),
    }[attacker]
    before = await _state(ctx)
    steps = _steps(intruder[0])
    for method, request in steps:
        err = await asyncio.to_thread(call, address, method, request, key)
        assert err is not None and err.code() == code, (method, err)
        assert reason_of(err) == reason, method
    assert await _state(ctx) == before, "nothing about the victim changed"
    # A principal's refusals are in the bank's trail; an anonymous caller's in the platform's,
    # naming the tenant it claimed (so it cannot write into, or create, tenants' trails).
    trail = "" if key is None else "bank"
    audited = {
        e.details["method"]
        for e in await refusals(ctx, trail)
        if e.outcome == reason and e.details.get("claimed_tenant") == "bank"
    }
    assert audited == {m for m, _ in steps}, "every refused step is audited"


async def _authenticate(address: str, clock: Clock, secret: bytes, utterance) -> V.Assertion:
    """The real customer calls: voice, then the TOTP step-up -> an AAL2 assertion."""
    clock.now += 30
    answer = V.VerifyRequest(
        step_up=V.StepUpAnswer(factor=M.SECOND_FACTOR_TOTP, code=totp.generate(secret, clock.now))
    )
    decisions = await asyncio.to_thread(
        stream, address, [*call_requests("bank", "victim", utterance), answer]
    )
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    assert decisions[-1].assertion.assurance_level == "AAL2"
    return decisions[-1].assertion


async def test_the_enrollment_principal_replaces_protection_only_with_a_fresh_assertion(bank, speech):
    ctx, address, clock, secret = bank
    victim, intruder = _speakers(speech)
    operator = await key_for(ctx, "bank", roles.ENROLLMENT)
    before = await _state(ctx)
    by_name = {m.rsplit("/", 1)[-1]: (m, r) for m, r in _steps(intruder[0])}

    # Reads and additions are the enrollment role's job; replacing protection is not.
    for name in ("RegisterCustomer", "EnrollTotp", "SetCodeDestination"):
        err = await asyncio.to_thread(call, address, *by_name[name], operator)
        assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert reason_of(err) == "CHANGE_NOT_AUTHORIZED", name
    assert await _state(ctx) == before
    refused = {
        e.details["method"].rsplit("/", 1)[-1]
        for e in await refusals(ctx, "bank")
        if e.outcome == "CHANGE_NOT_AUTHORIZED"
    }
    assert refused == {"RegisterCustomer", "EnrollTotp", "SetCodeDestination"}

    # A fresh AAL2 assertion of the customer authorizes one change, once. (Each call is another
    # recording: the same one streamed twice is a replay.)
    first = await _authenticate(address, clock, secret, victim[4])
    redirect = by_name["SetCodeDestination"][1]
    redirect.authorization.assertion = first.token
    assert (
        await asyncio.to_thread(call, address, f"{P}StepUpService/SetCodeDestination", redirect, operator)
        is None
    )
    again = await asyncio.to_thread(call, address, f"{P}StepUpService/SetCodeDestination", redirect, operator)
    assert again is not None and reason_of(again) == "CHANGE_NOT_AUTHORIZED", (
        "an assertion authorizes one change"
    )

    # Too old for a change (but still valid for a channel): refused.
    stale = await _authenticate(address, clock, secret, np.concatenate([victim[5], victim[8]]))
    clock.now += 121
    totp_request = by_name["EnrollTotp"][1]
    totp_request.authorization.assertion = stale.token
    err = await asyncio.to_thread(call, address, f"{P}StepUpService/EnrollTotp", totp_request, operator)
    assert err is not None and reason_of(err) == "CHANGE_NOT_AUTHORIZED" and "older than" in err.details()

    # Another customer's assertion does not authorize a change of this one.
    fresh = await _authenticate(address, clock, secret, victim[6])
    totp_request.authorization.assertion = fresh.token
    totp_request.customer_id = "someone-else"
    err = await asyncio.to_thread(call, address, f"{P}StepUpService/EnrollTotp", totp_request, operator)
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED

    fresh = await _authenticate(address, clock, secret, victim[7])
    totp_request.authorization.assertion = fresh.token
    totp_request.customer_id = "victim"
    assert (
        await asyncio.to_thread(call, address, f"{P}StepUpService/EnrollTotp", totp_request, operator) is None
    )

    events = await ctx.auditor.list("bank", 1000, customer_id="victim")
    changed = {
        e.action: e.details for e in events if e.details.get("authorized_by", "").startswith("assertion:")
    }
    assert changed["factor.code_destination.set"]["authorized_by"] == f"assertion:{first.id}"
    assert changed["factor.totp.enroll"]["authorized_by"] == f"assertion:{fresh.id}"
    assert all(e.actor.startswith("key_") for e in events if e.action.startswith("factor.")), (
        "actor is the principal"
    )


async def test_a_tenant_admin_may_drop_templates_and_the_response_says_how_many(bank, speech):
    ctx, address, _, _ = bank
    _, intruder = _speakers(speech)
    admin = await key_for(ctx, "bank", roles.TENANT_ADMIN)
    method, drop = next((m, r) for m, r in _steps(intruder[0]) if m.endswith("RegisterCustomer"))
    drop.confirm_template_removal = False
    err = await asyncio.to_thread(call, address, method, drop, admin)
    assert err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "removes 4 template(s)" in err.details() and "--yes" in err.details()
    drop.confirm_template_removal = True
    reply = await asyncio.to_thread(invoke, address, method, drop, admin)
    assert reply.templates_removed == 4 and not reply.customer.templates
    (row,) = [
        e
        for e in await ctx.auditor.list("bank", 100, customer_id="victim")
        if e.action == "register" and e.details.get("templates_removed")
    ]
    assert row.details["authorized_by"] == "tenant-admin" and row.actor.startswith("key_")
