"""Watchlists of known fraudsters (issue 11): 1:N screening of calls and enrollments.

Attacks: a fraudster who took over an account by enrolling their own voice in it is
rejected once listed, although their voice matches the account; a listed fraudster cannot
enroll under a new customer's name; one node's change is seen by another's index.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import common_pb2, fraud_pb2_grpc
from authsvc.api.v1 import fraud_pb2 as F  # noqa: N812
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.audio.codecs import Encoding, encode
from authsvc.fraud.watchlist import Watchlists
from authsvc.policy.risk import HIGH, LOW
from tests.test_service_assurance import FINANCE, _enroll_voice, _speakers, _write_policy
from tests.wire import call_requests, enroll_request, stream


def _add(tenant: str, watchlist: str, fraudster: str, utterances) -> F.AddFraudsterRequest:
    return F.AddFraudsterRequest(
        tenant=tenant,
        watchlist=watchlist,
        fraudster_id=fraudster,
        format=common_pb2.AudioFormat(encoding=common_pb2.AUDIO_ENCODING_PCM16_LE, sample_rate_hz=16000),
        audio=[encode(u, Encoding.PCM16_LE) for u in utterances],
    )


async def test_a_listed_fraudster_in_a_taken_over_account_is_rejected_under_finance(svc, speech):
    channel, ctx, data_dir, address, _ = svc
    _write_policy(data_dir, "bank", FINANCE)
    _, fraudster = _speakers(speech)
    # The takeover: the fraudster's own voice enrolled in the account, before anyone knew.
    await _enroll_voice(channel, "bank", "acct-9", fraudster[:4])
    lists = fraud_pb2_grpc.WatchlistServiceStub(channel)
    await lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="bank", name="known", description="case 17"))
    added = await lists.AddFraudster(_add("bank", "known", "case-17", fraudster[:2]), timeout=60)
    assert added.added and added.samples == 2 and added.net_speech_seconds > 3
    shown = await lists.ListWatchlists(F.ListWatchlistsRequest(tenant="bank"))
    assert [(w.name, w.fraudsters) for w in shown.watchlists] == [("known", 1)] and shown.listed_voices == 1

    decisions = await asyncio.to_thread(stream, address, call_requests("bank", "acct-9", fraudster[4]))
    hits = [r for d in decisions for r in d.fraud.risks if r.detector == "fraudster"]
    assert hits and all(r.level == V.RISK_LEVEL_HIGH for r in hits), [r.reason for r in hits]
    assert "case-17" in hits[0].reason, "an evidence principal is told which entry matched"
    assert all(
        d.outcome != V.OUTCOME_AUTHENTICATED and d.outcome != V.OUTCOME_STEP_UP_REQUIRED for d in decisions
    )
    assert decisions[-1].outcome == V.OUTCOME_REJECTED and "fraudster risk high" in decisions[-1].reason

    # Removed from the list, the same voice is a customer again (the index follows the store).
    await lists.RemoveFraudster(
        F.RemoveFraudsterRequest(tenant="bank", watchlist="known", fraudster_id="case-17")
    )
    after = await asyncio.to_thread(stream, address, call_requests("bank", "acct-9", fraudster[4]))
    assert all(r.level == V.RISK_LEVEL_LOW for d in after for r in d.fraud.risks if r.detector == "fraudster")
    events = [e.action for e in await ctx.auditor.list("bank", 200)]
    assert {"watchlist.create", "watchlist.add", "watchlist.remove"} <= set(events)


async def test_a_listed_fraudster_cannot_enroll_under_a_customers_name_unless_policy_only_flags_it(
    svc, speech
):
    channel, ctx, data_dir, _, _ = svc
    _, fraudster = _speakers(speech)
    lists = fraud_pb2_grpc.WatchlistServiceStub(channel)
    await lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="shop", name="known"))
    await lists.AddFraudster(_add("shop", "known", "f-1", fraudster[:2]), timeout=60)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _enroll_voice(channel, "shop", "new-customer", [fraudster[3]])
    assert (
        err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "known fraudster" in err.value.details()
    )
    async with ctx.store.transaction() as tx:
        assert not await tx.templates("shop", "new-customer"), "nothing of the refused sample is stored"
    refused = [e for e in await ctx.auditor.list("shop", 200) if e.outcome == "refused_watchlist"]
    assert refused and refused[0].customer_id == "new-customer"

    _write_policy(data_dir, "shop", '[fraud]\nenrollment_on_watchlist = "flag"\n')
    await _enroll_voice(channel, "shop", "new-customer", [fraudster[3]])
    flagged = [e for e in await ctx.auditor.list("shop", 200) if e.details.get("watchlist") == "match"]
    assert flagged, "a flagged enrollment is audited as a watchlist match"


async def test_bad_watchlist_requests_get_clear_errors(svc, speech):
    channel, _, _, _, _ = svc
    lists = fraud_pb2_grpc.WatchlistServiceStub(channel)
    silent = np.zeros(16000 * 3, np.float32)
    cases = [
        (lists.AddFraudster(_add("shop", "missing", "f", [speech[sorted(speech)[0]][0]])), "NOT_FOUND"),
        (
            lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="shop", name="bad name!")),
            "INVALID_ARGUMENT",
        ),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code().name == code, err.value.details()
    await lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="shop", name="known"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="shop", name="known"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lists.AddFraudster(_add("shop", "known", "f", [silent]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "audio[0]" in err.value.details()
    assert "no speech" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lists.AddFraudster(_add("shop", "known", "f", []))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    gone = await lists.DeleteWatchlist(F.DeleteWatchlistRequest(tenant="shop", name="known"))
    assert gone.fraudsters_removed == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lists.ListFraudsters(F.ListFraudstersRequest(tenant="shop", watchlist="known"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_nodes_index_follows_the_store(svc, speech, ge2e):
    _, ctx, _, _, _ = svc
    _, fraudster = _speakers(speech)
    policy = await ctx.policy_for("shop")
    other_node = Watchlists(ctx.store, ctx.vault, ctx.auditor, ge2e.encoder_id, ge2e.version, ctx.calibration)
    probe = ge2e.embed_batch([fraudster[4]])[0]
    assert other_node.screen(policy, await other_node.index("shop"), probe).level == LOW  # cached, empty
    await ctx.watchlists.create("shop", "known", "", "test")
    await ctx.watchlists.add("shop", "known", "f-1", ge2e.embed_batch([fraudster[0]])[0], 1, "test")
    assert other_node.screen(policy, await other_node.index("shop"), probe).level == HIGH
    await ctx.watchlists.delete("shop", "known", "test")
    assert other_node.screen(policy, await other_node.index("shop"), probe).level == LOW


async def test_one_voice_enrolled_in_two_accounts_is_reported_and_the_admin_sees_which(svc, speech):
    channel, ctx, _, _, _ = svc
    target, fraudster = _speakers(speech)
    from authsvc.api.v1 import enrollment_pb2_grpc
    from tests.principals import ensure_registered

    stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
    for customer in ("acct-a", "acct-b", "honest"):
        await ensure_registered(channel, "shop", customer)
    first = await stub.EnrollVoice(enroll_request("shop", "acct-a", fraudster[0]), timeout=60)
    assert first.same_voice_customers == 0
    honest = await stub.EnrollVoice(enroll_request("shop", "honest", target[0]), timeout=60)
    assert honest.same_voice_customers == 0, "another speaker is not reported"
    second = await stub.EnrollVoice(enroll_request("shop", "acct-b", fraudster[1]), timeout=60)
    assert second.added and second.same_voice_customers == 1
    rows = [
        e for e in await ctx.auditor.list("shop", 200, customer_id="acct-b") if e.action == "enroll.voice"
    ]
    assert rows and rows[0].details.get("same_voice_as") == ["acct-a"]


async def test_a_fraudster_is_listed_from_the_call_they_made_and_caught_on_the_next(svc, speech):
    channel, _, _, address, _ = svc
    victim, fraudster = _speakers(speech)
    await _enroll_voice(channel, "shop", "victim", victim[:4])
    await _enroll_voice(channel, "shop", "mule", fraudster[:4])  # an account the fraudster controls
    # The fraudster calls claiming to be the victim: rejected (another voice).
    start = call_requests("shop", "victim", fraudster[4])
    start[0].start.session_id = "call-fraud-1"
    decisions = await asyncio.to_thread(stream, address, start)
    assert decisions[-1].outcome == V.OUTCOME_REJECTED
    lists = fraud_pb2_grpc.WatchlistServiceStub(channel)
    await lists.CreateWatchlist(F.CreateWatchlistRequest(tenant="shop", name="known"))
    request = F.AddFraudsterRequest(
        tenant="shop",
        watchlist="known",
        fraudster_id="case-9",
        from_session_id="call-fraud-1",
        session_customer_id="victim",
    )
    assert (await lists.AddFraudster(request)).added
    # Their next call, on the account they control, is screened against that voice.
    later = await asyncio.to_thread(stream, address, call_requests("shop", "mule", fraudster[6]))
    hits = [r for d in later for r in d.fraud.risks if r.detector == "fraudster"]
    assert hits and hits[-1].level == V.RISK_LEVEL_HIGH, [r.reason for r in hits]
    assert all(d.outcome != V.OUTCOME_AUTHENTICATED for d in later), "general: a match steps up"
    # Unknown sessions, and another customer's, are not found; audio and a session together are refused.
    for session, customer in (("no-such-call", "victim"), ("call-fraud-1", "mule")):
        bad = F.AddFraudsterRequest(
            tenant="shop",
            watchlist="known",
            fraudster_id="x",
            from_session_id=session,
            session_customer_id=customer,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await lists.AddFraudster(bad)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    both = _add("shop", "known", "y", [fraudster[0]])
    both.from_session_id, both.session_customer_id = "call-fraud-1", "victim"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await lists.AddFraudster(both)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_opting_out_erases_the_voices_of_recent_callers_too(svc, speech):
    channel, ctx, _, address, _ = svc
    victim, fraudster = _speakers(speech)
    await _enroll_voice(channel, "shop", "olga", victim[:4])
    await asyncio.to_thread(stream, address, call_requests("shop", "olga", fraudster[4]))
    async with ctx.store.transaction() as tx:
        assert any(n.startswith("caller.") for n in await tx.state_names("shop", "olga"))
    from authsvc.api.v1 import enrollment_pb2, enrollment_pb2_grpc

    await enrollment_pb2_grpc.EnrollmentServiceStub(channel).RegisterCustomer(
        enrollment_pb2.RegisterCustomerRequest(
            tenant="shop",
            customer_id="olga",
            opt_out_biometrics=True,
            consent_text_version="c-2",
            confirm_template_removal=True,
        )
    )
    async with ctx.store.transaction() as tx:
        assert not any(n.startswith("caller.") for n in await tx.state_names("shop", "olga"))
