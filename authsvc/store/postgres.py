"""PostgreSQL store: the shared database of several service nodes (psycopg 3, psycopg_pool).

An async connection pool; a unit of work is one transaction on one pooled
connection, and `lock_customer` is `SELECT ... FOR UPDATE` on the customer's
row, so read-check-write sequences of two nodes on one customer run one
after the other. Migrations run under a transaction-scoped advisory lock, so
nodes starting together apply each step once.

The DSN's password never reaches a log line or an error: `description` is
the DSN without it, and driver messages are scrubbed of it. A lost database
turns into `StoreUnavailable` (UNAVAILABLE with a RetryInfo); the pool
checks each connection before lending it, so a node recovers by itself when
the database returns.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from authsvc.errors import ConfigError
from authsvc.store import migrations
from authsvc.store.base import StoreUnavailable
from authsvc.store.sql import SqlTransaction

log = logging.getLogger(__name__)
DIALECT = "postgresql"
#: How long a request waits for a pooled connection before it is told to retry.
ACQUIRE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10
_placeholders: dict[str, str] = {}


def _pg(sql: str) -> str:
    out = _placeholders.get(sql)
    if out is None:
        out = _placeholders[sql] = sql.replace("?", "%s")
    return out


def describe_dsn(dsn: str) -> tuple[str, str]:
    """-> (the DSN without its password, the password or ""). A malformed DSN is a ConfigError
    whose message does not repeat it."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(
            "the PostgreSQL DSN is malformed (it is not repeated here: it may hold a password)"
        ) from None
    password = str(parts.get("password") or "")
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    user = parts.get("user") or ""
    db = parts.get("dbname") or user
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}", password


class PostgresTransaction(SqlTransaction):
    for_update = " FOR UPDATE"

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        super().__init__()
        self._conn = conn

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        cur = await self._conn.execute(_pg(sql), args)
        return await cur.fetchall() if cur.description else []

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(_pg(sql), args)
        return cur.rowcount


class PostgresStore:
    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8) -> None:
        self.description, self._password = describe_dsn(dsn)
        self._dsn = dsn
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            timeout=ACQUIRE_TIMEOUT_S,
            name="authsvc",
        )

    @classmethod
    async def open(cls, dsn: str, min_size: int = 1, max_size: int = 8) -> PostgresStore:
        store = cls(dsn, min_size, max_size)
        # One direct connection first: the pool only says "timed out", this says why.
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {store.description}: {store._scrub(exc)}"
            ) from None
        await conn.close()
        try:
            await store._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout:
            await store._pool.close()
            raise StoreUnavailable(f"cannot open a connection pool to {store.description}") from None
        return store

    def _scrub(self, exc: BaseException) -> str:
        text = str(exc).strip().replace("\n", " ")
        for secret in (self._dsn, self._password):
            if secret:
                text = text.replace(secret, "***")
        return text

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                yield PostgresTransaction(conn)
        except PoolTimeout:
            raise StoreUnavailable(f"no database connection to {self.description} became free") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database {self.description} unavailable: {self._scrub(exc)}") from None

    async def schema_version(self) -> int:
        async with self.transaction() as tx:
            return await _version(tx._conn)

    async def migrate(self) -> list[int]:
        applied = []
        async with self.transaction() as tx:
            conn = tx._conn
            # Per schema: tests (and tenants of a cluster) may keep several in one database.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '/authsvc'))")
            await conn.execute(migrations.CREATE_TABLE)
            current = await _version(conn)
            for m in migrations.pending(DIALECT, current, self.description):
                for statement in m.statements():
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                    (m.version, m.name, int(time.time() * 1000)),
                )
                await conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                    (str(m.version),),
                )
                applied.append(m.version)
        for v in applied:
            log.info("%s: applied schema migration %04d", self.description, v)
        return applied

    async def ping(self) -> None:
        async with self.transaction() as tx:
            await tx._all("SELECT 1")

    async def close(self) -> None:
        await self._pool.close()


async def _version(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
