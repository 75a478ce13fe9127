"""Regression tests of an adversarial review of the identity boundary: each was a way in.

* adding (not only replacing) protection after the enrollment window: a new modality, more
  samples (voiceprint dilution), a new factor, all need authorization;
* one assertion authorizes one change, however many channel uses the policy allows;
* an anonymous flood naming made-up tenants creates no tenant trail, data key or unbounded state;
* the audit chain cannot be blanked out, nor its head moved;
* certificate identities are mapped by the platform only (no squatting another tenant's SAN).
"""

from __future__ import annotations

import asyncio
import time

import grpc

from authsvc.api.v1 import assurance_pb2, common_pb2, enrollment_pb2, identity_pb2
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.identity import refusals as refusal_module
from authsvc.identity import roles
from tests.principals import key_for, register
from tests.test_identity import call, invoke, reason_of
from tests.typists import Typist
from tests.wire import call_requests, enroll_request, keystroke_pb, stream

P = "/authsvc.v1."
M = common_pb2


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def _close_window(ctx, tenant: str, customer: str) -> None:
    """As if the customer had registered two hours ago: their enrollment window is over."""
    async with ctx.store.transaction() as tx:
        await tx._count(
            "UPDATE customers SET created_ms=? WHERE tenant=? AND customer_id=?",
            (int(time.time() * 1000) - 7_200_000, tenant, customer),
        )


async def _protected_customer(service, speech):
    channel = service[0]
    from authsvc.api.v1 import enrollment_pb2_grpc

    await register(channel, "shop", "carol", ("voice",))
    target, intruder = _speakers(speech)
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for u in target[:2]:
        await stub.EnrollVoice(enroll_request("shop", "carol", u), timeout=60)
    return target, intruder


async def test_after_the_enrollment_window_nothing_is_added_without_authorization(service, speech):
    _, ctx, _, address = service
    target, intruder = await _protected_customer(service, speech)
    insider = await key_for(ctx, "shop", roles.ENROLLMENT)
    more = enroll_request("shop", "carol", target[2])
    assert (
        await asyncio.to_thread(call, address, f"{P}EnrollmentService/EnrollVoice", more, insider) is None
    ), "inside the window the operator's enrollment session goes on"
    await _close_window(ctx, "shop", "carol")
    typist = Typist(__import__("numpy").random.default_rng(4))
    attempts = {
        "EnrollmentService/EnrollVoice": enroll_request("shop", "carol", intruder[0]),
        "EnrollmentService/RegisterCustomer": enrollment_pb2.RegisterCustomerRequest(
            tenant="shop",
            customer_id="carol",
            methods=[M.AUTH_METHOD_VOICE, M.AUTH_METHOD_TYPING],
            consent_text_version="x",
        ),
        "EnrollmentService/EnrollKeystrokes": enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop", customer_id="carol", samples=[keystroke_pb(typist.password(), "password")]
        ),
        "StepUpService/EnrollTotp": assurance_pb2.EnrollTotpRequest(tenant="shop", customer_id="carol"),
        "StepUpService/SetCodeDestination": assurance_pb2.SetCodeDestinationRequest(
            tenant="shop", customer_id="carol", destination="+4930666666"
        ),
    }
    for method, request in attempts.items():
        err = await asyncio.to_thread(call, address, P + method, request, insider)
        assert err is not None and err.code() != grpc.StatusCode.OK, method
        # Typing and factors were never chosen: refused for consent; the rest for authorization.
        assert reason_of(err) in ("CHANGE_NOT_AUTHORIZED", "FAILED_PRECONDITION"), (method, err.details())
    voice = await ctx.vault.load("shop", "carol", "voice")
    assert len(voice) == 3, "no intruder sample was added to the voiceprint"
    async with ctx.store.transaction() as tx:
        assert (await tx.get_customer("shop", "carol")).methods == ("voice",)


