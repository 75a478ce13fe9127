"""Encrypted template storage: seals payloads per tenant before they reach the store.

Sits between the domain (enrollment, sessions) and the `Store`, so no backend
ever sees a plaintext template and no caller handles keys. Every method takes
the caller's unit of work (`tx`) or runs in one of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc import crypto
from authsvc.errors import ConfigError
from authsvc.store.base import FraudsterRow, Store, TemplateRow, Transaction, within

# A growing profile has one row; its digest column is this constant.
PROFILE_DIGEST = "profile"
# Labels written since 0.2 are sealed; older rows' clear labels are sealed by `ready()`.
SEALED_LABEL = "sealed:1:"
# The sample-digest key, sealed under the platform's data key (tenant ''), so a master-key
# rotation leaves it, and every stored digest, as it was.
DIGEST_SECRET = "sample-digest-key"
_SERVICE_SECRETS = "service-secrets/v1"


@dataclass(frozen=True)
class Template:
    modality: str
    encoder_id: str
    encoder_version: str
    payload: bytes
    created_ms: int
    label: str


class TemplateVault:
    def __init__(self, store: Store, master: crypto.MasterKey) -> None:
        self.store = store
        self._master = master
        # Only keys read back from the store are cached, never one created in a unit of
        # work that may still roll back (and take the key, with all it sealed, with it).
        self._data_keys: dict[str, bytes] = {}
        self._subkeys: dict[tuple[str, str], bytes] = {}
        # A separate key for sample digests: they dedupe enrollment without
        # letting anyone holding the database confirm a guessed recording.
        self._digest_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/sample-digest/v1"
        ).derive(master.key)

    @property
    def master_key_id(self) -> str:
        return self._master.key_id

    async def ready(self) -> None:
        """Loads the stored sample-digest key (creating it on a new store) and seals any label an
        older version stored in clear. Called once when a service starts."""
        aad = crypto.service_secret_aad(DIGEST_SECRET)
        async with self.store.transaction() as tx:
            key = await self.subkey("", _SERVICE_SECRETS, tx)
            secret = await tx.get_secret(DIGEST_SECRET)
            if secret is None:
                # Until 0.3 the digest key was this derivation of the master key: storing its
                # value keeps the digests already stored valid.
                await tx.put_secret(
                    DIGEST_SECRET, crypto.seal(key, self._digest_key, aad), expected_version=0
                )
                secret = await tx.get_secret(DIGEST_SECRET)
            assert secret is not None
            digest_key = crypto.open_sealed(key, secret.blob, aad, "sample-digest key")
        self._digest_key = digest_key
        async with self.store.transaction() as tx:
            for row_id, tenant, customer_id, modality, label in await tx.clear_labels():
                data_key = await self._data_key(tenant, tx)
                await tx.set_template_label(
                    row_id, self._seal_label(data_key, tenant, customer_id, modality, label)
                )

    async def _data_key(self, tenant: str, tx: Transaction) -> bytes:
        key = self._data_keys.get(tenant)
        if key is not None:
            return key
        stored = await tx.get_data_key(tenant)
        cache = stored is not None
        if stored is None:
            wrapped = crypto.seal(self._master.key, crypto.new_data_key(), crypto.data_key_aad(tenant))
            # Another node may win the race; its key is then the one returned and used.
            stored = await tx.put_data_key(tenant, self._master.key_id, wrapped)
        key_id, wrapped = stored
        # During a master-key rotation a data key may still be wrapped by the previous key.
        master = self._master.by_id(key_id)
        if master is None:
            raise ConfigError(
                f"tenant {tenant!r}: data key is wrapped by master key {key_id}, "
                f"but this service has master key {self._master.key_id}"
            )
        key = crypto.open_sealed(
            master, wrapped, crypto.data_key_aad(tenant), f"data key of tenant {tenant!r}"
        )
        if cache:
            self._data_keys[tenant] = key
        return key

    async def subkey(self, tenant: str, purpose: str, tx: Transaction | None = None) -> bytes:
        """A key for `purpose` derived from the tenant's data key (HKDF), so no key serves two uses.
        Kept once the data key is (every audit row derives its chain key)."""
        known = self._subkeys.get((tenant, purpose))
        if known is not None:
            return known
        async with within(self.store, tx) as t:
            data_key = await self._data_key(tenant, t)
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/" + purpose.encode()
        ).derive(data_key)
        if tenant in self._data_keys:
            self._subkeys[(tenant, purpose)] = key
        return key

    def sample_digest(self, tenant: str, customer_id: str, modality: str, sample: bytes) -> str:
        msg = "\x1f".join((tenant, customer_id, modality)).encode() + b"\x00" + sample
        return hmac.new(self._digest_key, msg, hashlib.sha256).hexdigest()

    async def _sealed_row(
        self,
        tx: Transaction,
        tenant: str,
        customer_id: str,
        modality: str,
        encoder_id: str,
        encoder_version: str,
        digest: str,
        payload: bytes,
        label: str,
    ) -> TemplateRow:
        aad = crypto.template_aad(tenant, customer_id, modality, encoder_id, encoder_version)
        key = await self._data_key(tenant, tx)
        blob = crypto.seal(key, payload, aad)
        # Sealed too: an operator's label (a file name) may name the person, and a database
        # file or backup must not.
        if label:
            label = self._seal_label(key, tenant, customer_id, modality, label)
        return TemplateRow(
            tenant,
            customer_id,
            modality,
            encoder_id,
            encoder_version,
            digest,
            self._master.key_id,
            blob,
            int(time.time() * 1000),
            label,
        )

    @staticmethod
    def _seal_label(key: bytes, tenant: str, customer_id: str, modality: str, label: str) -> str:
        sealed = crypto.seal(key, label.encode(), crypto.label_aad(tenant, customer_id, modality))
        return SEALED_LABEL + base64.urlsafe_b64encode(sealed).decode()

    async def put(
        self,
        tenant: str,
        customer_id: str,
        modality: str,
        encoder_id: str,
        encoder_version: str,
        digest: str,
        payload: bytes,
        label: str = "",
        tx: Transaction | None = None,
    ) -> bool:
        """Seals and stores one template; False if this sample digest is already enrolled."""
        async with within(self.store, tx) as t:
            row = await self._sealed_row(
                t, tenant, customer_id, modality, encoder_id, encoder_version, digest, payload, label
            )
            return await t.add_template(row)

    async def replace(
        self,
        tenant: str,
        customer_id: str,
        modality: str,
        encoder_id: str,
        encoder_version: str,
        payload: bytes,
        tx: Transaction | None = None,
    ) -> None:
        """Seals and stores a template that grows in place (a keystroke profile): one row per identity."""
        async with within(self.store, tx) as t:
            row = await self._sealed_row(
                t, tenant, customer_id, modality, encoder_id, encoder_version, PROFILE_DIGEST, payload, ""
            )
            await t.replace_template(row)

    async def put_state(
        self, tenant: str, customer_id: str, name: str, payload: bytes, tx: Transaction | None = None
    ) -> None:
        """Seals per-customer state (factor secrets, counters) under the tenant's data key."""
        async with within(self.store, tx) as t:
            key = await self._data_key(tenant, t)
            blob = crypto.seal(key, payload, crypto.state_aad(tenant, customer_id, name))
            await t.put_state(tenant, customer_id, name, blob, int(time.time() * 1000))

    async def load_state(
        self, tenant: str, customer_id: str, name: str, tx: Transaction | None = None
    ) -> bytes | None:
        async with within(self.store, tx) as t:
            blob = await t.get_state(tenant, customer_id, name)
            if blob is None:
                return None
            key = await self._data_key(tenant, t)
        aad = crypto.state_aad(tenant, customer_id, name)
        return crypto.open_sealed(key, blob, aad, f"{name} of {tenant}/{customer_id}")

    async def load(
        self, tenant: str, customer_id: str, modality: str | None, tx: Transaction | None = None
    ) -> list[Template]:
        """Decrypts the customer's templates; raises IntegrityError on any tampered row."""
        async with within(self.store, tx) as t:
            rows = await t.templates(tenant, customer_id, modality)
            if not rows:
                return []
            key = await self._data_key(tenant, t)
        out = []
        for r in rows:
            aad = crypto.template_aad(tenant, customer_id, r.modality, r.encoder_id, r.encoder_version)
            what = f"template of {tenant}/{customer_id} ({r.modality}, {r.encoder_id})"
            label = r.label
            if label.startswith(SEALED_LABEL):
                sealed = base64.urlsafe_b64decode(label.removeprefix(SEALED_LABEL))
                label_aad = crypto.label_aad(tenant, customer_id, r.modality)
                label = crypto.open_sealed(key, sealed, label_aad, f"label of {what}").decode()
            out.append(
                Template(
                    r.modality,
                    r.encoder_id,
                    r.encoder_version,
                    crypto.open_sealed(key, r.blob, aad, what),
                    r.created_ms,
                    label,
                )
            )
        return out

    async def seal_fraudster(
        self,
        tenant: str,
        watchlist: str,
        fraudster_id: str,
        encoder_id: str,
        encoder_version: str,
        payload: bytes,
        samples: int,
        actor: str,
        tx: Transaction,
    ) -> FraudsterRow:
        """A watchlist entry's voiceprint, sealed under the tenant's data key like a template."""
        key = await self._data_key(tenant, tx)
        aad = crypto.fraudster_aad(tenant, watchlist, fraudster_id, encoder_id, encoder_version)
        return FraudsterRow(
            tenant,
            watchlist,
            fraudster_id,
            encoder_id,
            encoder_version,
            self._master.key_id,
            crypto.seal(key, payload, aad),
            samples,
            int(time.time() * 1000),
            actor,
        )

    async def open_fraudsters(self, tenant: str, rows: list[FraudsterRow], tx: Transaction) -> list[bytes]:
        if not rows:
            return []
        key = await self._data_key(tenant, tx)
        return [
            crypto.open_sealed(
                key,
                r.blob,
                crypto.fraudster_aad(tenant, r.watchlist, r.fraudster_id, r.encoder_id, r.encoder_version),
                f"watchlist entry {tenant}/{r.watchlist}/{r.fraudster_id}",
            )
            for r in rows
        ]

    async def tenant_payloads(
        self, tenant: str, modality: str, encoder_id: str, encoder_version: str, tx: Transaction
    ) -> dict[str, list[bytes]]:
        """customer id -> decrypted payloads of one modality and encoder across the tenant."""
        rows = await tx.tenant_templates(tenant, modality, encoder_id, encoder_version)
        if not rows:
            return {}
        key = await self._data_key(tenant, tx)
        out: dict[str, list[bytes]] = {}
        for r in rows:
            aad = crypto.template_aad(tenant, r.customer_id, modality, encoder_id, encoder_version)
            what = f"template of {tenant}/{r.customer_id} ({modality}, {encoder_id})"
            out.setdefault(r.customer_id, []).append(crypto.open_sealed(key, r.blob, aad, what))
        return out
