"""Watchlists of known fraudsters (1:N): managed per tenant, screened on every call and enrollment.

Each node keeps one in-memory index per tenant: a matrix of the listed voiceprints
(L2-normalised, float32), so a screening is one matrix-vector product. The store counts
every change of a tenant's lists (`watchlist_version`); a session reads that counter
in the unit of work where it loads the customer, and the index is rebuilt only when it
moved, so every node screens against what the store holds, at the cost of one row read.
Brute force is exact and takes about a millisecond per 10k entries of 256 floats; see
bench/watchlist.py for where it stops being enough.

A hit is a cosine at or above the voice calibration's threshold at `fraud.watchlist_far`
per comparison: the chance of a false hit grows with the number of entries (about
entries x watchlist_far), which `authsvc watchlist list` and bench/watchlist.py report.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from authsvc.audit import Auditor
from authsvc.errors import InvalidInput, NotFound, PreconditionFailed
from authsvc.identifiers import check_id
from authsvc.policy.risk import FRAUDSTER, HIGH, LOW, UNAVAILABLE, DetectorRisk
from authsvc.policy.schema import TenantPolicy
from authsvc.scoring.calibration import Calibration
from authsvc.scoring.cosine import embedding_from_bytes, embedding_to_bytes
from authsvc.store.base import Store, Transaction, WatchlistRecord, within
from authsvc.templates import TemplateVault

VERSION = "watchlist-brute-force-1"


@dataclass(frozen=True)
class Index:
    version: int
    matrix: np.ndarray  # (N, D) float32, rows L2-normalised
    labels: tuple[tuple[str, str], ...]  # (watchlist, fraudster id) per row

    def best(self, embedding: np.ndarray) -> tuple[float, tuple[str, str] | None]:
        if not self.labels:
            return -1.0, None
        v = np.asarray(embedding, np.float32)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        scores = self.matrix @ v
        i = int(np.argmax(scores))
        return float(scores[i]), self.labels[i]


EMPTY = Index(0, np.zeros((0, 1), np.float32), ())


def _build(version: int, payloads: list[bytes], labels: tuple[tuple[str, str], ...]) -> Index:
    if not payloads:
        return Index(version, EMPTY.matrix, ())
    matrix = np.stack([embedding_from_bytes(p) for p in payloads]).astype(np.float32)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return Index(version, matrix, labels)


class Watchlists:
    def __init__(
        self,
        store: Store,
        vault: TemplateVault,
        auditor: Auditor,
        encoder_id: str,
        encoder_version: str,
        calibration: Calibration | None,
    ) -> None:
        self.store = store
        self.vault = vault
        self.auditor = auditor
        self.encoder = (encoder_id, encoder_version)
        self.calibration = calibration
        self._indexes: dict[str, Index] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- management ---------------------------------------------------------------------------

    async def create(self, tenant: str, name: str, description: str, actor: str) -> WatchlistRecord:
        check_id(tenant, "tenant")
        check_id(name, "name")
        if len(description) > 500:
            raise InvalidInput("description", "is longer than 500 characters")
        record = WatchlistRecord(tenant, name, description, int(time.time() * 1000), actor)
        async with self.store.transaction() as tx:
            if not await tx.create_watchlist(record):
                raise PreconditionFailed(f"tenant {tenant} already has a watchlist {name!r}")
            await tx.bump_watchlist_version(tenant)
            await self.auditor.record(tenant, "watchlist.create", "", "created", actor, watchlist=name, tx=tx)
        return record

    async def list(self, tenant: str) -> list[WatchlistRecord]:
        check_id(tenant, "tenant")
        async with self.store.transaction() as tx:
            return await tx.list_watchlists(tenant)

    async def delete(self, tenant: str, name: str, actor: str) -> int:
        check_id(tenant, "tenant")
        check_id(name, "name")
        async with self.store.transaction() as tx:
            removed = await tx.delete_watchlist(tenant, name)
            if removed is None:
                raise NotFound(f"tenant {tenant} has no watchlist {name!r}")
            await tx.bump_watchlist_version(tenant)
            await self.auditor.record(
                tenant, "watchlist.delete", "", "deleted", actor, watchlist=name, fraudsters=removed, tx=tx
            )
        return removed

    async def add(
        self, tenant: str, watchlist: str, fraudster_id: str, embedding: np.ndarray, samples: int, actor: str
    ) -> bool:
        """Lists (or replaces) a fraudster's voiceprint; -> True if new on that list."""
        check_id(fraudster_id, "fraudster_id")
        async with self.store.transaction() as tx:
            await self._require_list(tenant, watchlist, tx)
            row = await self.vault.seal_fraudster(
                tenant,
                watchlist,
                fraudster_id,
                *self.encoder,
                embedding_to_bytes(embedding),
                samples,
                actor,
                tx,
            )
            added = await tx.put_fraudster(row)
            await tx.bump_watchlist_version(tenant)
            await self.auditor.record(
                tenant,
                "watchlist.add",
                "",
                "added" if added else "replaced",
                actor,
                watchlist=watchlist,
                fraudster=fraudster_id,
                samples=samples,
                tx=tx,
            )
        return added

    async def remove(self, tenant: str, watchlist: str, fraudster_id: str, actor: str) -> None:
        check_id(fraudster_id, "fraudster_id")
        async with self.store.transaction() as tx:
            await self._require_list(tenant, watchlist, tx)
            if not await tx.delete_fraudster(tenant, watchlist, fraudster_id):
                raise NotFound(
                    f"watchlist {watchlist!r} of tenant {tenant} has no fraudster {fraudster_id!r}"
                )
            await tx.bump_watchlist_version(tenant)
            await self.auditor.record(
                tenant,
                "watchlist.remove",
                "",
                "removed",
                actor,
                watchlist=watchlist,
                fraudster=fraudster_id,
                tx=tx,
            )

    async def members(self, tenant: str, watchlist: str) -> list[tuple[str, int, int]]:
        """-> (fraudster id, samples, created ms) of a list; never the voiceprints."""
        async with self.store.transaction() as tx:
            await self._require_list(tenant, watchlist, tx)
            return [(r.fraudster_id, r.samples, r.created_ms) for r in await tx.fraudsters(tenant, watchlist)]

    async def _require_list(self, tenant: str, watchlist: str, tx: Transaction) -> None:
        check_id(tenant, "tenant")
        check_id(watchlist, "watchlist")
        if not any(w.name == watchlist for w in await tx.list_watchlists(tenant)):
            raise NotFound(f"tenant {tenant} has no watchlist {watchlist!r}")

    # -- screening ----------------------------------------------------------------------------

    async def index(self, tenant: str, tx: Transaction | None = None) -> Index:
        """The tenant's index as the store holds it now (rebuilt only when its version moved)."""
        async with within(self.store, tx) as t:
            version = await t.watchlist_version(tenant)
            known = self._indexes.get(tenant)
            if known is not None and known.version == version:
                return known
            lock = self._locks.setdefault(tenant, asyncio.Lock())
            async with lock:
                known = self._indexes.get(tenant)
                if known is not None and known.version == version:
                    return known
                rows = [
                    r for r in await t.fraudsters(tenant) if (r.encoder_id, r.encoder_version) == self.encoder
                ]
                payloads = await self.vault.open_fraudsters(tenant, rows, t)
                labels = tuple((r.watchlist, r.fraudster_id) for r in rows)
                index = await asyncio.to_thread(_build, version, payloads, labels)
                self._indexes[tenant] = index
                return index

    def threshold(self, policy: TenantPolicy) -> float | None:
        if self.calibration is None:
            return policy.voice.threshold
        return self.calibration.threshold_for(policy.fraud.watchlist_far)

    def screen(self, policy: TenantPolicy, index: Index, embedding: np.ndarray) -> DetectorRisk:
        threshold = self.threshold(policy)
        if threshold is None:
            return DetectorRisk(
                FRAUDSTER,
                UNAVAILABLE,
                reason="no voice calibration to set a watchlist threshold",
                version=VERSION,
            )
        if not index.labels:
            return DetectorRisk(
                FRAUDSTER,
                LOW,
                -1.0,
                threshold,
                "no fraudster on the tenant's watchlists",
                VERSION,
                "no match",
            )
        score, label = index.best(embedding)
        if score >= threshold and label is not None:
            return DetectorRisk(
                FRAUDSTER,
                HIGH,
                score,
                threshold,
                f"the voice matches fraudster {label[1]!r} of watchlist {label[0]!r} "
                f"(cosine {score:.3f} >= {threshold:.3f})",
                VERSION,
                "the voice matches a known fraudster",
            )
        return DetectorRisk(
            FRAUDSTER,
            LOW,
            score,
            threshold,
            f"no match among {len(index.labels)} listed voices (best cosine {score:.3f} < {threshold:.3f})",
            VERSION,
            "no match",
        )