async def test_one_assertion_authorizes_one_change_even_where_channels_may_use_it_thrice(service, speech):
    _, ctx, _, address = service
    target, _ = await _protected_customer(service, speech)
    await _close_window(ctx, "shop", "carol")
    assert (await ctx.policy_for("shop")).assertion.max_uses == 3
    insider = await key_for(ctx, "shop", roles.ENROLLMENT)
    decisions = await asyncio.to_thread(stream, address, call_requests("shop", "carol", target[4]))
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED
    token = decisions[-1].assertion.token
    first = enroll_request("shop", "carol", target[3])
    first.authorization.assertion = token
    assert await asyncio.to_thread(call, address, f"{P}EnrollmentService/EnrollVoice", first, insider) is None
    second = enroll_request("shop", "carol", target[2])
    second.authorization.assertion = token
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/EnrollVoice", second, insider)
    assert err is not None and reason_of(err) == "CHANGE_NOT_AUTHORIZED"
    # An assertion a channel already used does not authorize a change either.
    used = (await asyncio.to_thread(stream, address, call_requests("shop", "carol", target[5])))[
        -1
    ].assertion.token
    validate = assurance_pb2.ValidateAssertionRequest(tenant="shop", token=used, channel=M.CHANNEL_CHAT)
    telephony = await key_for(ctx, "shop", roles.TELEPHONY)
    assert (
        await asyncio.to_thread(call, address, f"{P}AssertionService/ValidateAssertion", validate, telephony)
        is None
    )
    second.authorization.assertion = used
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/EnrollVoice", second, insider)
    assert err is not None and reason_of(err) == "CHANGE_NOT_AUTHORIZED"


async def test_an_anonymous_flood_naming_made_up_tenants_creates_no_tenant_state(service, monkeypatch):
    _, ctx, _, address = service
    monkeypatch.setattr(refusal_module, "MAX_WINDOWS", 5)

    async def count(table: str) -> int:
        column = "name" if table == "tenants" else "tenant"
        async with ctx.store.transaction() as tx:
            return int((await tx._one(f"SELECT count(*) FROM {table} WHERE {column} <> ''"))[0])

    before = {t: await count(t) for t in ("data_keys", "audit_heads", "tenants")}
    for i in range(30):
        get = enrollment_pb2.GetCustomerRequest(tenant=f"made-up-{i}-" + "x" * 2000, customer_id="c" * 500)
        err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", get, None)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    for i in range(30):
        get = enrollment_pb2.GetCustomerRequest(tenant=f"made-up-{i}", customer_id="c")
        await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", get, None)
    assert {t: await count(t) for t in ("data_keys", "audit_heads", "tenants")} == before
    assert len(ctx.refusals._windows) <= 5 + 1, "past the cap, windows collapse"
    await ctx.refusals.flush_due(everything=True)
    rows = [e for e in await ctx.auditor.list("", 1000) if e.action.startswith("request.refused")]
    assert rows and all(len(str(e.details)) < 1000 for e in rows), "what a request claims is bounded"
    assert sum(e.details.get("count", 1) for e in rows) == 60, "every refusal is counted"


async def test_blanking_the_whole_chain_or_moving_its_head_is_detected(service):
    _, ctx, _, _ = service
    for i in range(4):
        await ctx.auditor.record("acme", "test.event", "c", "ok", actor="test", n=i)
    assert (await ctx.auditor.verify("acme")).intact

    async def tamper(sql: str, args=()) -> None:
        async with ctx.store.transaction() as tx:
            await tx._count(sql, args)

    async with ctx.store.transaction() as tx:
        head_id, _, _ = await tx.audit_head("acme", lock=False)
        ids = sorted(e.id for e in await tx.list_audit("acme", 100))
    await tamper("DELETE FROM audit WHERE id=?", (head_id,))
    (prev_id,) = [i for i in ids if i < head_id][-1:]
    async with ctx.store.transaction() as tx:
        prev_hash = (await tx.audit_chain("acme", prev_id - 1, 1))[0][2]
    await tamper("UPDATE audit_heads SET last_id=?, last_hash=? WHERE tenant='acme'", (prev_id, prev_hash))
    moved = await ctx.auditor.verify("acme")
    assert not moved.intact and "head" in moved.problem
    await tamper("UPDATE audit SET prev_hash='', row_hash='' WHERE tenant='acme'")
    await tamper("DELETE FROM audit_heads WHERE tenant='acme'")
    blanked = await ctx.auditor.verify("acme")
    assert not blanked.intact and "after the chain began" in blanked.problem


