"""The unit-of-work operations, once, in the SQL both backends speak.

Statements are written with `?` placeholders (SQLite's); the PostgreSQL
backend rewrites them to `%s`. Backends supply four primitives: fetch all
rows, fetch one, execute for a row count, and the row-lock suffix
(`FOR UPDATE` where the backend has row locks, nothing on SQLite, whose
`BEGIN IMMEDIATE` already holds the database's write lock).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from authsvc.store.base import (
    AuditEvent,
    CredentialRecord,
    CustomerRecord,
    Erasure,
    FraudsterRow,
    Secret,
    TemplateRow,
    TenantRecord,
    WatchlistRecord,
)

PURGE_EVERY = 32
_CUSTOMER_COLUMNS = (
    "customer_id, created_ms, methods, opted_out, consent_version, consent_ms, registered, last_active_ms, "
    "expired_ms"
)
_CREDENTIAL_COLUMNS = (
    "id, tenant, kind, roles, created_ms, created_by, secret_hash, subject, description, expires_ms, "
    "revoked_ms, last_used_ms"
)
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


def _customer_from_row(tenant: str, row: Sequence[Any]) -> CustomerRecord:
    cid, created, methods, opted_out, version, consent_ms, registered, active, expired = row
    return CustomerRecord(
        tenant,
        cid,
        int(created),
        tuple(json.loads(methods)),
        bool(opted_out),
        version,
        int(consent_ms),
        bool(registered),
        int(active),
        int(expired),
    )


def _credential_from_row(row: Sequence[Any]) -> CredentialRecord:
    cid, tenant, kind, roles, created, by, secret_hash, subject, description, expires, revoked, used = row
    return CredentialRecord(
        cid,
        tenant,
        kind,
        tuple(json.loads(roles)),
        int(created),
        by,
        secret_hash,
        subject,
        description,
        int(expires),
        int(revoked),
        int(used),
    )


class SqlTransaction(ABC):
    #: Appended to a SELECT that must lock the rows it reads.
    for_update = ""

    def __init__(self) -> None:
        self.erased = False  # a customer was erased: the backend scrubs its files after commit
        # Customers known to exist in this unit of work: no INSERT ... ON CONFLICT round trip
        # before each of their writes.
        self._existing: set[tuple[str, str]] = set()

    @abstractmethod
    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]: ...

    @abstractmethod
    async def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Executes and returns the number of rows changed."""

    async def _do(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Executes a write whose row count nobody reads. A backend may queue it behind the
        statements before it and return at once; its error is then raised by the next statement
        or the commit, and the unit of work is undone, as if raised here."""
        await self._count(sql, args)

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple | None:
        rows = await self._all(sql, args)
        return rows[0] if rows else None

    # -- customers -------------------------------------------------------------------------

    async def lock_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        row = await self._one(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE tenant=? AND customer_id=?{self.for_update}",
            (tenant, customer_id),
        )
        if row:
            self._existing.add((tenant, customer_id))
        return _customer_from_row(tenant, row) if row else None

    async def _ensure(self, tenant: str, customer_id: str, now_ms: int) -> None:
        if (tenant, customer_id) in self._existing:
            return
        await self._do(
            "INSERT INTO customers (tenant, customer_id, created_ms, last_active_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (tenant, customer_id) DO NOTHING",
            (tenant, customer_id, now_ms, now_ms),
        )
        self._existing.add((tenant, customer_id))

    async def ensure_customer(self, tenant: str, customer_id: str, now_ms: int) -> CustomerRecord:
        await self._ensure(tenant, customer_id, now_ms)
        record = await self.get_customer(tenant, customer_id)
        assert record is not None
        return record

    async def get_customer(self, tenant: str, customer_id: str) -> CustomerRecord | None:
        row = await self._one(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE tenant=? AND customer_id=?",
            (tenant, customer_id),
        )
        return _customer_from_row(tenant, row) if row else None

    async def list_customers(self, tenant: str, limit: int, after: str = "") -> list[CustomerRecord]:
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE tenant=? AND customer_id>? "
            "ORDER BY customer_id LIMIT ?",
            (tenant, after, limit),
        )
        return [_customer_from_row(tenant, r) for r in rows]

    async def set_choices(
        self,
        tenant: str,
        customer_id: str,
        methods: list[str],
        opted_out: bool,
        consent_version: str,
        now_ms: int,
    ) -> CustomerRecord:
        await self._ensure(tenant, customer_id, now_ms)
        await self._do(
            "UPDATE customers SET methods=?, opted_out=?, consent_version=?, consent_ms=?, registered=1 "
            "WHERE tenant=? AND customer_id=?",
            (json.dumps(sorted(methods)), int(opted_out), consent_version, now_ms, tenant, customer_id),
        )
        record = await self.get_customer(tenant, customer_id)
        assert record is not None
        return record

    async def touch_customer(
        self, tenant: str, customer_id: str, now_ms: int, enrolled: bool = False
    ) -> None:
        await self._do(
            "UPDATE customers SET last_active_ms=?"
            + (", expired_ms=0" if enrolled else "")
            + " WHERE tenant=? AND customer_id=? AND last_active_ms<=?",
            (now_ms, tenant, customer_id, now_ms),
        )

    async def stale_customers(
        self, tenant: str, before_ms: int, state_prefixes: Sequence[str], limit: int, after: str = ""
    ) -> list[CustomerRecord]:
        states = " OR ".join("substr(s.name, 1, ?)=?" for _ in state_prefixes) or "0=1"
        rows = await self._all(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE tenant=? AND last_active_ms<? "
            "AND customer_id>? AND (EXISTS (SELECT 1 FROM templates t WHERE t.tenant=c.tenant "
            "AND t.customer_id=c.customer_id) OR EXISTS (SELECT 1 FROM customer_state s "
            f"WHERE s.tenant=c.tenant AND s.customer_id=c.customer_id AND s.updated_ms<? AND ({states}))) "
            "ORDER BY customer_id LIMIT ?",
            (tenant, before_ms, after, before_ms, *(a for p in state_prefixes for a in (len(p), p)), limit),
        )
        return [_customer_from_row(tenant, r) for r in rows]

    async def mark_expired(self, tenant: str, customer_id: str, now_ms: int) -> None:
        await self._do(
            "UPDATE customers SET expired_ms=? WHERE tenant=? AND customer_id=?",
            (now_ms, tenant, customer_id),
        )

    async def retention_tenants(self) -> list[str]:
        rows = await self._all("SELECT tenant FROM customers UNION SELECT tenant FROM audit_heads ORDER BY 1")
        return [r[0] for r in rows]

    async def delete_customer(self, tenant: str, customer_id: str) -> Erasure | None:
        if await self.lock_customer(tenant, customer_id) is None:
            return None
        key = (tenant, customer_id)
        n = await self._count("DELETE FROM templates WHERE tenant=? AND customer_id=?", key)
        # Secrets are the factors' state; lockout counters and markers go too, uncounted.
        secrets = await self._all(
            "SELECT name FROM customer_state WHERE tenant=? AND customer_id=? "
            "AND substr(name, 1, 7)='factor.'",
            key,
        )
        m = len(secrets)
        await self._do("DELETE FROM customer_state WHERE tenant=? AND customer_id=?", key)
        await self._do("DELETE FROM customers WHERE tenant=? AND customer_id=?", key)
        self._existing.discard(key)
        self.erased = True
        return Erasure(templates=n, secrets=m)

    # -- data keys -------------------------------------------------------------------------

    async def get_data_key(self, tenant: str) -> tuple[str, bytes] | None:
        row = await self._one("SELECT master_key_id, wrapped FROM data_keys WHERE tenant=?", (tenant,))
        return (row[0], bytes(row[1])) if row else None

    async def put_data_key(self, tenant: str, master_key_id: str, wrapped: bytes) -> tuple[str, bytes]:
        await self._do(
            "INSERT INTO data_keys (tenant, master_key_id, wrapped) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant) DO NOTHING",
            (tenant, master_key_id, wrapped),
        )
        stored = await self.get_data_key(tenant)
        assert stored is not None
        return stored

    async def data_keys(self) -> list[tuple[str, str, bytes]]:
        rows = await self._all(
            "SELECT tenant, master_key_id, wrapped FROM data_keys ORDER BY tenant" + self.for_update
        )
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    async def rewrap_data_key(self, tenant: str, old_key_id: str, new_key_id: str, wrapped: bytes) -> bool:
        n = await self._count(
            "UPDATE data_keys SET master_key_id=?, wrapped=? WHERE tenant=? AND master_key_id=?",
            (new_key_id, wrapped, tenant, old_key_id),
        )
        return n == 1

    async def master_key_ids(self) -> set[str]:
        return {r[0] for r in await self._all("SELECT DISTINCT master_key_id FROM data_keys")}

    async def has_sealed_data(self) -> bool:
        return bool(
            await self._one("SELECT 1 FROM data_keys LIMIT 1")
            or await self._one("SELECT 1 FROM service_secrets LIMIT 1")
        )

    # -- templates -------------------------------------------------------------------------

    async def add_template(self, row: TemplateRow) -> bool:
        await self._ensure(row.tenant, row.customer_id, row.created_ms)
        inserted = await self._count(
            _INSERT_TEMPLATE + f" ON CONFLICT {_TEMPLATE_KEY} DO NOTHING", _values(row)
        )
        return inserted == 1

    async def templates(
        self, tenant: str, customer_id: str, modality: str | None = None
    ) -> list[TemplateRow]:
        sql = (
            "SELECT modality, encoder_id, encoder_version, digest, key_id, blob, created_ms, label "
            "FROM templates WHERE tenant=? AND customer_id=?"
        )
        args: tuple = (tenant, customer_id)
        if modality is not None:
            sql += " AND modality=?"
            args += (modality,)
        rows = await self._all(sql + " ORDER BY id", args)
        return [
            TemplateRow(tenant, customer_id, m, e, v, d, k, bytes(b), int(t), label)
            for m, e, v, d, k, b, t, label in rows
        ]

    async def tenant_templates(
        self, tenant: str, modality: str, encoder_id: str, encoder_version: str
    ) -> list[TemplateRow]:
        rows = await self._all(
            "SELECT customer_id, digest, key_id, blob, created_ms FROM templates "
            "WHERE tenant=? AND modality=? AND encoder_id=? AND encoder_version=? ORDER BY customer_id, id",
            (tenant, modality, encoder_id, encoder_version),
        )
        return [
            TemplateRow(tenant, c, modality, encoder_id, encoder_version, d, k, bytes(b), int(t))
            for c, d, k, b, t in rows
        ]

    async def clear_labels(self) -> list[tuple[int, str, str, str, str]]:
        rows = await self._all(
            "SELECT id, tenant, customer_id, modality, label FROM templates "
            "WHERE label <> '' AND substr(label, 1, 7) <> 'sealed:'"
        )
        return [(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    async def set_template_label(self, row_id: int, label: str) -> None:
        await self._do("UPDATE templates SET label=? WHERE id=?", (label, row_id))

    async def replace_template(self, row: TemplateRow) -> None:
        await self._ensure(row.tenant, row.customer_id, row.created_ms)
        await self._do(
            _INSERT_TEMPLATE + f" ON CONFLICT {_TEMPLATE_KEY} DO UPDATE SET "
            "encoder_version=excluded.encoder_version, key_id=excluded.key_id, blob=excluded.blob, "
            "label=excluded.label, created_ms=excluded.created_ms",
            _values(row),
        )

    async def delete_templates(self, tenant: str, customer_id: str, modalities: list[str]) -> int:
        n = 0
        for m in modalities:
            n += await self._count(
                "DELETE FROM templates WHERE tenant=? AND customer_id=? AND modality=?",
                (tenant, customer_id, m),
            )
        self.erased = self.erased or n > 0  # an opt-out erases as much as a deletion does
        return n

    # -- per-customer state ----------------------------------------------------------------

    async def get_state(self, tenant: str, customer_id: str, name: str) -> bytes | None:
        row = await self._one(
            "SELECT blob FROM customer_state WHERE tenant=? AND customer_id=? AND name=?",
            (tenant, customer_id, name),
        )
        return bytes(row[0]) if row else None

    async def state_names(self, tenant: str, customer_id: str, before_ms: int | None = None) -> list[str]:
        older = "" if before_ms is None else " AND updated_ms<?"
        rows = await self._all(
            f"SELECT name FROM customer_state WHERE tenant=? AND customer_id=?{older} ORDER BY name",
            (tenant, customer_id, *(() if before_ms is None else (before_ms,))),
        )
        return [r[0] for r in rows]

    async def put_state(self, tenant: str, customer_id: str, name: str, blob: bytes, now_ms: int) -> None:
        await self._ensure(tenant, customer_id, now_ms)
        await self._do(
            "INSERT INTO customer_state (tenant, customer_id, name, blob, updated_ms) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (tenant, customer_id, name) DO UPDATE SET blob=excluded.blob, "
            "updated_ms=excluded.updated_ms",
            (tenant, customer_id, name, blob, now_ms),
        )

    async def delete_state(self, tenant: str, customer_id: str, name: str) -> None:
        n = await self._count(
            "DELETE FROM customer_state WHERE tenant=? AND customer_id=? AND name=?",
            (tenant, customer_id, name),
        )
        self.erased = self.erased or n > 0

    # -- service secrets and assertion uses ------------------------------------------------

    async def get_secret(self, name: str, for_update: bool = False) -> Secret | None:
        row = await self._one(
            "SELECT blob, version FROM service_secrets WHERE name=?"
            + (self.for_update if for_update else ""),
            (name,),
        )
        return Secret(bytes(row[0]), int(row[1])) if row else None

    async def put_secret(self, name: str, blob: bytes, expected_version: int) -> bool:
        if expected_version == 0:
            written = await self._count(
                "INSERT INTO service_secrets (name, blob, version) VALUES (?, ?, 1) "
                "ON CONFLICT (name) DO NOTHING",
                (name, blob),
            )
        else:
            written = await self._count(
                "UPDATE service_secrets SET blob=?, version=version+1 WHERE name=? AND version=?",
                (blob, name, expected_version),
            )
        return written == 1

    async def use_assertion(self, jti: str, tenant: str, max_uses: int, expires_ms: int, now_ms: int) -> bool:
        # Expired ids are purged by one validation in PURGE_EVERY (chosen by the random jti), not
        # by each: the purge is a write that concurrent validations on several nodes would queue
        # behind, and a stale id is harmless (its token fails on expiry before its count is read).
        if int(hashlib.sha256(jti.encode()).hexdigest()[:8], 16) % PURGE_EVERY == 0:
            await self._do("DELETE FROM assertion_uses WHERE expires_ms < ?", (now_ms,))
        # One statement: the conflict path takes the row's lock, so concurrent uses are counted
        # one after the other and the last one past the limit changes nothing.
        row = await self._one(
            "INSERT INTO assertion_uses (jti, tenant, uses, expires_ms) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (jti) DO UPDATE SET uses=assertion_uses.uses+1 WHERE assertion_uses.uses < ? "
            "RETURNING uses",
            (jti, tenant, expires_ms, max_uses),
        )
        return row is not None

    # -- tenants and credentials -------------------------------------------------------------

    async def create_tenant(self, record: TenantRecord) -> bool:
        n = await self._count(
            "INSERT INTO tenants (name, sector, created_ms, created_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (record.name, record.sector, record.created_ms, record.created_by),
        )
        return n == 1

    async def get_tenant(self, name: str) -> TenantRecord | None:
        row = await self._one(
            "SELECT name, sector, created_ms, created_by FROM tenants WHERE name=?", (name,)
        )
        return TenantRecord(row[0], row[1], int(row[2]), row[3]) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self._all("SELECT name, sector, created_ms, created_by FROM tenants ORDER BY name")
        return [TenantRecord(r[0], r[1], int(r[2]), r[3]) for r in rows]

    async def set_tenant_sector(self, name: str, sector: str) -> None:
        await self._do("UPDATE tenants SET sector=? WHERE name=?", (sector, name))

    async def put_credential(self, record: CredentialRecord) -> None:
        await self._do(
            f"INSERT INTO credentials ({_CREDENTIAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.id,
                record.tenant,
                record.kind,
                json.dumps(list(record.roles)),
                record.created_ms,
                record.created_by,
                record.secret_hash,
                record.subject,
                record.description,
                record.expires_ms,
                record.revoked_ms,
                record.last_used_ms,
            ),
        )

    async def get_credential(self, credential_id: str) -> CredentialRecord | None:
        row = await self._one(f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE id=?", (credential_id,))
        return _credential_from_row(row) if row else None

    async def credentials_by_subject(self, subjects: list[str]) -> list[CredentialRecord]:
        if not subjects:
            return []
        marks = ",".join("?" * len(subjects))
        rows = await self._all(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE kind='certificate' AND revoked_ms=0 "
            f"AND subject IN ({marks}) ORDER BY id",
            tuple(subjects),
        )
        return [_credential_from_row(r) for r in rows]

    async def list_credentials(self, tenant: str) -> list[CredentialRecord]:
        rows = await self._all(
            f"SELECT {_CREDENTIAL_COLUMNS} FROM credentials WHERE tenant=? ORDER BY created_ms, id", (tenant,)
        )
        return [_credential_from_row(r) for r in rows]

    async def revoke_credential(self, credential_id: str, now_ms: int) -> bool:
        n = await self._count(
            "UPDATE credentials SET revoked_ms=? WHERE id=? AND revoked_ms=0", (now_ms, credential_id)
        )
        return n == 1

    async def touch_credential(self, credential_id: str, now_ms: int) -> None:
        await self._do("UPDATE credentials SET last_used_ms=? WHERE id=?", (now_ms, credential_id))

    # -- audit -----------------------------------------------------------------------------

    async def audit_chain_from(self) -> tuple[int, str]:
        rows = dict(
            await self._all(
                "SELECT key, value FROM meta WHERE key IN ('audit_chain_from', 'audit_chain_from_mac')"
            )
        )
        return int(rows.get("audit_chain_from", 1)), rows.get("audit_chain_from_mac", "")

    async def seal_audit_chain_from(self, mac: str) -> None:
        await self._do(
            "INSERT INTO meta (key, value) VALUES ('audit_chain_from_mac', ?) ON CONFLICT (key) DO NOTHING",
            (mac,),
        )

    async def audit_head(self, tenant: str, lock: bool = True) -> tuple[int, str, str]:
        if lock:
            # The head row exists before it is locked, so two first writers cannot both miss it.
            await self._do(
                "INSERT INTO audit_heads (tenant, last_id, last_hash) VALUES (?, 0, '') "
                "ON CONFLICT (tenant) DO NOTHING",
                (tenant,),
            )
        row = await self._one(
            "SELECT last_id, last_hash, head_mac FROM audit_heads WHERE tenant=?"
            + (self.for_update if lock else ""),
            (tenant,),
        )
        return (int(row[0]), row[1], row[2]) if row else (0, "", "")

    async def set_audit_head(self, tenant: str, last_id: int, last_hash: str, head_mac: str) -> None:
        await self._do(
            "UPDATE audit_heads SET last_id=?, last_hash=?, head_mac=? WHERE tenant=?",
            (last_id, last_hash, head_mac, tenant),
        )

    async def audit_trim(self, tenant: str) -> tuple[int, str, str]:
        row = await self._one(
            "SELECT trim_id, trim_hash, trim_mac FROM audit_heads WHERE tenant=?", (tenant,)
        )
        return (int(row[0]), row[1], row[2]) if row else (0, "", "")

    async def trim_audit(self, tenant: str, before_ms: int, limit: int) -> tuple[int, int, str]:
        # Only a run from the start, up to the first retained row (clocks of several nodes may
        # write a later row with an earlier time): the chain stays one piece.
        rows = await self._all(
            "SELECT id, row_hash FROM audit WHERE tenant=? AND id<COALESCE((SELECT MIN(id) FROM audit "
            "WHERE tenant=? AND time_ms>=?), 9223372036854775807) ORDER BY id LIMIT ?",
            (tenant, tenant, before_ms, limit),
        )
        if not rows:
            return 0, 0, ""
        last_id, last_hash = int(rows[-1][0]), rows[-1][1]
        n = await self._count("DELETE FROM audit WHERE tenant=? AND id<=?", (tenant, last_id))
        return n, last_id, last_hash

    async def set_audit_trim(self, tenant: str, trim_id: int, trim_hash: str, trim_mac: str) -> None:
        await self._do(
            "UPDATE audit_heads SET trim_id=?, trim_hash=?, trim_mac=? WHERE tenant=?",
            (trim_id, trim_hash, trim_mac, tenant),
        )

    async def append_audit(self, event: AuditEvent, prev_hash: str = "", row_hash: str = "") -> int:
        row = await self._one(
            "INSERT INTO audit (tenant, time_ms, actor, action, customer_id, outcome, details, prev_hash, "
            "row_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                event.tenant,
                event.time_ms,
                event.actor,
                event.action,
                event.customer_id,
                event.outcome,
                json.dumps(event.details, sort_keys=True),
                prev_hash,
                row_hash,
            ),
        )
        assert row is not None
        return int(row[0])

    async def audit_chain(self, tenant: str, after_id: int, limit: int) -> list[tuple[AuditEvent, str, str]]:
        rows = await self._all(
            "SELECT id, time_ms, actor, action, customer_id, outcome, details, prev_hash, row_hash "
            "FROM audit "
            "WHERE tenant=? AND id>? ORDER BY id LIMIT ?",
            (tenant, after_id, limit),
        )
        return [
            (AuditEvent(tenant, int(t), actor, action, cid, outcome, json.loads(details), id=int(i)), prev, h)
            for i, t, actor, action, cid, outcome, details, prev, h in rows
        ]

    async def list_audit(
        self,
        tenant: str,
        limit: int,
        before_id: int | None = None,
        customer_id: str = "",
        *,
        action: str = "",
        outcome: str = "",
        since_ms: int = 0,
        until_ms: int = 0,
    ) -> list[AuditEvent]:
        sql = "SELECT id, time_ms, actor, action, customer_id, outcome, details FROM audit WHERE tenant=?"
        args: tuple = (tenant,)
        if before_id is not None:
            sql += " AND id<?"
            args += (before_id,)
        if customer_id:
            sql += " AND customer_id=?"
            args += (customer_id,)
        if action:
            # The action or its dotted family ("enroll" -> "enroll.voice"); substr, not LIKE, so
            # no character of the filter is a wildcard.
            sql += " AND (action=? OR substr(action, 1, ?)=?)"
            args += (action, len(action) + 1, f"{action}.")
        if outcome:
            sql += " AND outcome=?"
            args += (outcome,)
        if since_ms:
            sql += " AND time_ms>=?"
            args += (since_ms,)
        if until_ms:
            sql += " AND time_ms<?"
            args += (until_ms,)
        rows = await self._all(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [
            AuditEvent(tenant, int(t), actor, action, cid, outcome, json.loads(details), id=int(i))
            for i, t, actor, action, cid, outcome, details in rows
        ]

    # -- watchlists ----------------------------------------------------------------------------

    async def create_watchlist(self, record: WatchlistRecord) -> bool:
        return (
            await self._count(
                "INSERT INTO watchlists (tenant, name, description, created_ms, created_by) "
                "VALUES (?,?,?,?,?) ON CONFLICT (tenant, name) DO NOTHING",
                (record.tenant, record.name, record.description, record.created_ms, record.created_by),
            )
            == 1
        )

    async def list_watchlists(self, tenant: str) -> list[WatchlistRecord]:
        rows = await self._all(
            "SELECT w.name, w.description, w.created_ms, w.created_by, "
            "(SELECT COUNT(*) FROM fraudsters f WHERE f.tenant=w.tenant AND f.watchlist=w.name) "
            "FROM watchlists w WHERE w.tenant=? ORDER BY w.name",
            (tenant,),
        )
        return [WatchlistRecord(tenant, n, d, int(c), b, int(m)) for n, d, c, b, m in rows]

    async def delete_watchlist(self, tenant: str, name: str) -> int | None:
        if not await self._count("DELETE FROM watchlists WHERE tenant=? AND name=?", (tenant, name)):
            return None
        self.erased = True
        return await self._count("DELETE FROM fraudsters WHERE tenant=? AND watchlist=?", (tenant, name))

    async def put_fraudster(self, row: FraudsterRow) -> bool:
        key = (row.tenant, row.watchlist, row.fraudster_id)
        replaced = await self._count(
            "DELETE FROM fraudsters WHERE tenant=? AND watchlist=? AND fraudster_id=?", key
        )
        await self._do(
            "INSERT INTO fraudsters (tenant, watchlist, fraudster_id, encoder_id, encoder_version, key_id, "
            "blob, samples, created_ms, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                *key,
                row.encoder_id,
                row.encoder_version,
                row.key_id,
                row.blob,
                row.samples,
                row.created_ms,
                row.created_by,
            ),
        )
        return replaced == 0

    async def delete_fraudster(self, tenant: str, watchlist: str, fraudster_id: str) -> bool:
        n = await self._count(
            "DELETE FROM fraudsters WHERE tenant=? AND watchlist=? AND fraudster_id=?",
            (tenant, watchlist, fraudster_id),
        )
        self.erased = self.erased or n > 0
        return n > 0

    async def fraudsters(self, tenant: str, watchlist: str | None = None) -> list[FraudsterRow]:
        where, args = (
            ("tenant=?", (tenant,))
            if watchlist is None
            else ("tenant=? AND watchlist=?", (tenant, watchlist))
        )
        rows = await self._all(
            "SELECT watchlist, fraudster_id, encoder_id, encoder_version, key_id, blob, samples, created_ms, "
            f"created_by FROM fraudsters WHERE {where} ORDER BY watchlist, fraudster_id",
            args,
        )
        return [
            FraudsterRow(tenant, w, f, e, v, k, bytes(b), int(n), int(c), by)
            for w, f, e, v, k, b, n, c, by in rows
        ]

    async def watchlist_version(self, tenant: str) -> int:
        row = await self._one("SELECT version FROM watchlist_versions WHERE tenant=?", (tenant,))
        return int(row[0]) if row else 0

    async def bump_watchlist_version(self, tenant: str) -> int:
        await self._do(
            "INSERT INTO watchlist_versions (tenant, version) VALUES (?, 1) "
            "ON CONFLICT (tenant) DO UPDATE SET version = watchlist_versions.version + 1",
            (tenant,),
        )
        return await self.watchlist_version(tenant)
