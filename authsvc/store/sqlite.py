"""SQLite store: one file, WAL journal, every write in a transaction.

One connection guarded by a lock: SQLite serialises writers anyway, and calls
are sub-millisecond, so a pool would add nothing but file-handle churn.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from authsvc.store.base import CustomerRecord, TemplateRow

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS data_keys (
    tenant TEXT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, customer_id)
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    modality TEXT NOT NULL,
    encoder_id TEXT NOT NULL,
    encoder_version TEXT NOT NULL,
    digest TEXT NOT NULL,
    key_id TEXT NOT NULL,
    blob BLOB NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_ms INTEGER NOT NULL,
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE,
    UNIQUE (tenant, customer_id, modality, encoder_id, digest)
);
CREATE INDEX IF NOT EXISTS templates_by_customer ON templates (tenant, customer_id, modality);
"""


class SQLiteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {row[0]} is newer than this build supports")

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    def get_data_key(self, tenant: str) -> tuple[str, bytes] | None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT master_key_id, wrapped FROM data_keys WHERE tenant=?", (tenant,)
            ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def put_data_key(self, tenant: str, master_key_id: str, wrapped: bytes) -> tuple[str, bytes]:
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO data_keys VALUES (?, ?, ?)", (tenant, master_key_id, wrapped))
            row = cur.execute(
                "SELECT master_key_id, wrapped FROM data_keys WHERE tenant=?", (tenant,)
            ).fetchone()
        return row[0], bytes(row[1])

    def ensure_customer(self, tenant: str, customer_id: str, now_ms: int) -> CustomerRecord:
        with self._tx() as cur:
            cur.execute("INSERT OR IGNORE INTO customers VALUES (?, ?, ?)", (tenant, customer_id, now_ms))
            row = cur.execute(
                "SELECT created_ms FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id)
            ).fetchone()
        return CustomerRecord(tenant, customer_id, row[0])

    def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT created_ms FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id)
            ).fetchone()
        return CustomerRecord(tenant, customer_id, row[0]) if row else None

    def list_customers(self, tenant: str, limit: int, after: str = "") -> list[CustomerRecord]:
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT customer_id, created_ms FROM customers WHERE tenant=? AND customer_id>? "
                "ORDER BY customer_id LIMIT ?",
                (tenant, after, limit),
            ).fetchall()
        return [CustomerRecord(tenant, c, t) for c, t in rows]

    def delete_customer(self, tenant: str, customer_id: str) -> int | None:
        with self._tx() as cur:
            if not cur.execute(
                "SELECT 1 FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id)
            ).fetchone():
                return None
            n = cur.execute(
                "DELETE FROM templates WHERE tenant=? AND customer_id=?", (tenant, customer_id)
            ).rowcount
            cur.execute("DELETE FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id))
        return n

    def add_template(self, row: TemplateRow) -> bool:
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO customers VALUES (?, ?, ?)",
                (row.tenant, row.customer_id, row.created_ms),
            )
            inserted = cur.execute(
                "INSERT OR IGNORE INTO templates (tenant, customer_id, modality, encoder_id, "
                "encoder_version, digest, key_id, blob, label, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    row.tenant,
                    row.customer_id,
                    row.modality,
                    row.encoder_id,
                    row.encoder_version,
                    row.digest,
                    row.key_id,
                    row.blob,
                    row.label,
                    row.created_ms,
                ),
            ).rowcount
        return inserted == 1

    def templates(self, tenant: str, customer_id: str, modality: str | None = None) -> list[TemplateRow]:
        sql = (
            "SELECT modality, encoder_id, encoder_version, digest, key_id, blob, created_ms, label "
            "FROM templates WHERE tenant=? AND customer_id=?"
        )
        args: tuple = (tenant, customer_id)
        if modality is not None:
            sql += " AND modality=?"
            args += (modality,)
        with self._tx() as cur:
            rows = cur.execute(sql + " ORDER BY id", args).fetchall()
        return [
            TemplateRow(tenant, customer_id, m, e, v, d, k, bytes(b), t, label)
            for m, e, v, d, k, b, t, label in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the connection lock; ROLLBACK on any error."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Cursor:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._conn.cursor()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._conn.execute("COMMIT")
        finally:
            # Undo on error, and also when COMMIT itself failed: SQLite then keeps the
            # transaction open, and every later BEGIN on this connection would fail.
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            finally:
                self._lock.release()
