"""Read-only units of work (`store.transaction(read_only=True)`, a call loading its customer): they
must not wait for a unit that writes, must see what was committed and nothing uncommitted, must
refuse a write, and must leave the store usable after an error or a cancellation; on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest

TENANT = "acme"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _read(store, cid: str):
    async with store.transaction(read_only=True) as tx:
        return await tx.get_customer(TENANT, cid)


async def test_a_read_only_unit_does_not_wait_for_a_writing_one_nor_see_its_writes(store):
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "committed", 1000)
    holding, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with store.transaction() as tx:
            await tx.touch_customer(TENANT, "committed", 9000)
            await tx.ensure_customer(TENANT, "uncommitted", _now_ms())
            await tx.get_customer(TENANT, "uncommitted")  # its writes have run
            holding.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await asyncio.wait_for(holding.wait(), 10)
    try:
        # The writer holds its unit open: a read-only unit answers anyway, from what was committed.
        seen = await asyncio.wait_for(_read(store, "committed"), 10)
        assert seen is not None and seen.last_active_ms == 1000
        assert await asyncio.wait_for(_read(store, "uncommitted"), 10) is None
    finally:
        release.set()
        await task
    # Once the writer commits, the next read-only unit sees it.
    assert (await _read(store, "committed")).last_active_ms == 9000
    assert await _read(store, "uncommitted") is not None


async def test_a_write_in_a_read_only_unit_is_refused_and_nothing_is_kept(store):
    with pytest.raises(Exception, match=r"(?i)read.?only"):
        async with store.transaction(read_only=True) as tx:
            await tx.ensure_customer(TENANT, "sneaked", _now_ms())
            await tx.get_customer(TENANT, "sneaked")
    assert await _read(store, "sneaked") is None
    async with store.transaction() as tx:  # the store goes on, for readers and writers
        assert await tx.get_customer(TENANT, "sneaked") is None


async def test_a_cancelled_read_only_unit_leaves_the_reader_usable(store):
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "before", 1000)
    entered = asyncio.Event()

    async def unit() -> None:
        async with store.transaction(read_only=True) as tx:
            await tx.get_customer(TENANT, "before")
            entered.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(unit())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its snapshot ended with it: a later read-only unit sees a write committed after the cancel.
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "after", 2000)
    assert await asyncio.wait_for(_read(store, "after"), 10) is not None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_nested_read_only_unit_in_one_task_is_refused_not_deadlocked(store):
    async with store.transaction(read_only=True) as tx:
        await tx.get_customer(TENANT, "x")
        with pytest.raises(RuntimeError, match="already open"):
            await _read(store, "x")  # in this task: it would wait for itself


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_erasure_is_scrubbed_from_the_wal_while_read_only_units_run_back_to_back(store):
    """Read-only units hold WAL snapshots, which block the post-erasure truncating checkpoint;
    under load they run back to back, so the erasure's commit must scrub with none of them open,
    at once (no later commit, no retry interval)."""
    secret = b"ERASE-ME-" + bytes(range(48))
    async with store.transaction() as tx:
        await tx.put_state(TENANT, "gone", "marker", secret, _now_ms())
    stop, reads = asyncio.Event(), [0]

    async def reader() -> None:
        while not stop.is_set():
            async with store.transaction(read_only=True) as tx:
                await tx.get_customer(TENANT, "gone")
                reads[0] += 1
                await asyncio.sleep(0.05)  # a busy event loop between its statements

    async def erase() -> None:
        async with store.transaction() as tx:
            await tx.delete_customer(TENANT, "gone")

    readers = [asyncio.create_task(reader()) for _ in range(3)]
    try:
        while reads[0] < 3:
            await asyncio.sleep(0.01)
        await asyncio.wait_for(erase(), 10)
        for suffix in ("", "-wal"):
            path = store.path.with_name(store.path.name + suffix)
            if path.exists():
                assert secret not in path.read_bytes(), f"the erased value is still in {path.name}"
    finally:
        stop.set()
        await asyncio.gather(*readers)
    assert not store._scrub_pending


async def test_a_read_only_unit_reads_one_snapshot_throughout(store):
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "snap", 1000)
    async with store.transaction(read_only=True) as ro:
        assert (await ro.get_customer(TENANT, "snap")).last_active_ms == 1000

        async def touch() -> None:  # another call's unit, committing while this one is open
            async with store.transaction() as tx:
                await tx.touch_customer(TENANT, "snap", 5000)

        await asyncio.wait_for(asyncio.create_task(touch()), 10)
        # The same unit still reads its snapshot: a load is one consistent view of the customer.
        assert (await ro.get_customer(TENANT, "snap")).last_active_ms == 1000
    assert (await _read(store, "snap")).last_active_ms == 5000


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_units_that_cross_nest_in_one_task_are_refused(store):
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "w", 1000)
        with pytest.raises(RuntimeError, match="inside a unit that writes"):
            await _read(store, "w")
    async with store.transaction(read_only=True) as ro:
        await ro.get_customer(TENANT, "w")
        with pytest.raises(RuntimeError, match="inside a read-only one"):
            async with store.transaction() as tx:
                await tx.ensure_customer(TENANT, "never", 1000)
    assert await _read(store, "never") is None


@pytest.mark.parametrize("service_backend", ["sqlite"])
async def test_a_calls_load_of_its_customer_is_a_read_only_unit(service, monkeypatch):
    """The reason for read-only units: a call's begin reads its customer's record, templates,
    factors, lockout and watchlist in one unit that must not queue behind the units that write
    (the store tests above show a read-only one does not); its final decision is written after."""
    from authsvc.audio.codecs import Encoding
    from authsvc.policy.engine import Outcome
    from authsvc.session import SessionStart, VerificationSession

    _, ctx, _, _ = service
    policy = await ctx.policy_for("acme")
    session = VerificationSession(
        ctx, SessionStart("acme", "nobody-yet", "voice", Encoding.MULAW, 8000), policy
    )
    opened, transaction = [], ctx.store.transaction

    def spy(**kw):
        opened.append(kw.get("read_only", False))
        return transaction(**kw)

    monkeypatch.setattr(ctx.store, "transaction", spy)
    decisions = await asyncio.wait_for(session.begin(), 10)
    assert [d.outcome for d in decisions] == [Outcome.NOT_ENROLLED]
    assert opened[0] is True, "the customer's load was not a read-only unit"
    assert opened[1:] == [False], "only the audited final decision writes"
