"""SQLite store: one file, WAL journal, every write in a transaction.

One connection guarded by a lock: SQLite serialises writers anyway, and calls
are sub-millisecond, so a pool would add nothing but file-handle churn.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from authsvc.store.base import AuditEvent, CustomerRecord, Erasure, TemplateRow

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
    methods TEXT NOT NULL DEFAULT '[]',
    opted_out INTEGER NOT NULL DEFAULT 0,
    consent_version TEXT NOT NULL DEFAULT '',
    consent_ms INTEGER NOT NULL DEFAULT 0,
    registered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, customer_id)
);
CREATE TABLE IF NOT EXISTS customer_state (
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    name TEXT NOT NULL,
    blob BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, customer_id, name),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, customer_id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS service_secrets (
    name TEXT PRIMARY KEY,
    blob BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS assertion_uses (
    jti TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    uses INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
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
            _ensure_customer(cur, tenant, customer_id, now_ms)
            return _customer(cur, tenant, customer_id)  # type: ignore[return-value]

    def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        with self._tx() as cur:
            return _customer(cur, tenant, customer_id)

    def list_customers(self, tenant: str, limit: int, after: str = "") -> list[CustomerRecord]:
        with self._tx() as cur:
            rows = cur.execute(
                f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE tenant=? AND customer_id>? "
                "ORDER BY customer_id LIMIT ?",
                (tenant, after, limit),
            ).fetchall()
        return [_customer_from_row(tenant, r) for r in rows]

    def set_choices(
        self,
        tenant: str,
        customer_id: str,
        methods: list[str],
        opted_out: bool,
        consent_version: str,
        now_ms: int,
    ) -> CustomerRecord:
        with self._tx() as cur:
            _ensure_customer(cur, tenant, customer_id, now_ms)
            cur.execute(
                "UPDATE customers SET methods=?, opted_out=?, consent_version=?, consent_ms=?, registered=1 "
                "WHERE tenant=? AND customer_id=?",
                (json.dumps(sorted(methods)), int(opted_out), consent_version, now_ms, tenant, customer_id),
            )
            return _customer(cur, tenant, customer_id)  # type: ignore[return-value]

    def delete_customer(self, tenant: str, customer_id: str) -> Erasure | None:
        with self._tx() as cur:
            if not cur.execute(
                "SELECT 1 FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id)
            ).fetchone():
                return None
            key = (tenant, customer_id)
            n = cur.execute("DELETE FROM templates WHERE tenant=? AND customer_id=?", key).rowcount
            m = cur.execute("DELETE FROM customer_state WHERE tenant=? AND customer_id=?", key).rowcount
            cur.execute("DELETE FROM customers WHERE tenant=? AND customer_id=?", key)
        return Erasure(templates=n, secrets=m)

    def add_template(self, row: TemplateRow) -> bool:
        with self._tx() as cur:
            _ensure_customer(cur, row.tenant, row.customer_id, row.created_ms)
            inserted = cur.execute(
                _INSERT_TEMPLATE + f" ON CONFLICT {_TEMPLATE_KEY} DO NOTHING", _values(row)
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

    def replace_template(self, row: TemplateRow) -> None:
        with self._tx() as cur:
            _ensure_customer(cur, row.tenant, row.customer_id, row.created_ms)
            cur.execute(
                _INSERT_TEMPLATE + f" ON CONFLICT {_TEMPLATE_KEY} DO UPDATE SET "
                "encoder_version=excluded.encoder_version, key_id=excluded.key_id, blob=excluded.blob, "
                "label=excluded.label, created_ms=excluded.created_ms",
                _values(row),
            )

    def delete_templates(self, tenant: str, customer_id: str, modalities: list[str]) -> int:
        with self._tx() as cur:
            return sum(
                cur.execute(
                    "DELETE FROM templates WHERE tenant=? AND customer_id=? AND modality=?",
                    (tenant, customer_id, m),
                ).rowcount
                for m in modalities
            )

    def get_state(self, tenant: str, customer_id: str, name: str) -> bytes | None:
        with self._tx() as cur:
            row = cur.execute(
                "SELECT blob FROM customer_state WHERE tenant=? AND customer_id=? AND name=?",
                (tenant, customer_id, name),
            ).fetchone()
        return bytes(row[0]) if row else None

    def state_names(self, tenant: str, customer_id: str) -> list[str]:
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT name FROM customer_state WHERE tenant=? AND customer_id=? ORDER BY name",
                (tenant, customer_id),
            ).fetchall()
        return [r[0] for r in rows]

    def put_state(self, tenant: str, customer_id: str, name: str, blob: bytes, now_ms: int) -> None:
        with self._tx() as cur:
            _ensure_customer(cur, tenant, customer_id, now_ms)
            cur.execute(
                "INSERT INTO customer_state VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, customer_id, name) "
                "DO UPDATE SET blob=excluded.blob, updated_ms=excluded.updated_ms",
                (tenant, customer_id, name, blob, now_ms),
            )

    def delete_state(self, tenant: str, customer_id: str, name: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM customer_state WHERE tenant=? AND customer_id=? AND name=?",
                (tenant, customer_id, name),
            )

    def get_secret(self, name: str) -> bytes | None:
        with self._tx() as cur:
            row = cur.execute("SELECT blob FROM service_secrets WHERE name=?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def put_secret(self, name: str, blob: bytes) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO service_secrets VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET blob=excluded.blob",
                (name, blob),
            )

    def use_assertion(self, jti: str, tenant: str, expires_ms: int, now_ms: int) -> int:
        with self._tx() as cur:
            cur.execute("DELETE FROM assertion_uses WHERE expires_ms < ?", (now_ms,))
            cur.execute(
                "INSERT INTO assertion_uses VALUES (?, ?, 1, ?) ON CONFLICT (jti) DO UPDATE SET uses=uses+1",
                (jti, tenant, expires_ms),
            )
            return cur.execute("SELECT uses FROM assertion_uses WHERE jti=?", (jti,)).fetchone()[0]

    def append_audit(self, event: AuditEvent) -> int:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO audit (tenant, time_ms, actor, action, customer_id, outcome, details) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.tenant,
                    event.time_ms,
                    event.actor,
                    event.action,
                    event.customer_id,
                    event.outcome,
                    json.dumps(event.details, sort_keys=True),
                ),
            )
            return int(cur.lastrowid or 0)

    def list_audit(
        self, tenant: str, limit: int, before_id: int | None = None, customer_id: str = ""
    ) -> list[AuditEvent]:
        sql = "SELECT id, time_ms, actor, action, customer_id, outcome, details FROM audit WHERE tenant=?"
        args: tuple = (tenant,)
        if before_id is not None:
            sql += " AND id<?"
            args += (before_id,)
        if customer_id:
            sql += " AND customer_id=?"
            args += (customer_id,)
        with self._tx() as cur:
            rows = cur.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [
            AuditEvent(tenant, t, actor, action, cid, outcome, json.loads(details), id=i)
            for i, t, actor, action, cid, outcome, details in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_TEMPLATE_KEY = "(tenant, customer_id, modality, encoder_id, digest)"
_INSERT_TEMPLATE = (
    "INSERT INTO templates (tenant, customer_id, modality, encoder_id, encoder_version, digest, key_id, "
    "blob, label, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


def _values(row: TemplateRow) -> tuple:
    return (
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
    )


def _ensure_customer(cur: sqlite3.Cursor, tenant: str, customer_id: str, now_ms: int) -> None:
    cur.execute(
        "INSERT OR IGNORE INTO customers (tenant, customer_id, created_ms) VALUES (?, ?, ?)",
        (tenant, customer_id, now_ms),
    )


_CUSTOMER_COLUMNS = "customer_id, created_ms, methods, opted_out, consent_version, consent_ms, registered"


def _customer_from_row(tenant: str, row: tuple) -> CustomerRecord:
    cid, created, methods, opted_out, version, consent_ms, registered = row
    return CustomerRecord(
        tenant,
        cid,
        created,
        tuple(json.loads(methods)),
        bool(opted_out),
        version,
        consent_ms,
        bool(registered),
    )


def _customer(cur: sqlite3.Cursor, tenant: str, customer_id: str) -> CustomerRecord | None:
    row = cur.execute(
        f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE tenant=? AND customer_id=?", (tenant, customer_id)
    ).fetchone()
    return _customer_from_row(tenant, row) if row else None


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
