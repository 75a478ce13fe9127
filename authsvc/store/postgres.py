"""PostgreSQL store: the shared database of several service nodes (psycopg 3, psycopg_pool).

An async connection pool; a unit of work is one transaction on one pooled
connection, and `lock_customer` is `SELECT ... FOR UPDATE` on the customer's
row plus a transaction-scoped advisory lock on its key (which also holds for
a customer not created yet), so read-check-write sequences of two nodes on
one customer run one after the other. Migrations run under a transaction-scoped advisory lock, so
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
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from authsvc.errors import ConfigError
from authsvc.store import migrations
from authsvc.store.base import CustomerRecord, StoreUnavailable
from authsvc.store.sql import SqlTransaction

log = logging.getLogger(__name__)
DIALECT = "postgresql"
#: How long a request waits for a pooled connection before it is told to retry.
ACQUIRE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10
_placeholders: dict[str, str] = {}
# Every connection: only to a primary, with TCP keepalives so a vanished server is noticed.
CONNECTION: dict[str, Any] = {
    "autocommit": True,
    "target_session_attrs": "read-write",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
# A unit of work holds a customer's row for milliseconds: a lock held longer (a frozen node)
# turns into UNAVAILABLE for the waiting request instead of an unbounded wait, and a
# connection left idle in a transaction is ended by the server.
SESSION_SETTINGS = (
    "SET lock_timeout = '3s'",
    "SET statement_timeout = '15s'",
    "SET idle_in_transaction_session_timeout = '15s'",
)
# Driver errors that mean "the database cannot serve this now", not a bug: retry later.
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)


async def _configure(conn: psycopg.AsyncConnection) -> None:
    for setting in SESSION_SETTINGS:
        await conn.execute(setting)


def _pg(sql: str) -> str:
    out = _placeholders.get(sql)
    if out is None:
        out = _placeholders[sql] = sql.replace("?", "%s")
    return out


# scheme://userinfo@rest, userinfo up to the LAST "@": an unencoded "@" or "/" in a password must
# not let any part of it be read as a host, port or database name (and then printed).
_URL = re.compile(r"^postgres(?:ql)?://(?:(?P<userinfo>.*)@)?(?P<rest>[^@]*)$", re.S)
_MALFORMED = (
    "the PostgreSQL DSN is malformed (it is not repeated here: it may hold a password); "
    "percent-encode special characters (/ @ : ? #) of the user and password, or give the "
    "password in PGPASSWORD or ~/.pgpass"
)


def describe_dsn(dsn: str) -> tuple[str, list[str]]:
    """-> (the DSN without its password, the strings to scrub from any message: the DSN, its
    user-info and password, raw and decoded). A DSN that libpq would read differently from
    how it is written (an unencoded special character) is a ConfigError that repeats none of it."""
    secrets = [dsn]
    m = _URL.match(dsn)
    expected: tuple[str, str] | None = None
    if m and m.group("userinfo") is not None:
        user, _, password = m.group("userinfo").partition(":")
        secrets += [m.group("userinfo"), password, urllib.parse.unquote(password)]
        expected = (urllib.parse.unquote(user), urllib.parse.unquote(password))
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConfigError(_MALFORMED) from None
    password = str(parts.get("password") or "")
    secrets.append(password)
    if expected is not None and (str(parts.get("user") or ""), password) != expected:
        raise ConfigError(_MALFORMED)
    host = str(parts.get("host") or parts.get("hostaddr") or "localhost")
    port = str(parts.get("port") or "5432")
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", port) or "@" in host:
        raise ConfigError(_MALFORMED)
    user = str(parts.get("user") or "")
    db = str(parts.get("dbname") or user)
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}", [x for x in secrets if x]


class PostgresTransaction(SqlTransaction):
    for_update = " FOR UPDATE"

    def __init__(self, conn: psycopg.AsyncConnection) -> None:
        super().__init__()
        self._conn = conn

    async def lock_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        # FOR UPDATE locks only a row that exists. A customer being created (a first enrollment
        # racing an opt-out, two first profile writes) has none yet: a transaction-scoped
        # advisory lock on the customer's key serialises those too.
        await self._all(
            "SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"{tenant}\x1f{customer_id}",)
        )
        return await super().lock_customer(tenant, customer_id)

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        cur = await self._conn.execute(_pg(sql), args)
        return await cur.fetchall() if cur.description else []

    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        cur = await self._conn.execute(_pg(sql), args)
        return cur.rowcount


class PostgresStore:
    dialect = DIALECT

    def __init__(self, dsn: str, min_size: int = 1, max_size: int = 8) -> None:
        self.description, self._secrets = describe_dsn(dsn)
        self._secrets.sort(key=len, reverse=True)
        self._dsn = dsn
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            open=False,
            kwargs=CONNECTION,
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            timeout=ACQUIRE_TIMEOUT_S,
            name="authsvc",
        )

    @classmethod
    async def open(cls, dsn: str, min_size: int = 1, max_size: int = 8) -> PostgresStore:
        store = cls(dsn, min_size, max_size)
        # One direct connection first: the pool only says "timed out", this says why.
        try:
            conn = await psycopg.AsyncConnection.connect(
                dsn, connect_timeout=CONNECT_TIMEOUT_S, **{**CONNECTION, "autocommit": True}
            )
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
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextlib.asynccontextmanager
    async def transaction(self, *, read_only: bool = False) -> AsyncIterator[PostgresTransaction]:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if read_only:
                    # One snapshot for the whole unit, as SQLite's read-only units read (READ
                    # COMMITTED takes one per statement), and writes refused. A read-only
                    # REPEATABLE READ transaction never fails to serialize; MVCC keeps it from
                    # waiting for writers.
                    await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield PostgresTransaction(conn)
        except PoolTimeout:
            raise StoreUnavailable(f"no database connection to {self.description} became free") from None
        except UNAVAILABLE as exc:
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
            # A standby after a failover answers, but cannot take a write: not healthy.
            (read_only,) = (await tx._all("SHOW transaction_read_only"))[0]
        if read_only == "on":
            raise StoreUnavailable(f"database {self.description} is read-only (a standby?)")

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
