"""SQLite store: one file, WAL journal, every unit of work one `BEGIN IMMEDIATE` transaction.

One connection, owned by one executor thread, so no call runs on the event
loop; an asyncio lock hands the connection to one unit of work at a time
(SQLite serialises writers anyway, and a unit of work is a few
sub-millisecond statements). `BEGIN IMMEDIATE` takes the database's write
lock at the start, so a read-check-write never sees data another writer is
about to change, including a second process on the same file.

Read-only units of work (`transaction(read_only=True)`: a call loading its customer) run on a
second connection with a thread and a lock of its own, `query_only`, in a deferred transaction:
WAL gives them a snapshot of what was committed when they first read, without waiting for the
writer. Under load each statement's hand-back waits for a busy event loop, so a unit holds its
connection for several loop turns; a call's many-read load queued behind every write before.

Files are created owner-only (0600; SQLite gives its -wal and -shm files the
database file's mode). Deleted rows are overwritten (`secure_delete`), and
after an erasure the WAL is checkpointed and truncated, so no copy of a
deleted template stays in the -wal file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from authsvc.store import migrations
from authsvc.store.base import StoreUnavailable
from authsvc.store.sql import SqlTransaction

log = logging.getLogger(__name__)
T = TypeVar("T")
DIALECT = "sqlite"
FILE_MODE = 0o600
BUSY_MS = 5000  # how long a statement waits for another process's lock on the file
SCRUB_BUSY_MS = 100  # the post-erasure checkpoint waits this long for readers, then retries later
SCRUB_RETRY_S = 1.0  # a blocked checkpoint is retried after a commit at most this often


def _owner_only(path: Path) -> None:
    """Creates `path` 0600 if missing; tightens an existing store file (and its WAL files)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(p.stat().st_mode) & 0o077:
                log.warning("%s was readable by group or others; setting mode 0600", p)
                os.chmod(p, FILE_MODE)


class SQLiteTransaction(SqlTransaction):
    """Statements run in order on the store's one thread. Writes nobody reads a result of (and
    BEGIN) are queued there without a round trip to the event loop, which under load costs an
    event-loop turn each; the first error of a queued one is raised by the next statement or
    the commit, and the unit of work is rolled back."""

    def __init__(self, store: SQLiteStore, read_only: bool = False) -> None:
        super().__init__()
        self._store = store
        self._conn = store._read_conn if read_only else store._conn
        self._executor = store._read_executor if read_only else store._executor
        self.failed: BaseException | None = None  # a queued statement's error
        self.closed = False  # its unit of work ended: a statement now would land in another's

    def _open(self) -> None:
        if self.closed:
            # A kept `tx` would run inside whichever unit holds the connection now, and a queued
            # write's error would be stored here, where nothing reads it any more.
            raise RuntimeError(f"{self._store.description}: a unit of work used after it ended")

    def _checked(self, fn: Callable[[], T]) -> Callable[[], T]:
        self._open()

        def job() -> T:
            if self.failed is not None:
                raise self.failed  # nothing runs after a failed write: the unit is undone
            return fn()

        return job

    def queue(self, fn: Callable[[], object]) -> None:
        self._open()

        def job() -> None:
            if self.failed is None:
                try:
                    fn()
                except BaseException as exc:  # kept for the next statement or the commit
                    self.failed = exc

        self._executor.submit(job)

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        conn = self._conn
        job = self._checked(lambda: conn.execute(sql, args).fetchall())
        return await self._store._run(job, executor=self._executor)

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        conn = self._conn
        return await self._store._run(
            self._checked(lambda: conn.execute(sql, args).rowcount), executor=self._executor
        )

    async def _do(self, sql: str, args: Sequence[Any] = ()) -> None:
        conn = self._conn
        self.queue(lambda: conn.execute(sql, args))


