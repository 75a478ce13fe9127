"""The voices of recent callers, kept briefly so a fraudster can be listed from a finished call.

Per claimed customer, the pooled voiceprint of each of the latest KEEP scored calls (not
audio), sealed as customer state and named by a digest of the call id; older than
RETENTION_S it is never returned and is deleted at the next call. Erasing the customer
erases them with the rest of their state.
"""

from __future__ import annotations

import hashlib
import struct
import time

import numpy as np

from authsvc.errors import NotFound
from authsvc.scoring.cosine import embedding_from_bytes, embedding_to_bytes

PREFIX = "caller."
KEEP = 5
RETENTION_S = 86400.0


def _name(session_id: str) -> str:
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()[:24]


async def keep(ctx, tenant: str, customer_id: str, session_id: str, embedding: np.ndarray) -> None:
    now_ms = int(time.time() * 1000)
    payload = struct.pack("<q", now_ms) + embedding_to_bytes(np.asarray(embedding, np.float32))
    async with ctx.store.transaction() as tx:
        if await tx.lock_customer(tenant, customer_id) is None:
            return  # erased meanwhile: nothing is kept
        names = [n for n in await tx.state_names(tenant, customer_id) if n.startswith(PREFIX)]
        kept = []
        for n in names:
            blob = await ctx.vault.load_state(tenant, customer_id, n, tx)
            at = struct.unpack("<q", blob[:8])[0] if blob else 0
            kept.append((at, n))
        kept.sort()
        stale = [n for at, n in kept if now_ms - at > RETENTION_S * 1000]
        fresh = [n for at, n in kept if n not in stale and n != _name(session_id)]
        for n in stale + fresh[: max(0, len(fresh) - (KEEP - 1))]:
            await tx.delete_state(tenant, customer_id, n)
        await ctx.vault.put_state(tenant, customer_id, _name(session_id), payload, tx)


async def voice_of(ctx, tenant: str, customer_id: str, session_id: str) -> np.ndarray:
    """The caller's voiceprint of a recent call that claimed `customer_id`; NotFound otherwise."""
    blob = await ctx.vault.load_state(tenant, customer_id, _name(session_id))
    if blob is None or time.time() * 1000 - struct.unpack("<q", blob[:8])[0] > RETENTION_S * 1000:
        raise NotFound(
            f"no recent scored call {session_id!r} claiming {tenant}/{customer_id} "
            f"(callers' voices are kept {RETENTION_S / 3600:g} h, the latest {KEEP} per customer)"
        )
    return embedding_from_bytes(blob[8:])
