"""Several nodes, one truth: two `authsvc serve` processes on one PostgreSQL database.

What a caller does through node A is what node B knows: a TOTP code used on
A is refused on B, lockout counts failures made through both, an assertion
with max_uses = 1 is accepted once across both, one-time code attempts are
shared, and a key-ring rotation by one node never makes the other node's
assertions unverifiable.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from authsvc.api.v1 import assurance_pb2, assurance_pb2_grpc, common_pb2, enrollment_pb2, enrollment_pb2_grpc
from authsvc.api.v1 import verification_pb2 as V  # noqa: N812
from authsvc.stepup import totp
from tests.conftest import pg_schema
from tests.nodes import Node, new_master_key, start_nodes
from tests.principals import KEYS, keyed_channel, provision_remote
from tests.wire import call_requests, enroll_request, stream

# "bank": TOTP, lockout after 3; "bank2": one-time codes with a lockout limit above their 3 tries;
# "shop": voice alone authenticates; node A rotates its signing key every 5 s.
POLICIES = {
    "bank": 'sector = "finance"\n[lockout]\nmax_failures = 3\nlockout_s = 600\n',
    "bank2": 'sector = "finance"\n[step_up]\nfactors = ["one_time_code"]\n[lockout]\nmax_failures = 10\n',
}
ROTATE_S = 5.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_dsn) -> Iterator[tuple[Node, Node, Path]]:
    root = tmp_path_factory.mktemp("nodes")
    policies = root / "policies"
    policies.mkdir()
    for tenant, text in POLICIES.items():
        (policies / f"{tenant}.toml").write_text(text)
    outbox = root / "codes.jsonl"
    sender = ["--code-sender", f"file:{outbox}"]
    with pg_schema(postgres_dsn) as store:
        key = new_master_key()
        a = Node(root, "a", store, key, policies, [*sender, "--key-rotation-s", str(ROTATE_S)])
        b = Node(root, "b", store, key, policies, sender)
        try:
            start_nodes(a, b)
            # Either node may have written the first start's platform-admin key (both raced).
            admin = next(n for n in (a, b) if (n.data_dir / "admin.credential").exists()).admin_key()
            KEYS[b.address] = provision_remote(a.address, admin)
            yield a, b, outbox
        finally:
            for n in (a, b):
                assert n.stop() == 0, n.log_text()


def _stubs(node: Node):
    ch = keyed_channel(node.address, KEYS[node.address])
    return (
        ch,
        enrollment_pb2_grpc.EnrollmentServiceStub(ch),
        assurance_pb2_grpc.StepUpServiceStub(ch),
        assurance_pb2_grpc.AssertionServiceStub(ch),
    )


def _customer(node: Node, tenant: str, customer: str, utterances, methods) -> None:
    ch, enroll, _, _ = _stubs(node)
    with ch:
        enroll.RegisterCustomer(
            enrollment_pb2.RegisterCustomerRequest(
                tenant=tenant, customer_id=customer, methods=methods, consent_text_version="c-1"
            ),
            timeout=30,
        )
        for u in utterances:
            enroll.EnrollVoice(enroll_request(tenant, customer, u), timeout=60)


def _answer(code: str, factor=common_pb2.SECOND_FACTOR_TOTP):
    return V.VerifyRequest(step_up=V.StepUpAnswer(factor=factor, code=code))


def _speaker(speech):
    return speech[sorted(speech)[0]]


def test_a_totp_code_used_on_one_node_is_refused_on_the_other_and_lockout_counts_both(cluster, speech):
    a, b, _ = cluster
    voice = _speaker(speech)
    _customer(a, "bank", "alice", voice[:4], [common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_TOTP])
    ch, _, factors, _ = _stubs(b)
    with ch:
        uri = factors.EnrollTotp(
            assurance_pb2.EnrollTotpRequest(tenant="bank", customer_id="alice")
        ).provisioning_uri
        b32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
        secret = base64.b32decode(b32 + "=" * (-len(b32) % 8))
        confirm = assurance_pb2.ConfirmTotpRequest(
            tenant="bank", customer_id="alice", code=totp.generate(secret, time.time())
        )
        assert factors.ConfirmTotp(confirm).confirmed
    # The next step's code (within the drift window): accepted once, on whichever node is first.
    code = totp.generate(secret, time.time() + 30)
    # Another recording for each call: the same one streamed twice is a replay.
    fresh = [voice[4], np.concatenate([voice[5], voice[8]]), voice[6], voice[7]]
    calls = [call_requests("bank", "alice", u) for u in fresh]
    call = calls[0]
    on_a = stream(a.address, [*call, _answer(code)])
    assert on_a[-1].outcome == V.OUTCOME_AUTHENTICATED, on_a[-1].reason
    on_b = stream(b.address, [*calls[1], _answer(code)])
    assert on_b[-1].outcome != V.OUTCOME_AUTHENTICATED
    assert "wrong or reused" in on_b[-2].reason and on_b[-2].attempts_remaining == 2

    # The assertion node A issued: node B verifies A's key and accepts it once; A then refuses it.
    token = on_a[-1].assertion.token
    with keyed_channel(b.address, KEYS[b.address]) as ch:
        got = assurance_pb2_grpc.AssertionServiceStub(ch).ValidateAssertion(
            assurance_pb2.ValidateAssertionRequest(tenant="bank", token=token)
        )
        assert got.assertion.id == on_a[-1].assertion.id
    with keyed_channel(a.address, KEYS[a.address]) as ch, pytest.raises(grpc.RpcError) as err:
        assurance_pb2_grpc.AssertionServiceStub(ch).ValidateAssertion(
            assurance_pb2.ValidateAssertionRequest(tenant="bank", token=token)
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in err.value.details()

    # Lockout after 3 failures, made through both: one on B above, one on A, one on B.
    assert stream(a.address, [*calls[2], _answer("000000")])[-2].attempts_remaining == 1
    locked = stream(b.address, [*calls[3], _answer("111111")])[-2]
    assert locked.retry_after_seconds > 500, locked.reason
    for node in (a, b):
        first = stream(node.address, call[:2])[0]
        assert first.outcome == V.OUTCOME_REJECTED and "locked out" in first.reason


def test_one_time_code_attempts_are_shared_between_nodes(cluster, speech):
    a, b, outbox = cluster
    voice = _speaker(speech)
    _customer(
        b, "bank2", "carol", voice[:4], [common_pb2.AUTH_METHOD_VOICE, common_pb2.AUTH_METHOD_ONE_TIME_CODE]
    )
    ch, _, factors, _ = _stubs(a)
    with ch:
        factors.SetCodeDestination(
            assurance_pb2.SetCodeDestinationRequest(
                tenant="bank2", customer_id="carol", destination="+447700900321"
            )
        )
    call = call_requests("bank2", "carol", voice[4])
    sent = stream(a.address, [*call, V.VerifyRequest(send_code=V.OneTimeCodeRequest())])
    assert "code was sent" in sent[-2].reason
    code = json.loads(outbox.read_text().splitlines()[-1])["code"]
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    otc = common_pb2.SECOND_FACTOR_ONE_TIME_CODE
    # Three wrong tries, through A, B and A: the code is dead on every node, even for the right answer.
    for node in (a, b, a):
        stream(node.address, [*call, _answer(wrong, otc)])
    late = stream(b.address, [*call, _answer(code, otc)])
    assert late[-1].outcome != V.OUTCOME_AUTHENTICATED
    assert "attempts exhausted" in late[-2].reason, late[-2].reason


def test_a_rotation_by_one_node_leaves_every_assertion_verifiable_on_the_other(cluster, speech):
    a, b, _ = cluster
    voice = _speaker(speech)
    _customer(a, "shop", "dave", voice[:4], [common_pb2.AUTH_METHOD_VOICE])
    # Another recording for each call: the same one streamed twice is a replay.
    fresh = [voice[4], np.concatenate([voice[5], voice[8]]), voice[6], voice[7]]
    calls = [call_requests("shop", "dave", u) for u in fresh]
    before_b = stream(b.address, calls[0])[-1].assertion
    before_a = stream(a.address, calls[1])[-1].assertion
    time.sleep(ROTATE_S + 0.5)
    after_a = stream(a.address, calls[2])[-1].assertion  # A finds its key too old and rotates the ring
    assert after_a.key_id not in (before_a.key_id, before_b.key_id)
    ch_a, ch_b = keyed_channel(a.address, KEYS[a.address]), keyed_channel(b.address, KEYS[b.address])
    with ch_a, ch_b:
        on = {n: assurance_pb2_grpc.AssertionServiceStub(c) for n, c in (("a", ch_a), ("b", ch_b))}
        for node, token in (("b", after_a.token), ("a", before_b.token), ("b", before_a.token)):
            got = on[node].ValidateAssertion(
                assurance_pb2.ValidateAssertionRequest(tenant="shop", token=token)
            )
            assert got.assertion.customer_id == "dave"
    # B, having seen a key it did not know, re-read the ring: it signs with the new key too.
    assert stream(b.address, calls[3])[-1].assertion.key_id != before_b.key_id