class SQLiteStore:
    dialect = DIALECT

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.description = f"sqlite:{self.path}"
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authsvc-sqlite")
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task | None = None  # the task whose unit of work holds the lock
        self._scrub_pending = False  # an erasure's WAL checkpoint has not succeeded yet; retry it
        self._scrub_blocked = False  # the last one was blocked by a reader (warned once)
        self._scrub_tried = 0.0
        self._conn: sqlite3.Connection = None  # type: ignore[assignment]  # set by open()
        # Read-only units of work: a connection, thread, lock and owner of their own.
        self._read_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="authsvc-sqlite-read")
        self._read_lock = asyncio.Lock()
        self._read_owner: asyncio.Task | None = None
        self._read_conn: sqlite3.Connection = None  # type: ignore[assignment]  # set by open()

    @classmethod
    async def open(cls, path: str | Path) -> SQLiteStore:
        store = cls(path)
        await store._run(store._connect)
        await store._run(store._connect_reader, executor=store._read_executor)
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _owner_only(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        # Deleted content is overwritten with zeros, not left in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        self._conn = conn
        # An erasure committed just before a crash was not scrubbed yet: scrub at every open.
        self._scrub()

    def _connect_reader(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        conn.execute("PRAGMA query_only=ON")  # a write in a read-only unit is a bug: refused
        self._read_conn = conn

    async def _run(
        self, fn: Callable[[], T], shielded: bool = False, executor: ThreadPoolExecutor | None = None
    ) -> T:
        """Runs `fn` on the store's thread (or `executor`'s). A cancelled caller's statement is
        dropped if it has not started; `shielded` ones (the rollback) run even if their caller is
        cancelled."""
        future = asyncio.get_running_loop().run_in_executor(executor or self._executor, fn)
        try:
            return await (asyncio.shield(future) if shielded else future)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if any(w in text for w in ("locked", "busy", "I/O", "unable to open", "disk")):
                raise StoreUnavailable(f"{self.description}: {text}") from exc
            raise

    def _refuse_nesting(self, read_only: bool) -> None:
        """A unit inside one this task holds open: a facade must take the caller's `tx` instead."""
        task = asyncio.current_task()
        writes, reads = self._owner is task, self._read_owner is task
        if reads if read_only else writes:
            # It would wait for itself forever.
            kind = "read-only unit" if read_only else "unit"
            raise RuntimeError(f"{self.description}: a {kind} of work is already open in this task")
        if read_only and writes:
            # Its snapshot would not see the writes of the unit this task holds open.
            raise RuntimeError(f"{self.description}: a read-only unit cannot open inside a unit that writes")
        if reads and not read_only:
            # An erasure's commit waits for the read-only units: it would wait for this task's own.
            raise RuntimeError(f"{self.description}: a unit that writes cannot open inside a read-only one")

    @contextlib.asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[SQLiteTransaction]:
        self._refuse_nesting(read_only)
        if read_only:
            async with self._read_transaction() as tx:
                yield tx
            return
        async with self._lock:
            self._owner = asyncio.current_task()
            tx = SQLiteTransaction(self)
            done = False
            try:
                tx.queue(lambda: self._conn.execute("BEGIN IMMEDIATE"))
                yield tx
                # COMMIT runs to its end even if the caller is cancelled; a committed erasure is
                # marked for scrubbing in the same job, so it is scrubbed now or by a retry.
                done = True
                if await self._run(lambda: self._commit(tx), shielded=True):
                    try:
                        await self._scrub_alone()
                    except Exception:  # the unit committed: its scrub stays pending, retried
                        log.exception("%s: WAL checkpoint after erasure failed; retried", self.description)
            finally:
                tx.closed = True
                try:
                    if not done:
                        # Undo on error or cancellation. Shielded and queued before the lock is
                        # released (the thread runs in order), so it precedes the next BEGIN even
                        # if this await is cancelled too.
                        await self._run(self._rollback_if_open, shielded=True)
                finally:
                    self._owner = None  # also when that await is cancelled

    @contextlib.asynccontextmanager
    async def _read_transaction(self) -> AsyncIterator[SQLiteTransaction]:
        async with self._read_lock:
            self._read_owner = asyncio.current_task()
            tx = SQLiteTransaction(self, read_only=True)
            try:
                # Deferred: the snapshot is taken at the unit's first read, and no lock is taken.
                tx.queue(lambda: self._read_conn.execute("BEGIN"))
                yield tx
                await self._run(lambda: self._end_read(tx), shielded=True, executor=self._read_executor)
            finally:
                tx.closed = True
                try:
                    # Ends the snapshot on error or cancellation too (queued in order, as above).
                    await self._run(self._end_read_if_open, shielded=True, executor=self._read_executor)
                finally:
                    self._read_owner = None

    def _end_read(self, tx: SQLiteTransaction) -> None:
        try:
            if tx.failed is not None:
                raise tx.failed  # a queued statement of the unit failed: its caller must know
        finally:
            self._end_read_if_open()

    def _end_read_if_open(self) -> None:
        if self._read_conn.in_transaction:
            self._read_conn.execute("ROLLBACK")  # nothing to keep: it read

    def _rollback_if_open(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _commit(self, tx: SQLiteTransaction) -> bool:
        """COMMIT; -> whether the WAL is to be scrubbed now (after an erasure, or a retry due)."""
        try:
            if tx.failed is not None:
                raise tx.failed  # a queued write failed: nothing of the unit is kept
            self._conn.execute("COMMIT")
        finally:
            # A failed COMMIT leaves SQLite's transaction open, and every later BEGIN on this
            # connection would fail: undo it here, in the same job.
            self._rollback_if_open()
        if tx.erased:
            self._scrub_pending = True
        return self._scrub_pending and (tx.erased or time.monotonic() - self._scrub_tried > SCRUB_RETRY_S)

    async def _scrub_alone(self) -> None:
        """The scrub with no read-only unit of this node open: a reader's WAL snapshot blocks the
        truncating checkpoint, and back-to-back readers under load would block every retry.
        Taken after the writer's lock, always in that order (no unit writes inside a read-only
        one). Another process's reader can still block it: then it is retried."""
        async with self._read_lock:
            await self._run(self._scrub, shielded=True)

    def _scrub(self) -> None:
        """Copies the WAL into the database (where secure_delete zeroed the rows) and truncates it.

        Another process reading the file can block the checkpoint: then it is not waited for
        (that would hold the store), but retried after later commits (at most once a second)
        until it succeeds."""
        self._scrub_tried = time.monotonic()
        self._conn.execute(f"PRAGMA busy_timeout={SCRUB_BUSY_MS}")
        try:
            busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self._conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        if busy and not self._scrub_blocked:
            log.warning("%s: WAL checkpoint after erasure blocked by a reader; retried", self.description)
        self._scrub_blocked = self._scrub_pending = bool(busy)

    # -- schema ----------------------------------------------------------------------------

    def _version(self) -> int:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "schema_migrations" in tables:
            row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)
        if "meta" in tables:  # a file of authsvc 0.1, before versioned migrations: schema 1
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            return int(row[0]) if row else 0
        return 0

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._run(self._version)

    async def migrate(self) -> list[int]:
        async with self._lock:
            return await self._run(self._migrate)

    def _migrate(self) -> list[int]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._version()
            steps = migrations.pending(DIALECT, current, self.description)
            conn.execute(migrations.CREATE_TABLE)
            if current and not conn.execute("SELECT 1 FROM schema_migrations").fetchone():
                # A legacy file: its steps up to `current` are in place; record them.
                for m in migrations.load(DIALECT)[:current]:
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)", (m.version, m.name, _now_ms())
                    )
            conn.execute("COMMIT")
        finally:
            self._rollback_if_open()
        applied = []
        for m in steps:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._version() >= m.version:  # another process applied it meanwhile
                    continue
                for statement in m.statements():
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (m.version, m.name, _now_ms()))
                # Builds from before versioned migrations read this and refuse a newer schema.
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (str(m.version),),
                )
                conn.execute("COMMIT")
                log.info("%s: applied schema migration %04d_%s", self.description, m.version, m.name)
                applied.append(m.version)
            finally:
                self._rollback_if_open()
        return applied

    async def ping(self) -> None:
        async with self._lock:
            await self._run(lambda: self._conn.execute("SELECT 1").fetchone())
        async with self._read_lock:  # calls load their customers through it
            await self._run(
                lambda: self._read_conn.execute("SELECT 1").fetchone(), executor=self._read_executor
            )

    async def close(self) -> None:
        async with self._read_lock:
            if self._read_conn is not None:
                await self._run(self._read_conn.close, executor=self._read_executor)
        self._read_executor.shutdown(wait=True)
        async with self._lock:
            if self._conn is not None:
                await self._run(self._conn.close)
        self._executor.shutdown(wait=True)


def _now_ms() -> int:
    return int(time.time() * 1000)
