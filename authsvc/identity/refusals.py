"""Audit rows for refused requests, summarised so a flood cannot flood the audit trail.

The first refusal of a (tenant, source host, reason, method) is written at
once; the ones that follow within `window_s` are counted, and one summary row
says how many there were, when the window closes. An attacker probing from
one address costs one row a minute, not one per request; the count stays.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from authsvc.audit import Auditor
from authsvc.identity.credentials import recordable_id

log = logging.getLogger(__name__)

WINDOW_S = 60.0
# Beyond this many open windows (many sources at once), or this many rows written in a window
# (sources that change address), new refusals share one window per tenant and reason: they are
# counted into its summary row instead of each opening a row of its own.
MAX_WINDOWS = 10_000
MAX_ROWS_PER_WINDOW = 600


@dataclass
class _Window:
    opened: float
    first_ms: int
    last_ms: int = 0
    more: int = 0
    actor: str = ""


def source_host(peer: str) -> str:
    """'ipv4:10.0.0.7:53122' -> 'ipv4:10.0.0.7'; the port changes with every connection."""
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class RefusalLog:
    def __init__(self, auditor: Auditor, window_s: float = WINDOW_S) -> None:
        self.auditor = auditor
        self.window_s = window_s
        self._windows: dict[tuple[str, str, str, str], _Window] = {}
        self._rows_since = time.monotonic()
        self._rows = 0
        self._flushed_at = time.monotonic()

    async def refused(
        self,
        tenant: str,
        source: str,
        actor: str,
        method: str,
        reason: str,
        customer_id: str = "",
        claimed_tenant: str = "",
    ) -> None:
        """Records one refusal in `tenant`'s trail (a provisioned tenant, or '' for the platform's);
        never raises: the caller is refused whether or not this is written. What the request
        claimed is kept only when it is a well-formed identifier (and so bounded)."""
        # Due windows are looked for at most once a second: in a flood, not at every refusal.
        if time.monotonic() - self._flushed_at >= 1.0:
            await self.flush_due()
        host = source_host(source)
        key = (tenant, host, reason, method)
        if time.monotonic() - self._rows_since >= self.window_s:
            self._rows_since, self._rows = time.monotonic(), 0
        if key not in self._windows and (
            len(self._windows) >= MAX_WINDOWS or self._rows >= MAX_ROWS_PER_WINDOW
        ):
            key = (tenant, "*", reason, "*")
        now_ms = int(time.time() * 1000)
        window = self._windows.get(key)
        if window is not None:
            window.more += 1
            window.last_ms = now_ms
            return
        self._windows[key] = _Window(time.monotonic(), now_ms, actor=actor)
        self._rows += 1
        claimed = {"claimed_tenant": claimed_tenant} if recordable_id(claimed_tenant) else {}
        await self._write(
            tenant,
            "request.refused",
            customer_id if recordable_id(customer_id) else "",
            reason,
            actor,
            method=method,
            source=source[:100],
            **claimed,
        )

    async def flush_due(self, everything: bool = False) -> None:
        now = self._flushed_at = time.monotonic()
        due = [k for k, w in self._windows.items() if everything or now - w.opened >= self.window_s]
        for key in due:
            window = self._windows.pop(key)
            if window.more:
                tenant, host, reason, method = key
                await self._write(
                    tenant,
                    "request.refused.repeated",
                    "",
                    reason,
                    window.actor,
                    method=method,
                    source=host,
                    count=window.more,
                    first_ms=window.first_ms,
                    last_ms=window.last_ms,
                )

    async def _write(
        self, tenant: str, action: str, customer_id: str, outcome: str, actor: str, **details
    ) -> None:
        try:
            await self.auditor.record(tenant, action, customer_id, outcome, actor or "anonymous", **details)
        except Exception as exc:  # a refusal is answered even when its audit row cannot be written
            log.error("refusal not audited (%s %s %s): %s", tenant, outcome, details.get("method"), exc)
