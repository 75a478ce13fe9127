"""Writes whose result nobody reads (SqlTransaction._do) may be queued without a round trip
(SQLite queues them, and BEGIN, on its store thread): a failed one must still fail its whole unit
of work, stop the statements after it, and leave the store usable; on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest

TENANT = "acme"
BAD_WRITE = "INSERT INTO customers (tenant, customer_id, created_ms) VALUES (NULL, 'x', 0)"


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _customer(store, cid: str):
    async with store.transaction() as tx:
        return await tx.get_customer(TENANT, cid)


async def test_a_failed_queued_write_undoes_the_unit_of_work_at_commit(store):
    with pytest.raises(Exception) as raised:
        async with store.transaction() as tx:
            await tx.ensure_customer(TENANT, "before", _now_ms())
            await tx._do(BAD_WRITE)  # NOT NULL: fails, with nobody awaiting its result
            await tx.touch_customer(TENANT, "before", _now_ms() + 1)
    assert "null" in str(raised.value).lower()
    assert await _customer(store, "before") is None, "the write before the failed one was kept"
    # The store goes on: the next unit of work commits.
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "after", _now_ms())
    assert (await _customer(store, "after")) is not None


async def test_the_statement_after_a_failed_queued_write_raises_and_does_not_run(store):
    with pytest.raises(Exception) as raised:
        async with store.transaction() as tx:
            await tx._do(BAD_WRITE)
            await tx.touch_customer(TENANT, "later", _now_ms())  # queued behind it: skipped
            await tx.get_customer(TENANT, "later")  # a read: raises the queued write's error
            pytest.fail("a read after a failed write returned")  # BaseException: not caught above
    assert "null" in str(raised.value).lower()


async def test_queued_writes_are_read_back_in_order_within_the_unit(store):
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "c1", 1000)
        await tx.touch_customer(TENANT, "c1", 5000)  # queued on SQLite
        record = await tx.get_customer(TENANT, "c1")
        assert record is not None and record.last_active_ms == 5000
    assert (await _customer(store, "c1")).last_active_ms == 5000


async def test_a_unit_cancelled_after_queued_writes_keeps_none_of_them(store):
    entered = asyncio.Event()

    async def unit() -> None:
        async with store.transaction() as tx:
            await tx.ensure_customer(TENANT, "cancelled", _now_ms())
            await tx.touch_customer(TENANT, "cancelled", _now_ms() + 1)
            entered.set()
            await asyncio.sleep(30)  # cancelled here, its writes queued or done

    task = asyncio.create_task(unit())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _customer(store, "cancelled") is None
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "next", _now_ms())
    assert (await _customer(store, "next")) is not None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_unit_of_work_kept_past_its_end_is_refused_not_run_in_the_next(store):
    async with store.transaction() as stale:
        await stale.ensure_customer(TENANT, "first", _now_ms())
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "second", _now_ms())
        # A statement on the ended unit would land in this one, its error stored where nobody reads it.
        with pytest.raises(RuntimeError, match="after it ended"):
            await stale._do(BAD_WRITE)
        with pytest.raises(RuntimeError, match="after it ended"):
            await stale.get_customer(TENANT, "first")
    assert (await _customer(store, "second")) is not None, "the live unit was disturbed"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_begin_that_cannot_take_the_file_fails_the_unit_and_keeps_nothing(store):
    """Another process (node) holds the file's write lock: the queued BEGIN fails after the busy
    timeout; the unit's queued writes must not then run on their own, outside a transaction."""
    import sqlite3

    from authsvc.store import StoreUnavailable

    await store._run(lambda: store._conn.execute("PRAGMA busy_timeout=100"))
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            async with store.transaction() as tx:
                await tx.ensure_customer(TENANT, "locked-out", _now_ms())  # all queued
                await tx.touch_customer(TENANT, "locked-out", _now_ms() + 1)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await _customer(store, "locked-out") is None, "a write ran without its unit's BEGIN"
    async with store.transaction() as tx:
        await tx.ensure_customer(TENANT, "unlocked", _now_ms())
    assert (await _customer(store, "unlocked")) is not None
