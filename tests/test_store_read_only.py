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
async def test_an_erasure_is_scrubbed_from_the_wal_while_read_only_units_run(store, tmp_path):
    """Read-only units hold WAL snapshots, which can block the post-erasure checkpoint; the scrub
    is retried after later commits, so the erased row leaves the -wal file once they are done."""
    secret = b"ERASE-ME-" + bytes(range(48))
    async with store.transaction() as tx:
        await tx.put_state(TENANT, "gone", "marker", secret, _now_ms())
    entered, release = asyncio.Event(), asyncio.Event()

    async def reader() -> None:
        async with store.transaction(read_only=True) as tx:
            await tx.get_customer(TENANT, "gone")  # holds a snapshot across the erasure
            entered.set()
            await release.wait()

    async def erase() -> None:
        async with store.transaction() as tx:
            await tx.delete_customer(TENANT, "gone")

    task = asyncio.create_task(reader())
    await asyncio.wait_for(entered.wait(), 10)
    try:
        await asyncio.wait_for(erase(), 10)  # the erasure does not wait for the reader either
    finally:
        release.set()
        await task
    await asyncio.sleep(1.1)  # past the scrub's retry interval
    async with store.transaction() as tx:  # a later commit retries the blocked checkpoint
        await tx.ensure_customer(TENANT, "later", _now_ms())
    for suffix in ("", "-wal"):
        path = store.path.with_name(store.path.name + suffix)
        if path.exists():
            assert secret not in path.read_bytes(), f"the erased value is still in {path.name}"
