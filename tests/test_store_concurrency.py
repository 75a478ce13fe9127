"""Read-check-write under concurrency, on both backends, as an attacker would try it.

Each race is widened by an injected delay between a use case's read and its
write (where an unlocked implementation loses: 40 concurrent TOTP guesses got
6 evaluations against a limit of 5, and one code was accepted twice). The
two-node tests (tests/test_two_nodes.py) run the same races across processes.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse

import pytest

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.factors import Factors
from authsvc.policy.schema import build_policy
from authsvc.stepup import assertions as a
from authsvc.stepup import totp
from authsvc.stepup.senders import CodeSender
from authsvc.templates import TemplateVault
from authsvc.trust import AssertionAuthority
from tests.principals import register_direct

N = 40
LIMIT = 5
POLICY = build_policy(
    "bank",
    {"sector": "finance", "lockout": {"max_failures": LIMIT, "lockout_s": 600}},
    "test",
    "bank@test",
)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Outbox(CodeSender):
    def __init__(self) -> None:
        self.codes: list[str] = []

    def send(self, destination: str, code: str, purpose: str, tenant: str) -> None:
        self.codes.append(code)


@pytest.fixture
def node(store):
    """One node's facades over the store under test, with a clock the test moves."""
    master = crypto.MasterKey(os.urandom(32))
    clock = Clock()
    vault = TemplateVault(store, master)
    auditor = Auditor(store, vault)
    outbox = Outbox()
    factors = Factors(vault, outbox, auditor, clock)
    return store, master, factors, clock, outbox


def _slow(monkeypatch, cls, name: str, delay_s: float = 0.005) -> None:
    """Delays every call of the async method `cls.name`: the gap between a read and a write."""
    real = getattr(cls, name)

    async def slowed(*args, **kwargs):
        await asyncio.sleep(delay_s)
        return await real(*args, **kwargs)

    monkeypatch.setattr(cls, name, slowed)


async def _confirmed_totp(factors: Factors, clock: Clock, customer: str = "c-1") -> bytes:
    await register_direct(factors.store, "bank", customer)
    uri = await factors.enroll_totp("bank", customer, customer, "Bank")
    b32 = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    secret = __import__("base64").b32decode(b32 + "=" * (-len(b32) % 8))
    assert await factors.confirm_totp("bank", customer, totp.generate(secret, clock.now))
    clock.now += 30  # the next step: a fresh code
    return secret


async def test_concurrent_uses_of_one_totp_code_accept_exactly_one(node, monkeypatch):
    _, _, factors, clock, _ = node
    secret = await _confirmed_totp(factors, clock)
    _slow(monkeypatch, Factors, "_put_totp")
    code = totp.generate(secret, clock.now)
    results = await asyncio.gather(
        *(factors.check_code(POLICY, "bank", "c-1", "totp", code) for _ in range(N))
    )
    assert sum(r.ok for r in results) == 1


async def test_concurrent_wrong_guesses_are_evaluated_exactly_limit_times(node, monkeypatch):
    store, _, factors, clock, _ = node
    secret = await _confirmed_totp(factors, clock)
    evaluated = []
    real_verify = totp.TotpState.verify

    def counting(self, *args, **kwargs):
        evaluated.append(1)
        return real_verify(self, *args, **kwargs)

    monkeypatch.setattr(totp.TotpState, "verify", counting)
    _slow(monkeypatch, Factors, "_lock_state")
    right = totp.generate(secret, clock.now)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    results = await asyncio.gather(
        *(factors.check_code(POLICY, "bank", "c-1", "totp", wrong) for _ in range(N))
    )
    assert len(evaluated) == LIMIT
    assert not any(r.ok for r in results)
    assert sum(r.retry_after_s > 0 for r in results) == N - LIMIT + 1  # the LIMIT-th guess locks
    # Locked: even the right code is not evaluated now.
    assert not (await factors.check_code(POLICY, "bank", "c-1", "totp", right)).ok
    assert len(evaluated) == LIMIT
    async with store.transaction() as tx:
        outcomes = [e.outcome for e in await tx.list_audit("bank", 1000) if e.action == "step_up"]
    assert outcomes.count("failed") == LIMIT - 1 and outcomes.count("locked_out") == N - LIMIT + 2


