"""Provisioned tenants and the sector each was created with.

A tenant exists only once a platform operator creates it; requests for any
other are refused. The sector is a floor: a policy file may raise it, never
lower it, and a regulated tenant without a usable policy file fails closed.
"""

from __future__ import annotations

import logging
import time

from authsvc.audit import Auditor
from authsvc.errors import AlreadyExists, InvalidInput, NotFound
from authsvc.identifiers import check_id
from authsvc.policy.schema import SECTOR_RANK as RANK
from authsvc.policy.schema import SECTORS, PolicyBook, PolicyUnusable
from authsvc.store.base import Store, TenantRecord

log = logging.getLogger(__name__)

# How long a tenant read from the store is trusted: its sector only ever rises.
CACHE_S = 10.0


def check_sector(sector: str) -> str:
    if sector not in SECTORS:
        raise InvalidInput("sector", f"must be one of {', '.join(SECTORS)}")
    return sector


class Tenants:
    def __init__(self, store: Store, auditor: Auditor) -> None:
        self.store = store
        self.auditor = auditor
        self._cache: dict[str, tuple[float, TenantRecord]] = {}

    async def create(self, name: str, sector: str, actor: str = "service") -> TenantRecord:
        check_id(name, "name")
        record = TenantRecord(name, check_sector(sector), int(time.time() * 1000), actor)
        async with self.store.transaction() as tx:
            if not await tx.create_tenant(record):
                raise AlreadyExists(f"tenant {name!r} already exists")
            await self.auditor.record(name, "tenant.create", "", "ok", actor, tx=tx, sector=sector)
        return record

    async def find(self, name: str) -> TenantRecord | None:
        cached = self._cache.get(name)
        if cached and time.monotonic() - cached[0] < CACHE_S:
            return cached[1]
        async with self.store.transaction() as tx:
            record = await tx.get_tenant(name)
        if record is not None:
            self._cache[name] = (time.monotonic(), record)
        return record

    async def get(self, name: str) -> TenantRecord:
        record = await self.find(check_id(name, "tenant"))
        if record is None:
            raise NotFound(f"tenant {name!r} is not provisioned")
        return record

    async def list(self) -> list[TenantRecord]:
        async with self.store.transaction() as tx:
            return await tx.list_tenants()

    async def raise_sector(self, name: str, sector: str, actor: str) -> bool:
        """Records a stricter sector (a policy file's); -> whether it changed. Never lowers."""
        async with self.store.transaction() as tx:
            record = await tx.get_tenant(name)
            if record is None or RANK[check_sector(sector)] <= RANK[record.sector]:
                return False
            await tx.set_tenant_sector(name, sector)
            await self.auditor.record(
                name, "tenant.sector", "", "raised", actor, tx=tx, old=record.sector, new=sector
            )
        self._cache.pop(name, None)
        return True


async def adopt_policy_sectors(tenants: Tenants, policies: PolicyBook) -> list[str]:
    """At start: a tenant whose policy file states a stricter sector than it was recorded with
    (tenants that predate provisioning were recorded 'general') is raised to it, for good, so
    losing the file later fails closed. -> the tenants raised."""
    raised = []
    for record in await tenants.list():
        try:
            policy = policies.get(record.name, record.sector)
        except PolicyUnusable as exc:
            log.error("tenant %s: %s", record.name, exc)
            continue
        if await tenants.raise_sector(record.name, policy.sector, "policy-file"):
            log.warning(
                "tenant %s: sector raised from %s to %s (its policy file)",
                record.name,
                record.sector,
                policy.sector,
            )
            raised.append(record.name)
    return raised
