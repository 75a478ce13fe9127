"""Retention (issue 13): biometric templates expire after the tenant's retention_days without an
enrollment or a successful authentication; audit rows age out after audit_days, and the trimmed
chain still verifies (and still catches rows removed by anyone else).

Time passing is simulated by moving the stored activity times back, as years would."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from authsvc import retention
from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc, verification_pb2
from authsvc.identity import roles
from authsvc.retention import DAY_MS
from tests.principals import bearer, key_for, register
from tests.wire import call_requests, enroll_request, keystroke_pb, stream

V = verification_pb2
E = enrollment_pb2


async def _age(ctx, tenant: str, customer: str, days: float) -> None:
    """Moves the customer's last activity, and when their kept state was written, `days` into
    the past."""
    async with ctx.store.transaction() as tx:
        for table, column in (("customers", "last_active_ms"), ("customer_state", "updated_ms")):
            await tx._count(
                f"UPDATE {table} SET {column}={column}-? WHERE tenant=? AND customer_id=?",
                (int(days * DAY_MS), tenant, customer),
            )


async def _age_audit(ctx, tenant: str, days: float, below_id: int) -> None:
    async with ctx.store.transaction() as tx:
        await tx._count(
            "UPDATE audit SET time_ms=time_ms-? WHERE tenant=? AND id<?",
            (int(days * DAY_MS), tenant, below_id),
        )


def _policy(data_dir, text: str) -> None:
    (data_dir / "policies").mkdir(parents=True, exist_ok=True)
    (data_dir / "policies" / "acme.toml").write_text(text)


def _speakers(speech):
    names = sorted(speech)
    return speech[names[0]], speech[names[1]]


async def _enroll(channel, tenant, customer, utterances) -> None:
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, tenant, customer)
    for i, u in enumerate(utterances):
        await stub.EnrollVoice(enroll_request(tenant, customer, u, f"u{i}"), timeout=60)


async def test_an_inactive_customers_voiceprint_expires_and_their_calls_answer_expired(service, speech):
    channel, ctx, _, address = service
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    target, other = _speakers(speech)
    await _enroll(channel, "acme", "old", target[:4])
    await _enroll(channel, "acme", "caller", other[:4])
    await _enroll(channel, "acme", "fresh", other[4:6])
    # Three years and a day pass; "caller" authenticated on a call a week ago, "fresh" enrolled
    # a year ago: both are kept.
    for cid in ("old", "caller", "fresh"):
        await _age(ctx, "acme", cid, 1096)
    decisions = await asyncio.to_thread(stream, address, call_requests("acme", "caller", other[6]))
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    await _age(ctx, "acme", "caller", 7)
    await _age(ctx, "acme", "fresh", -731)

    dry = await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme", dry_run=True))
    assert [c.customer_id for c in dry.customers] == ["old"] and dry.dry_run
    assert dry.customers[0].templates == 4 and dry.retention_days == 1095
    shown = await stub.GetCustomer(E.GetCustomerRequest(tenant="acme", customer_id="old"))
    assert len(shown.templates) >= 1 and shown.expired_unix_ms == 0, "a dry run erases nothing"

    done = await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme"))
    assert [c.customer_id for c in done.customers] == ["old"] and not done.dry_run
    shown = await stub.GetCustomer(E.GetCustomerRequest(tenant="acme", customer_id="old"))
    assert not shown.templates, "every template is erased, fingerprints too"
    assert shown.expired_unix_ms > 0 and shown.consent.text_version, "the record and consent stay"
    async with ctx.store.transaction() as tx:
        assert await tx.templates("acme", "old") == [], "fingerprints go with the voiceprint"
    decisions = await asyncio.to_thread(stream, address, call_requests("acme", "old", target[4]))
    assert decisions[-1].outcome == V.OUTCOME_EXPIRED and decisions[-1].final
    assert "enroll again" in decisions[-1].reason
    rows = [e for e in await ctx.auditor.list("acme", 200, customer_id="old") if e.action == "expire"]
    assert len(rows) == 1 and rows[0].details["templates"] == 4 and rows[0].details["retention_days"] == 1095
    for kept in ("caller", "fresh"):
        shown = await stub.GetCustomer(E.GetCustomerRequest(tenant="acme", customer_id=kept))
        assert shown.templates and shown.expired_unix_ms == 0, kept

    # Nothing more is due; enrolling again ends the expiry.
    assert not (await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme"))).customers
    await _enroll(channel, "acme", "old", target[5:9])
    decisions = await asyncio.to_thread(stream, address, call_requests("acme", "old", target[9]))
    assert decisions[-1].outcome == V.OUTCOME_AUTHENTICATED, decisions[-1].reason
    shown = await stub.GetCustomer(E.GetCustomerRequest(tenant="acme", customer_id="old"))
    assert shown.expired_unix_ms == 0


async def test_typing_profiles_and_voices_kept_from_calls_expire_too_and_the_tenant_sets_the_days(
    service, speech
):
    from authsvc.keystroke import make_sample
    from tests.typists import Typist

    channel, ctx, data_dir, _ = service
    _policy(data_dir, "[retention]\nretention_days = 30\n")
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    typist = Typist(np.random.default_rng(3))
    await register(channel, "acme", "typist")
    await stub.EnrollKeystrokes(
        E.EnrollKeystrokesRequest(
            tenant="acme",
            customer_id="typist",
            samples=[
                keystroke_pb(make_sample(typist.events("4711"), "dtmf", "4711"), "pin") for _ in range(6)
            ],
        )
    )
    # The voice of a recent caller claiming this customer (fraud screening keeps a few).
    await ctx.vault.put_state("acme", "typist", "caller.s-1", b"\0" * 16)
    await _age(ctx, "acme", "typist", 29)
    assert not (await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme", dry_run=True))).customers
    await _age(ctx, "acme", "typist", 2)
    report = await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme"))
    assert [c.customer_id for c in report.customers] == ["typist"] and report.retention_days == 30
    async with ctx.store.transaction() as tx:
        assert await tx.templates("acme", "typist") == []
        left = await tx.state_names("acme", "typist")
        assert not [n for n in left if n.startswith("caller.")], "the callers' voices go too"


async def test_a_dormant_customers_voices_from_todays_calls_stay_and_no_template_means_no_expiry(service):
    """A customer dormant past retention_days whose calls gather voices today (passive
    re-enrollment, or a taker-over's voice kept for the watchlist) keeps them until they too
    are past the period; one who never held a template is not marked EXPIRED."""
    channel, ctx, _, _ = service
    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    await register(channel, "acme", "dormant")
    await ctx.vault.put_state("acme", "dormant", "caller.s-9", b"\0" * 16)
    await _age(ctx, "acme", "dormant", 1200)
    await ctx.vault.put_state("acme", "dormant", "caller.s-10", b"\0" * 16)  # today's call
    report = await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme"))
    assert [c.customer_id for c in report.customers] == ["dormant"] and report.customers[0].templates == 0
    async with ctx.store.transaction() as tx:
        left = [n for n in await tx.state_names("acme", "dormant") if n.startswith("caller.")]
    assert left == ["caller.s-10"], "only the voice past the period goes"
    again = await stub.ExpireCustomers(E.ExpireCustomersRequest(tenant="acme", dry_run=True))
    assert not again.customers, "a voice of today is not due"
    shown = await stub.GetCustomer(E.GetCustomerRequest(tenant="acme", customer_id="dormant"))
    assert shown.expired_unix_ms == 0, "never enrolled: NOT_ENROLLED, not EXPIRED"


async def test_a_customer_who_authenticates_while_the_sweep_runs_is_kept(service, speech):
    """The sweep lists, then erases each customer under its lock after checking again."""
    channel, ctx, _, _ = service
    target, _ = _speakers(speech)
    await _enroll(channel, "acme", "busy", target[:2])
    await _age(ctx, "acme", "busy", 1100)
    async with ctx.store.transaction() as tx:
        listed = await tx.stale_customers("acme", retention.DAY_MS * 10**6, retention.BIOMETRIC_STATES, 10)
    assert [r.customer_id for r in listed] == ["busy"]
    async with ctx.store.transaction() as tx:  # the customer enrolled again meanwhile
        await tx.touch_customer("acme", "busy", int(__import__("time").time() * 1000), enrolled=True)
    cutoff = int(__import__("time").time() * 1000) - 1095 * DAY_MS
    assert await retention._expire(ctx, "acme", "busy", cutoff, 1095, 0, "") is None
    async with ctx.store.transaction() as tx:
        assert await tx.templates("acme", "busy")


async def test_expiry_needs_a_tenant_admin_and_checks_its_limit(service):
    _, ctx, _, address = service

    def expire(key: str, **fields):
        with grpc.insecure_channel(address) as ch:
            return enrollment_pb2_grpc.EnrollmentServiceStub(ch).ExpireCustomers(
                E.ExpireCustomersRequest(tenant="acme", **fields), metadata=bearer(key)
            )

    for role in (roles.ENROLLMENT, roles.AGENT, roles.TELEPHONY):
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(expire, await key_for(ctx, "acme", role), dry_run=True)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(expire, admin, limit=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.value.details()
    assert (await asyncio.to_thread(expire, admin, dry_run=True)).retention_days == 1095


async def test_old_audit_rows_are_trimmed_and_the_chain_still_verifies(service):
    _, ctx, data_dir, _ = service
    _policy(data_dir, "[retention]\naudit_days = 365\n")
    for i in range(12):
        await ctx.auditor.record("acme", "test.event", f"c{i}", "ok", "tester", n=i)
    events = sorted(await ctx.auditor.list("acme", 500), key=lambda e: e.id)
    cut = next(e.id for e in events if e.customer_id == "c8")
    await _age_audit(ctx, "acme", 400, cut)
    old = [e for e in events if e.id < cut]
    trimmed = await retention.trim_audit(ctx, "acme")
    assert trimmed == len(old)
    kept = {e.id for e in await ctx.auditor.list("acme", 500)}
    assert not kept & {e.id for e in old} and {e.id for e in events if e.id >= cut} <= kept
    check = await ctx.auditor.verify("acme")
    assert check.intact, check.problem
    rows = [e for e in await ctx.auditor.list("acme", 10) if e.action == "audit.trim"]
    assert rows and rows[0].details["rows"] == trimmed, "the trim is audited"
    assert await retention.trim_audit(ctx, "acme") == 0, "nothing older is left"


async def test_rows_removed_beyond_the_trim_or_a_moved_trim_point_are_detected(service):
    _, ctx, data_dir, _ = service
    _policy(data_dir, "[retention]\naudit_days = 365\n")
    for i in range(6):
        await ctx.auditor.record("acme", "test.event", f"c{i}", "ok", "tester", n=i)
    events = sorted(await ctx.auditor.list("acme", 500), key=lambda e: e.id)
    cut = next(e.id for e in events if e.customer_id == "c3")
    await _age_audit(ctx, "acme", 400, cut)
    await retention.trim_audit(ctx, "acme")
    assert (await ctx.auditor.verify("acme")).intact
    # An insider deletes the first kept row, passing it off as retention.
    async with ctx.store.transaction() as tx:
        await tx._count("DELETE FROM audit WHERE tenant='acme' AND id=?", (cut,))
    check = await ctx.auditor.verify("acme")
    assert not check.intact and "missing" in check.problem
    # ... and moves the trim point over it: the trim's MAC does not match.
    async with ctx.store.transaction() as tx:
        (row_hash,) = await tx._one(
            "SELECT prev_hash FROM audit WHERE tenant='acme' AND id>? ORDER BY id", (cut,)
        )
        await tx._count("UPDATE audit_heads SET trim_id=?, trim_hash=? WHERE tenant='acme'", (cut, row_hash))
    check = await ctx.auditor.verify("acme")
    assert not check.intact and "retention" in check.problem


async def test_rows_deleted_from_the_start_without_a_trim_cannot_pose_as_one(service):
    """No trim ever ran: an insider deletes the first rows and writes a trim point of their own
    (the last deleted row's hash, no id, no MAC, as an untrimmed tenant's fields look)."""
    _, ctx, _, _ = service
    for i in range(6):
        await ctx.auditor.record("acme", "test.event", f"c{i}", "ok", "tester", n=i)
    events = sorted(await ctx.auditor.list("acme", 500), key=lambda e: e.id)
    cut = next(e.id for e in events if e.customer_id == "c3")
    async with ctx.store.transaction() as tx:
        (last_deleted,) = await tx._one("SELECT prev_hash FROM audit WHERE tenant='acme' AND id=?", (cut,))
        await tx._count("DELETE FROM audit WHERE tenant='acme' AND id<?", (cut,))
        await tx._count(
            "UPDATE audit_heads SET trim_id=0, trim_hash=?, trim_mac='' WHERE tenant='acme'", (last_deleted,)
        )
    check = await ctx.auditor.verify("acme")
    assert not check.intact and "retention" in check.problem, check


async def test_the_sweep_covers_every_tenant_and_one_broken_policy_does_not_stop_it(service, speech, caplog):
    channel, ctx, data_dir, _ = service
    target, other = _speakers(speech)
    await _enroll(channel, "acme", "a", target[:2])
    await _enroll(channel, "globex", "g", other[:2])
    await _age(ctx, "acme", "a", 1200)
    await _age(ctx, "globex", "g", 1200)
    _policy(data_dir, "[retention]\nretention_days = 0\n")  # out of range
    # The platform's own trail ("") ages out too, under the default audit_days.
    await ctx.auditor.record("", "test.event", "", "ok", "tester")
    rows = await ctx.auditor.list("", 1000)
    await _age_audit(ctx, "", 2600, max(e.id for e in rows) + 1)
    with caplog.at_level("ERROR", logger="authsvc.retention"):
        expired, trimmed = await retention.sweep(ctx)
    assert expired == 1 and trimmed >= len(rows)
    async with ctx.store.transaction() as tx:
        assert await tx.templates("globex", "g") == []
        assert await tx.templates("acme", "a"), "a tenant whose policy fails to load is skipped, not guessed"
    failures = [r.getMessage().split(":")[0] for r in caplog.records if r.name == "authsvc.retention"]
    assert failures == ["retention of tenant acme failed"]
    assert (await ctx.auditor.verify("")).intact