async def test_concurrent_uses_of_one_time_code_accept_exactly_one(node, monkeypatch):
    _, _, factors, _, outbox = node
    await register_direct(factors.store, "bank", "c-2")
    await factors.set_destination("bank", "c-2", "+447700900000")
    await factors.send_code(POLICY, "bank", "c-2")
    (code,) = outbox.codes
    _slow(monkeypatch, Factors, "_codes")
    results = await asyncio.gather(
        *(factors.check_code(POLICY, "bank", "c-2", "one_time_code", code) for _ in range(N))
    )
    assert sum(r.ok for r in results) == 1


async def test_concurrent_code_requests_respect_the_rate_limit(node, monkeypatch):
    from authsvc.stepup.lockout import RateLimited

    _, _, factors, _, outbox = node
    await register_direct(factors.store, "bank", "c-3")
    await factors.set_destination("bank", "c-3", "+447700900001")
    _slow(monkeypatch, Factors, "_codes")
    results = await asyncio.gather(
        *(factors.send_code(POLICY, "bank", "c-3") for _ in range(10)), return_exceptions=True
    )
    # min_interval_s (30 s) between codes: one goes out, the rest are told to wait.
    assert len(outbox.codes) == 1
    assert sum(isinstance(r, RateLimited) for r in results) == 9


async def test_an_assertion_with_max_uses_1_is_accepted_once_under_concurrency(node, monkeypatch):
    store, master, _, clock, _ = node
    authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master), clock)
    issued = await authority.issue(POLICY, "c-1", ("voice", "totp"), "AAL2", "voice")
    results = await asyncio.gather(
        *(authority.validate(POLICY, issued.token, "chat") for _ in range(N)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, a.AssertionRejected)]
    assert len(accepted) == 1 and len(refused) == N - 1
    assert {r.reason for r in refused} == {a.ASSERTION_REPLAYED}


async def test_two_nodes_rotating_at_once_make_one_new_key_and_keep_verifying(node):
    store, master, _, clock, _ = node
    every = 120.0  # shorter than the assertions' 300 s lifetime: old tokens are still live
    first = await AssertionAuthority.open(
        store, master, Auditor.with_master(store, master), clock, rotate_after_s=every
    )
    second = await AssertionAuthority.open(
        store, master, Auditor.with_master(store, master), clock, rotate_after_s=every
    )
    assert (await first.ring_of("bank")).active_kid == (await second.ring_of("bank")).active_kid
    old = await first.issue(POLICY, "c-1", ("voice",), "AAL1", "voice")
    clock.now += every + 1  # both nodes find the active key too old at once
    issued = await asyncio.gather(
        first.issue(POLICY, "c-1", ("voice",), "AAL1", "voice"),
        second.issue(POLICY, "c-2", ("voice",), "AAL1", "voice"),
    )
    assert issued[0].key_id == issued[1].key_id != old.key_id, "one rotation, adopted by both"
    async with store.transaction() as tx:
        assert (await tx.get_secret("assertion-signing-keys/bank")).version == 2
        rotations = [e for e in await tx.list_audit("bank", 100) if e.action == "keys.rotate"]
    assert [(e.outcome, e.details["kid"]) for e in rotations] == [("rotated", issued[0].key_id)]
    # Each node accepts what the other signed, before and after the rotation.
    await second.validate(POLICY, old.token, "chat")
    await first.validate(POLICY, issued[1].token, "chat")
    await second.validate(POLICY, issued[0].token, "chat")


