"""The audit trail: decisions, step-up attempts, enrollments, erasures, policy changes, refusals.

Records who, when, what and the outcome, never biometric data (no scores of
templates, no audio, no codes, no labels): details are ids, policy versions
and reasons. The actor is the authenticated principal. An event is written in
the unit of work of the change it records, so a change is never stored
without its audit row, nor the other way round: a failed audit write fails
the change.

Rows are hash-chained per tenant: each holds the previous row's hash and its
own, an HMAC-SHA256 under a key derived from the tenant's data key (so whoever
can write the database cannot forge a chain without the master key), and
`audit_heads` holds the newest. `verify` finds a row deleted, edited or cut off
the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from authsvc import crypto
from authsvc.identity import principal
from authsvc.store.base import AuditEvent, Store, Transaction, within
from authsvc.templates import TemplateVault

CHAIN_PURPOSE = "audit-chain/v1"
VERIFY_BATCH = 1000


def chain_hash(key: bytes, prev: str, e: AuditEvent) -> str:
    body = json.dumps(
        [prev, e.tenant, e.time_ms, e.actor, e.action, e.customer_id, e.outcome, e.details],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def start_mac(key: bytes, chain_from: int) -> str:
    return hmac.new(key, f"chain-from:{chain_from}".encode(), hashlib.sha256).hexdigest()


def head_mac(key: bytes, tenant: str, last_id: int, last_hash: str) -> str:
    body = json.dumps(["head", tenant, last_id, last_hash], separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


def trim_mac(key: bytes, tenant: str, trim_id: int, trim_hash: str) -> str:
    body = json.dumps(["trim", tenant, trim_id, trim_hash], separators=(",", ":"))
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    intact: bool
    rows_checked: int
    first_bad_id: int = 0
    problem: str = ""
    head_hash: str = ""
    # Rows written before the chain existed (schema 0003), at the start of the trail.
    unchained: int = 0


log = logging.getLogger(__name__)


class Auditor:
    def __init__(self, store: Store, vault: TemplateVault) -> None:
        self.store = store
        self.vault = vault
        self._background: set[asyncio.Task] = set()

    @classmethod
    def with_master(cls, store: Store, master: crypto.MasterKey) -> Auditor:
        """An auditor of its own (a CLI command, a test), with the vault the chain keys come from."""
        return cls(store, TemplateVault(store, master))

    async def record(
        self,
        tenant: str,
        action: str,
        customer_id: str,
        outcome: str,
        actor: str | None = None,
        tx: Transaction | None = None,
        **details: Any,
    ) -> None:
        """`actor`: None (or empty) records the principal of the request being served (a
        decision, a step-up attempt, an assertion), or "service" outside any request."""
        # Hashed as the store will give it back (JSON: tuples become lists).
        stored_details = json.loads(json.dumps(details, sort_keys=True))
        event = AuditEvent(
            tenant,
            int(time.time() * 1000),
            actor or principal.actor(),
            action,
            customer_id,
            outcome,
            stored_details,
        )
        async with within(self.store, tx) as t:
            key = await self.vault.subkey(tenant, CHAIN_PURPOSE, t)
            # Locks the tenant's head until commit: the rows of one tenant chain one after another.
            _, prev, _ = await t.audit_head(tenant)
            row_hash = chain_hash(key, prev, event)
            row_id = await t.append_audit(event, prev, row_hash)
            await t.set_audit_head(tenant, row_id, row_hash, head_mac(key, tenant, row_id, row_hash))

    async def ready(self) -> None:
        """Seals where the chain began (recorded by migration 0003) under the platform's chain
        key, once, so moving it later to pass off blanked rows as pre-chain is detected."""
        async with self.store.transaction() as tx:
            key = await self.vault.subkey("", CHAIN_PURPOSE, tx)
            chain_from, mac = await tx.audit_chain_from()
            if not mac:
                await tx.seal_audit_chain_from(start_mac(key, chain_from))

    async def verify(self, tenant: str) -> ChainCheck:
        """Recomputes the tenant's chain from its first row to the head.

        Found: an edited row, a removed row (the next one's link breaks), a row written since
        the chain began without a hash, and a removed tail or a head pointed elsewhere (the
        head's MAC). Not found from inside the database: the whole trail and its head removed
        together, or an old head put back with the rows after it; record `head_hash`
        elsewhere (a SIEM) to anchor the chain against those."""
        async with self.store.transaction() as tx:
            key = await self.vault.subkey(tenant, CHAIN_PURPOSE, tx)
            chain_from, from_mac = await tx.audit_chain_from()
            platform_key = await self.vault.subkey("", CHAIN_PURPOSE, tx)
            head_id, head_hash, mac = await tx.audit_head(tenant, lock=False)
            trim_id, trim_hash, trimmed_mac = await tx.audit_trim(tenant)

            def broken(row_id: int, problem: str) -> ChainCheck:
                return ChainCheck(False, checked, row_id, problem, head_hash, unchained)

            # After a retention trim the chain starts at the last deleted row's hash.
            prev, after, checked, unchained, last_id = trim_hash, trim_id, 0, 0, trim_id
            if not hmac.compare_digest(from_mac, start_mac(platform_key, chain_from)):
                return broken(0, "where the chain began was altered (meta audit_chain_from)")
            if head_id and not hmac.compare_digest(mac, head_mac(key, tenant, head_id, head_hash)):
                return broken(head_id, "the chain's head was altered")
            # Any trim field set (a hash without an id too) must carry the chain key's MAC: a
            # writer of the database must not start the chain where it likes.
            trimmed = trim_id or trim_hash or trimmed_mac
            if trimmed and not hmac.compare_digest(trimmed_mac, trim_mac(key, tenant, trim_id, trim_hash)):
                return broken(trim_id, "where retention trimmed the chain was altered")
            while True:
                rows = await tx.audit_chain(tenant, after, VERIFY_BATCH)
                if not rows:
                    break
                for event, row_prev, row_hash in rows:
                    after = last_id = event.id
                    if not row_hash:
                        if checked or event.id >= chain_from:
                            return broken(event.id, "row has no hash, but was written after the chain began")
                        unchained += 1
                        continue
                    checked += 1
                    if row_prev != prev:
                        return broken(event.id, "the row before it is missing or was changed")
                    if not hmac.compare_digest(row_hash, chain_hash(key, prev, event)):
                        return broken(event.id, "row was edited")
                    prev = row_hash
        if prev != head_hash or (head_hash and last_id != head_id):
            return broken(last_id or head_id, "rows after this one were removed (head mismatch)")
        return ChainCheck(True, checked, head_hash=head_hash, unchained=unchained)

    async def trim(self, tenant: str, before_ms: int, limit: int = VERIFY_BATCH) -> int:
        """Deletes up to `limit` of the tenant's rows older than `before_ms` (its audit retention)
        from the start of the chain, and records where the kept chain now starts, under the chain
        key, so the trim is told apart from rows removed by anyone else; -> rows deleted."""
        async with self.store.transaction() as tx:
            key = await self.vault.subkey(tenant, CHAIN_PURPOSE, tx)
            await tx.audit_head(tenant)  # the tenant's writers wait: the trim is one step of the chain
            n, last_id, last_hash = await tx.trim_audit(tenant, before_ms, limit)
            if n:
                await tx.set_audit_trim(tenant, last_id, last_hash, trim_mac(key, tenant, last_id, last_hash))
            return n

    def record_soon(self, tenant: str, action: str, customer_id: str, outcome: str, **details: Any) -> None:
        """Records from synchronous code running on the event loop (a policy reload): the write
        runs as a task of its own, and a failure is logged, since there is no caller to tell."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.warning("audit event not recorded (no event loop): %s %s %s", tenant, action, outcome)
            return
        task = loop.create_task(self.record(tenant, action, customer_id, outcome, **details))
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit write failed: %s", task.exception())

    async def list(
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
        """Newest first; the filters as `Transaction.list_audit` takes them."""
        async with self.store.transaction() as tx:
            return await tx.list_audit(
                tenant,
                limit,
                before_id,
                customer_id,
                action=action,
                outcome=outcome,
                since_ms=since_ms,
                until_ms=until_ms,
            )

    async def drain(self) -> None:
        """Waits for background writes (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