async def test_only_the_platform_maps_certificate_identities(service):
    _, ctx, _, address = service
    admin = await key_for(ctx, "globex", roles.TENANT_ADMIN)
    squat = identity_pb2.MapCertificateRequest(
        tenant="globex", subject="spiffe://acme.example/ivr", roles=["enrollment"]
    )
    err = await asyncio.to_thread(call, address, f"{P}CredentialService/MapCertificate", squat, admin)
    assert err is not None and reason_of(err) == "ROLE_NOT_GRANTED"
    platform = await key_for(ctx, "", roles.PLATFORM_ADMIN)
    squat.tenant = "acme"
    mapped = await asyncio.to_thread(invoke, address, f"{P}CredentialService/MapCertificate", squat, platform)
    assert mapped.tenant == "acme" and mapped.kind == "certificate"
    again = await asyncio.to_thread(call, address, f"{P}CredentialService/MapCertificate", squat, platform)
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_the_assertions_of_one_session_authorize_one_change_between_them(service, speech):
    channel, ctx, _, address = service
    from authsvc.api.v1 import enrollment_pb2_grpc

    target, _ = _speakers(speech)
    typist = Typist(__import__("numpy").random.default_rng(9))
    await register(channel, "shop", "dora", ("voice", "typing", "totp", "one_time_code"))
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for u in target[:3]:
        await stub.EnrollVoice(enroll_request("shop", "dora", u), timeout=60)
    await stub.EnrollKeystrokes(
        enrollment_pb2.EnrollKeystrokesRequest(
            tenant="shop",
            customer_id="dora",
            samples=[keystroke_pb(typist.password(), "password") for _ in range(6)],
        )
    )
    await _close_window(ctx, "shop", "dora")
    call_ = [
        *call_requests("shop", "dora", target[4]),
        V.VerifyRequest(keystrokes=keystroke_pb(typist.password(), "password")),
    ]
    decisions = await asyncio.to_thread(stream, address, call_)
    tokens = list(dict.fromkeys(d.assertion.token for d in decisions if d.assertion.token))
    assert len(tokens) == 2, "voice, then voice and typing: two assertions of one authentication"
    insider = await key_for(ctx, "shop", roles.ENROLLMENT)
    first = assurance_pb2.EnrollTotpRequest(tenant="shop", customer_id="dora")
    first.authorization.assertion = tokens[0]
    assert await asyncio.to_thread(call, address, f"{P}StepUpService/EnrollTotp", first, insider) is None
    second = assurance_pb2.SetCodeDestinationRequest(
        tenant="shop", customer_id="dora", destination="+4930666666"
    )
    second.authorization.assertion = tokens[1]
    err = await asyncio.to_thread(call, address, f"{P}StepUpService/SetCodeDestination", second, insider)
    assert err is not None and reason_of(err) == "CHANGE_NOT_AUTHORIZED", "one authentication, one change"