async def test_a_node_learns_another_nodes_rotation_from_an_unknown_key_id(node):
    store, master, _, clock, _ = node
    first = await AssertionAuthority.open(store, master, Auditor.with_master(store, master), clock)
    second = await AssertionAuthority.open(store, master, Auditor.with_master(store, master), clock)
    assert await second.ring_of("bank")
    await first.rotate("bank")
    token = (await first.issue(POLICY, "c-1", ("voice",), "AAL1", "voice")).token
    assert (await first.ring_of("bank")).active_kid not in (await second.ring_of("bank")).kids()
    claims = await second.validate(POLICY, token, "chat")
    assert claims.key_id == (await first.ring_of("bank")).active_kid


@pytest.fixture
def enroll_ctx(store):
    """What enrollment uses of a service context, over the store under test."""
    import types

    from authsvc.policy.schema import default_policy

    vault = TemplateVault(store, crypto.MasterKey(os.urandom(32)))
    auditor = Auditor(store, vault)

    async def policy_for(tenant: str):
        return default_policy(tenant)

    return types.SimpleNamespace(
        store=store,
        vault=vault,
        auditor=auditor,
        factors=Factors(vault, Outbox(), auditor),
        policy_for=policy_for,
    )


async def test_an_opt_out_racing_a_first_enrollment_never_keeps_a_template(enroll_ctx, monkeypatch):
    # Without the customer's lock both would proceed: the opt-out would commit and the template
    # after it (PostgreSQL, 95 of 100 trials before the lock covered first enrollments).
    import numpy as np

    from authsvc import enrollment
    from authsvc.errors import PreconditionFailed
    from tests.typists import Typist

    _slow(monkeypatch, Auditor, "record")
    samples = [("password", Typist(np.random.default_rng(1)).password()) for _ in range(3)]

    async def enroll(cid: str):
        try:
            return await enrollment.enroll_keystrokes(enroll_ctx, "bank", cid, samples)
        except PreconditionFailed as exc:
            return exc

    for i in range(10):
        cid = f"new-{i}"
        await register_direct(enroll_ctx.store, "bank", cid, ("typing",))
        opt_out = enrollment.register_customer(
            enroll_ctx, "bank", cid, [], True, "consent-1", confirm_removal=True, change="tenant-admin"
        )
        await asyncio.gather(opt_out, enroll(cid))
        async with enroll_ctx.store.transaction() as tx:
            record = await tx.get_customer("bank", cid)
            assert record.opted_out and await tx.templates("bank", cid) == [], cid


async def test_two_first_profile_enrollments_at_once_lose_no_sample(enroll_ctx):
    import numpy as np

    from authsvc import enrollment
    from tests.typists import Typist

    typist = Typist(np.random.default_rng(11))
    for i in range(5):
        first = [("password", typist.password()) for _ in range(3)]
        second = [("password", typist.password()) for _ in range(4)]
        await register_direct(enroll_ctx.store, "bank", f"n{i}", ("typing",))
        a_, b_ = await asyncio.gather(
            enrollment.enroll_keystrokes(enroll_ctx, "bank", f"n{i}", first),
            enrollment.enroll_keystrokes(enroll_ctx, "bank", f"n{i}", second),
        )
        (profile,) = await enroll_ctx.vault.load("bank", f"n{i}", "keystroke_fixed/password")
        assert enrollment.profile_samples(profile.payload) == a_.added + b_.added == 7


async def test_an_enrollment_request_is_bounded_so_it_cannot_hold_the_store(enroll_ctx):
    import numpy as np

    from authsvc import enrollment, keystroke
    from authsvc.errors import InvalidInput
    from tests.typists import Typist

    typist = Typist(np.random.default_rng(3))
    too_many = [("password", typist.password()) for _ in range(keystroke.MAX_ENROLL_SAMPLES + 1)]
    with pytest.raises(InvalidInput) as err:
        await enrollment.enroll_keystrokes(enroll_ctx, "bank", "big", too_many)
    assert err.value.field == "samples"
    async with enroll_ctx.store.transaction() as tx:
        assert await tx.get_customer("bank", "big") is None
