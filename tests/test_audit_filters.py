"""ListAuditEvents filters (action family, outcome, time range, customer): applied in the store's
query on both backends, paged correctly, validated, and behind the same boundary as before.

The filters are new server-side behaviour, so each way in is tried as an attack: no credential,
a credential of the tenant without tenant-admin, another tenant's tenant-admin, and filter
values written to widen the query. Each is refused with its status and audited."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from authsvc.api.v1 import assurance_pb2
from authsvc.identity import roles
from tests.principals import key_for
from tests.test_identity import call, invoke, reason_of

LIST = "/authsvc.v1.AuditService/ListAuditEvents"


async def _events(ctx) -> list:
    """A trail of "acme" with families, outcomes and customers to filter on, in a known order."""
    made = [
        ("enroll.voice", "c1", "added"),
        ("enroll.keystrokes", "c2", "added"),
        ("enrollment", "c1", "added"),  # not in the "enroll" family: a prefix only counts at a dot
        ("step_up", "c1", "wrong_code"),
        ("enroll.voice", "c2", "already_enrolled"),
        ("erase", "c2", "erased"),
        ("enroll", "c3", "added"),
    ]
    for action, customer, outcome in made:
        await ctx.auditor.record("acme", action, customer, outcome, actor="trail")
        await asyncio.sleep(0.003)  # distinct milliseconds, for the time range
    mine = [e for e in await ctx.auditor.list("acme", 1000) if e.actor == "trail"]
    assert len(mine) == len(made)
    return mine  # newest first


async def _list(address: str, key: str | None, tenant: str = "acme", **fields):
    """The blocking client, off the event loop the in-process server runs on."""
    request = assurance_pb2.ListAuditEventsRequest(tenant=tenant, **fields)
    return await asyncio.to_thread(invoke, address, LIST, request, key)


def _ids(reply) -> list[int]:
    return [e.id for e in reply.events]


async def test_filters_select_by_action_family_outcome_customer_and_time(service):
    _, ctx, _, address = service
    trail = await _events(ctx)
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    by = {(e.action, e.customer_id, e.outcome): e for e in trail}

    async def listed(**fields) -> list[int]:
        reply = await _list(address, admin, page_size=1000, **fields)
        return [e.id for e in reply.events if e.actor == "trail"]

    family = await listed(action="enroll")
    assert family == [e.id for e in trail if e.action == "enroll" or e.action.startswith("enroll.")]
    assert by[("enrollment", "c1", "added")].id not in family, "enroll matches at a dot, not any prefix"
    assert len(family) == 4
    assert await listed(action="enroll.voice") == [e.id for e in trail if e.action == "enroll.voice"]
    assert await listed(outcome="wrong_code") == [by[("step_up", "c1", "wrong_code")].id]
    assert await listed(action="enroll", customer_id="c2", outcome="added") == [
        by[("enroll.keystrokes", "c2", "added")].id
    ]
    oldest_first = trail[::-1]
    since, until = oldest_first[2].time_ms, oldest_first[5].time_ms
    window = await listed(since_unix_ms=since, until_unix_ms=until)
    assert window == [e.id for e in trail if since <= e.time_ms < until]
    assert window and oldest_first[5].id not in window, "until is exclusive"
    assert oldest_first[2].id in window, "since is inclusive"
    assert await listed(action="nothing.like.this") == []


async def test_paging_through_a_filtered_trail_returns_each_match_once_in_order(service):
    _, ctx, _, address = service
    for i in range(9):
        await ctx.auditor.record(
            "acme", "enroll.voice" if i % 3 else "erase", f"p{i}", "added", actor="pager"
        )
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    expected = [
        e.id
        for e in await ctx.auditor.list("acme", 1000)
        if e.actor == "pager" and e.action == "enroll.voice"
    ]
    assert len(expected) == 6
    seen, token, pages = [], "", 0
    while True:
        reply = await _list(address, admin, action="enroll", outcome="added", page_size=2, page_token=token)
        seen += [e.id for e in reply.events if e.actor == "pager"]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == expected, "every match once, newest first, across pages"
    assert pages >= 3


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"action": "x' OR '1'='1"}, "action"),
        ({"action": "enroll%"}, "action"),
        ({"action": "enroll."}, "action"),
        ({"outcome": "added; DROP TABLE audit"}, "outcome"),
        ({"outcome": "a" * 65}, "outcome"),
        ({"customer_id": "c1' OR 1=1 --"}, "customer_id"),
        ({"since_unix_ms": -1}, "since_unix_ms"),
        ({"until_unix_ms": -5}, "until_unix_ms"),
        ({"since_unix_ms": 2_000, "until_unix_ms": 1_000}, "until_unix_ms"),
        ({"since_unix_ms": 1_000, "until_unix_ms": 1_000}, "until_unix_ms"),
    ],
)
async def test_filter_values_that_could_widen_the_query_are_invalid_argument(service, fields, field):
    _, ctx, _, address = service
    await ctx.auditor.record("acme", "enroll.voice", "c1", "added", actor="trail")
    admin = await key_for(ctx, "acme", roles.TENANT_ADMIN)
    err = await asyncio.to_thread(
        call, address, LIST, assurance_pb2.ListAuditEventsRequest(tenant="acme", **fields), admin
    )
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
    assert field in err.details()


async def _refusals(ctx, tenant: str, reason: str) -> list:
    await ctx.refusals.flush_due(everything=True)
    return [
        e
        for e in await ctx.auditor.list(tenant, 1000, action="request.refused", outcome=reason)
        if e.details.get("method") == LIST
    ]


async def test_filtered_listing_without_a_credential_is_unauthenticated_and_audited(service):
    _, ctx, _, address = service
    await _events(ctx)
    request = assurance_pb2.ListAuditEventsRequest(tenant="acme", action="enroll", since_unix_ms=1)
    err = await asyncio.to_thread(call, address, LIST, request, None)
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(err) == "CREDENTIAL_MISSING"
    rows = await _refusals(ctx, "", "CREDENTIAL_MISSING")
    assert rows and rows[0].actor == "anonymous" and rows[0].details.get("claimed_tenant") == "acme"


@pytest.mark.parametrize("role", [roles.TELEPHONY, roles.ENROLLMENT, roles.AGENT, roles.EVIDENCE])
async def test_filtered_listing_with_a_role_other_than_tenant_admin_is_denied_and_audited(service, role):
    _, ctx, _, address = service
    await _events(ctx)
    key = await key_for(ctx, "acme", role)
    request = assurance_pb2.ListAuditEventsRequest(tenant="acme", customer_id="c1", outcome="wrong_code")
    err = await asyncio.to_thread(call, address, LIST, request, key)
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(err) == "ROLE_NOT_GRANTED"
    rows = await _refusals(ctx, "acme", "ROLE_NOT_GRANTED")
    assert rows and rows[0].actor.startswith("key_"), "the principal is the actor"


async def test_another_tenants_admin_gets_nothing_of_this_trail_and_is_audited_here(service):
    _, ctx, _, address = service
    await _events(ctx)
    intruder = await key_for(ctx, "globex", roles.TENANT_ADMIN)
    for fields in ({}, {"action": "enroll"}, {"customer_id": "c1", "since_unix_ms": 1}):
        request = assurance_pb2.ListAuditEventsRequest(tenant="acme", **fields)
        err = await asyncio.to_thread(call, address, LIST, request, intruder)
        assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, fields
        assert reason_of(err) == "TENANT_NOT_GRANTED"
    rows = await _refusals(ctx, "acme", "TENANT_NOT_GRANTED")
    assert rows, "the refusal is on the record of the tenant it knocked on"
    # Its own tenant's trail, filtered on the other tenant's customer, holds none of acme's rows.
    own = await _list(address, intruder, tenant="globex", customer_id="c1", page_size=1000)
    assert all(e.tenant == "globex" for e in own.events)
    assert not [e for e in own.events if e.actor == "trail"]