async def test_removing_the_protection_does_not_open_the_customer_to_free_additions(service, speech):
    _, ctx, _, address = service
    await _protected_customer(service, speech)
    admin = await key_for(ctx, "shop", roles.TENANT_ADMIN)
    drop = enrollment_pb2.RegisterCustomerRequest(
        tenant="shop", customer_id="carol", methods=[M.AUTH_METHOD_VOICE], consent_text_version="v2"
    )
    drop.opt_out_biometrics, drop.confirm_template_removal = True, True
    drop.ClearField("methods")
    reply = await asyncio.to_thread(invoke, address, f"{P}EnrollmentService/RegisterCustomer", drop, admin)
    assert reply.templates_removed == 2
    await _close_window(ctx, "shop", "carol")
    insider = await key_for(ctx, "shop", roles.ENROLLMENT)
    again = enrollment_pb2.RegisterCustomerRequest(
        tenant="shop", customer_id="carol", methods=[M.AUTH_METHOD_VOICE], consent_text_version="v3"
    )
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/RegisterCustomer", again, insider)
    assert (
        err is not None
        and reason_of(err) == "CHANGE_NOT_AUTHORIZED"
        and "earlier enrollment" in err.details()
    )


async def test_an_identifier_with_a_trailing_newline_is_refused(service):
    _, ctx, _, address = service
    key = await key_for(ctx, "acme", roles.ENROLLMENT)
    get = enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id="carol\n")
    err = await asyncio.to_thread(call, address, f"{P}EnrollmentService/GetCustomer", get, key)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_refusal_rows_per_window_are_capped_however_many_sources_there_are(service, monkeypatch):
    _, ctx, _, _ = service
    monkeypatch.setattr(refusal_module, "MAX_ROWS_PER_WINDOW", 10)
    log = ctx.refusals
    for i in range(200):  # as if from 200 addresses
        await log.refused("", f"ipv6:[2001:db8::{i:x}]:5000", "anonymous", f"{P}X/Y", "CREDENTIAL_MISSING")
    await log.flush_due(everything=True)
    rows = [e for e in await ctx.auditor.list("", 1000) if e.action.startswith("request.refused")]
    assert len(rows) <= 12 and sum(e.details.get("count", 1) for e in rows) == 200


async def test_moving_where_the_chain_began_to_pass_off_blanked_rows_is_detected(service):
    _, ctx, _, _ = service
    for i in range(3):
        await ctx.auditor.record("acme", "test.event", "c", "ok", actor="test", n=i)
    async with ctx.store.transaction() as tx:
        await tx._count("UPDATE audit SET prev_hash='', row_hash='' WHERE tenant='acme'")
        await tx._count("DELETE FROM audit_heads WHERE tenant='acme'")
        await tx._count("UPDATE meta SET value='999999999' WHERE key='audit_chain_from'")
    result = await ctx.auditor.verify("acme")
    assert not result.intact and "where the chain began" in result.problem


async def test_an_api_key_sent_as_the_tenant_never_reaches_the_audit_trail(service):
    """A client that pastes its key into the tenant or customer field (and is refused) must not
    get the key written into the trail that records the refusal."""
    import json

    _, ctx, _, address = service
    key = await key_for(ctx, "acme", roles.ENROLLMENT)

    method = "/authsvc.v1.EnrollmentService/ListCustomers"
    err = await asyncio.to_thread(
        call, address, method, enrollment_pb2.ListCustomersRequest(tenant=key), None
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    # ... or as the customer, by a caller whose own key lacks the role.
    telephony = await key_for(ctx, "acme", roles.TELEPHONY)
    method = "/authsvc.v1.EnrollmentService/GetCustomer"
    request = enrollment_pb2.GetCustomerRequest(tenant="acme", customer_id=key)
    err = await asyncio.to_thread(call, address, method, request, telephony)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    await ctx.refusals.flush_due(everything=True)
    rows = [
        e for t in ("", "acme") for e in await ctx.auditor.list(t, 1000) if e.action.startswith("request")
    ]
    assert rows, "the refusal is audited"
    shown = json.dumps([[e.customer_id, e.details] for e in rows])
    assert key not in shown and key.split("_", 2)[2] not in shown, "neither the key nor its secret"
