"""Master-key rotation: every data key is re-wrapped under the new master key; no template,
factor secret or signing key is re-encrypted, since those are sealed by data keys.

Online, in three steps (docs/keys.md): give every node the new key with the old one as its
previous key (`--previous-master-key-file`), run `authsvc keys rotate-master`, then drop the
previous key. Nodes keep serving throughout: while both keys are configured a node opens a
data key wrapped by either.
"""

from __future__ import annotations

from dataclasses import dataclass

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.errors import ConfigError, IntegrityError
from authsvc.stepup import assertions as a
from authsvc.store.base import Store
from authsvc.templates import TemplateVault
from authsvc.trust import LEGACY_RING, open_legacy_ring


@dataclass(frozen=True)
class Rotation:
    old_ids: tuple[str, ...]
    new_id: str
    rewrapped: int  # data keys re-wrapped now
    already: int  # data keys the new key wrapped before (a rotation resumed, or new tenants)


async def rotate_master(
    store: Store, old: crypto.MasterKey, new_key: bytes, actor: str = "operator"
) -> Rotation:
    """Re-wraps every data key (and the pre-0.3 signing ring) under `new_key`, in one unit of
    work: all of them or, on any error, none."""
    new = crypto.MasterKey(new_key)
    both = crypto.MasterKey(new_key, old.ring())
    if new.key_id == old.key_id:
        raise ConfigError("the new master key is the current one; create a new key file first")
    rewrapped = already = 0
    async with store.transaction() as tx:
        for tenant, key_id, wrapped in await tx.data_keys():
            if key_id == new.key_id:
                already += 1
                continue
            current = old.by_id(key_id)
            if current is None:
                raise ConfigError(
                    f"tenant {tenant!r}: data key is wrapped by master key {key_id}, which is neither "
                    f"the current key ({old.key_id}) nor the new one ({new.key_id})"
                )
            aad = crypto.data_key_aad(tenant)
            data_key = crypto.open_sealed(current, wrapped, aad, f"data key of tenant {tenant!r}")
            if not await tx.rewrap_data_key(tenant, key_id, new.key_id, crypto.seal(new.key, data_key, aad)):
                raise IntegrityError(f"tenant {tenant!r}: data key changed under its row lock")
            rewrapped += 1
        legacy = await tx.get_secret(LEGACY_RING, for_update=True)
        if legacy is not None:
            ring = open_legacy_ring(both, legacy, store.description)
            sealed = crypto.seal(new.key, ring.to_bytes(), a.keyring_aad(LEGACY_RING))
            if not await tx.put_secret(LEGACY_RING, sealed, expected_version=legacy.version):
                raise IntegrityError("the pre-0.3 signing ring changed under its row lock")
        auditor = Auditor(store, TemplateVault(store, both))
        await auditor.record(
            "",
            "keys.rotate_master",
            "",
            "rotated",
            actor,
            tx=tx,
            old=sorted(old.ids()),
            new=new.key_id,
            rewrapped=rewrapped,
        )
    return Rotation(tuple(sorted(old.ids())), new.key_id, rewrapped, already)
