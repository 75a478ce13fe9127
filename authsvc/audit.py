"""The audit trail: decisions, step-up attempts, enrollments, erasures, policy changes.

Records who, when, what and the outcome, never biometric data (no scores of
templates, no audio, no codes, no labels): details are ids, policy versions
and reasons. An event is written in the unit of work of the change it
records, so a change is never stored without its audit row, nor the other
way round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from authsvc.store.base import AuditEvent, Store, Transaction, within

log = logging.getLogger(__name__)


class Auditor:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._background: set[asyncio.Task] = set()

    async def record(
        self,
        tenant: str,
        action: str,
        customer_id: str,
        outcome: str,
        actor: str = "service",
        tx: Transaction | None = None,
        **details: Any,
    ) -> None:
        event = AuditEvent(
            tenant, int(time.time() * 1000), actor or "unknown", action, customer_id, outcome, details
        )
        async with within(self.store, tx) as t:
            await t.append_audit(event)

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
        self, tenant: str, limit: int, before_id: int | None = None, customer_id: str = ""
    ) -> list[AuditEvent]:
        async with self.store.transaction() as tx:
            return await tx.list_audit(tenant, limit, before_id, customer_id)

    async def drain(self) -> None:
        """Waits for background writes (at shutdown)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
