"""Data retention: biometric templates expire, audit rows age out.

A customer's voiceprint, typing profiles, recording fingerprints and the voices gathered from
their calls are erased once they have had no enrollment and no successful authentication for
the tenant's `retention_days` (default 1095: BIPA wants biometric data destroyed within 3 years
of the last interaction, and Amazon Connect Voice ID expires speakers on the same rule). The
customer record, consent and second factors stay; the customer's calls answer EXPIRED (not
NOT_ENROLLED) until they enroll again. Each expiry is a unit of work of its own with its audit
row, re-checked under the customer's lock, so a customer who called meanwhile is kept and two
nodes sweeping at once erase each customer once.

Audit rows older than the tenant's `audit_days` are trimmed from the start of the chain
(Auditor.trim), which stays verifiable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from authsvc.context import ServiceContext
from authsvc.enrollment import FINGERPRINT, PASSIVE_PENDING
from authsvc.fraud import caller_voices
from authsvc.identifiers import check_id
from authsvc.policy.schema import RetentionRules
from authsvc.store.base import Transaction

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: Customers examined per read; each expiry is then its own transaction.
BATCH = 200
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
#: Per-customer state that is biometric data: calls' voices gathered toward a voiceprint, and the
#: voices of recent callers who claimed the customer.
BIOMETRIC_STATES = (PASSIVE_PENDING, caller_voices.PREFIX)


@dataclass(frozen=True)
class Expiry:
    customer_id: str
    last_active_ms: int
    templates: int  # biometric templates erased, or that would be (fingerprints not counted)


@dataclass(frozen=True)
class ExpiryReport:
    tenant: str
    retention_days: int
    cutoff_ms: int
    dry_run: bool
    customers: list[Expiry]
    more: bool  # the limit was reached: others may be due too


def _now_ms() -> int:
    return int(time.time() * 1000)


async def expire_customers(
    ctx: ServiceContext,
    tenant: str,
    dry_run: bool = False,
    limit: int = DEFAULT_LIMIT,
    actor: str = "",
    now_ms: int | None = None,
) -> ExpiryReport:
    """Erases (or, `dry_run`, lists) the biometric data of the tenant's customers inactive for
    its retention_days, up to `limit` customers."""
    check_id(tenant, "tenant")
    policy = await ctx.policy_for(tenant)
    days = policy.retention.retention_days
    now = _now_ms() if now_ms is None else now_ms
    cutoff = now - days * DAY_MS
    found: list[Expiry] = []
    after, more = "", False
    while True:
        async with ctx.store.transaction() as tx:
            batch = await tx.stale_customers(tenant, cutoff, BIOMETRIC_STATES, BATCH, after)
            counted = (
                {r.customer_id: await _biometric_templates(tx, tenant, r.customer_id) for r in batch}
                if dry_run
                else {}
            )
        if not batch:
            break
        for record in batch:
            after = record.customer_id
            if len(found) == limit:
                more = True
                break
            if dry_run:
                found.append(Expiry(record.customer_id, record.last_active_ms, counted[record.customer_id]))
                continue
            expired = await _expire(ctx, tenant, record.customer_id, cutoff, days, now, actor)
            if expired is not None:
                found.append(expired)
        if more:
            break
    return ExpiryReport(tenant, days, cutoff, dry_run, found, more)


async def _biometric_templates(tx: Transaction, tenant: str, customer_id: str) -> int:
    return sum(t.modality != FINGERPRINT for t in await tx.templates(tenant, customer_id))


async def _expire(
    ctx: ServiceContext, tenant: str, customer_id: str, cutoff: int, days: int, now: int, actor: str
) -> Expiry | None:
    async with ctx.store.transaction() as tx:
        record = await tx.lock_customer(tenant, customer_id)
        if record is None or record.last_active_ms >= cutoff:
            return None  # erased, enrolled or authenticated since it was listed
        stored = await tx.templates(tenant, customer_id)
        modalities = sorted({t.modality for t in stored})
        templates = sum(t.modality != FINGERPRINT for t in stored)
        await tx.delete_templates(tenant, customer_id, modalities)
        states = 0
        # Voices kept from calls age on their own write time: a dormant customer's calls of
        # today (passive re-enrollment, a taker-over's voice for the watchlist) stay.
        for name in await tx.state_names(tenant, customer_id, before_ms=cutoff):
            if name.startswith(BIOMETRIC_STATES):
                await tx.delete_state(tenant, customer_id, name)
                states += 1
        if templates:  # only a customer who had a template expires; one who never enrolled stays so
            await tx.mark_expired(tenant, customer_id, now)
        await ctx.auditor.record(
            tenant,
            "expire",
            customer_id,
            "expired",
            actor or "service",
            templates=templates,
            modalities=[m for m in modalities if m != FINGERPRINT],
            states=states,
            last_active_ms=record.last_active_ms,
            retention_days=days,
            tx=tx,
        )
    return Expiry(customer_id, record.last_active_ms, templates)


async def trim_audit(ctx: ServiceContext, tenant: str, now_ms: int | None = None) -> int:
    """Deletes the tenant's audit rows older than its audit_days; -> rows deleted (audited)."""
    # The platform's own trail ("": refusals naming no tenant, platform changes) has no policy file.
    days = (await ctx.policy_for(tenant)).retention.audit_days if tenant else RetentionRules().audit_days
    cutoff = (_now_ms() if now_ms is None else now_ms) - days * DAY_MS
    total = 0
    while n := await ctx.auditor.trim(tenant, cutoff):
        total += n
    if total:
        await ctx.auditor.record(tenant, "audit.trim", "", "trimmed", "service", rows=total, audit_days=days)
    return total


async def sweep(ctx: ServiceContext) -> tuple[int, int]:
    """One pass over every tenant: expiries, then audit trims; -> (customers expired, rows trimmed).
    A tenant whose pass fails (its policy file broken, the store away) is logged and skipped."""
    async with ctx.store.transaction() as tx:
        tenants = await tx.retention_tenants()
    expired = trimmed = 0
    for tenant in tenants:
        try:
            while tenant:  # the platform's trail ("") has no customers
                report = await expire_customers(ctx, tenant, limit=MAX_LIMIT)
                expired += len(report.customers)
                if not report.more:
                    break
            trimmed += await trim_audit(ctx, tenant)
        except Exception as exc:  # one tenant's failure must not stop the others' retention
            log.error("retention of tenant %s failed: %s", tenant, exc)
    if expired or trimmed:
        log.info("retention: %d customer(s) expired, %d audit row(s) trimmed", expired, trimmed)
    return expired, trimmed


async def run_sweeps(ctx: ServiceContext, interval_s: float) -> None:
    """Sweeps at start and then every `interval_s` until cancelled (the service's own schedule)."""
    while True:
        try:
            await sweep(ctx)
        except Exception as exc:  # the store away at this hour: the next sweep tries again
            log.error("retention sweep failed: %s", exc)
        await asyncio.sleep(interval_s)
