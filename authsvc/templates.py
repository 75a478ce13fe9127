"""Encrypted template storage: seals payloads per tenant before they reach the store.

Sits between the domain (enrollment, sessions) and the `Store`, so no backend
ever sees a plaintext template and no caller handles keys.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authsvc import crypto
from authsvc.errors import ConfigError
from authsvc.store.base import Store, TemplateRow

# A growing profile has one row; its digest column is this constant.
PROFILE_DIGEST = "profile"


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
        self._data_keys: dict[str, bytes] = {}
        self._lock = threading.Lock()
        # A separate key for sample digests: they dedupe enrollment without
        # letting anyone holding the database confirm a guessed recording.
        self._digest_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/sample-digest/v1"
        ).derive(master.key)

    def _data_key(self, tenant: str) -> bytes:
        with self._lock:
            if tenant in self._data_keys:
                return self._data_keys[tenant]
            stored = self.store.get_data_key(tenant)
            if stored is None:
                wrapped = crypto.seal(self._master.key, crypto.new_data_key(), crypto.data_key_aad(tenant))
                stored = self.store.put_data_key(tenant, self._master.key_id, wrapped)
            key_id, wrapped = stored
            if key_id != self._master.key_id:
                raise ConfigError(
                    f"tenant {tenant!r}: data key is wrapped by master key {key_id}, "
                    f"but this service has master key {self._master.key_id}"
                )
            key = crypto.open_sealed(
                self._master.key, wrapped, crypto.data_key_aad(tenant), f"data key of tenant {tenant!r}"
            )
            self._data_keys[tenant] = key
            return key

    def subkey(self, tenant: str, purpose: str) -> bytes:
        """A key for `purpose` derived from the tenant's data key (HKDF), so no key serves two uses."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"authsvc/" + purpose.encode()
        ).derive(self._data_key(tenant))

    def sample_digest(self, tenant: str, customer_id: str, modality: str, sample: bytes) -> str:
        msg = "\x1f".join((tenant, customer_id, modality)).encode() + b"\x00" + sample
        return hmac.new(self._digest_key, msg, hashlib.sha256).hexdigest()

    def _sealed_row(
        self,
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
        blob = crypto.seal(self._data_key(tenant), payload, aad)
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

    def put(
        self,
        tenant: str,
        customer_id: str,
        modality: str,
        encoder_id: str,
        encoder_version: str,
        digest: str,
        payload: bytes,
        label: str = "",
    ) -> bool:
        """Seals and stores one template; False if this sample digest is already enrolled."""
        return self.store.add_template(
            self._sealed_row(
                tenant, customer_id, modality, encoder_id, encoder_version, digest, payload, label
            )
        )

    def replace(
        self,
        tenant: str,
        customer_id: str,
        modality: str,
        encoder_id: str,
        encoder_version: str,
        payload: bytes,
    ) -> None:
        """Seals and stores a template that grows in place (a keystroke profile): one row per identity."""
        self.store.replace_template(
            self._sealed_row(
                tenant, customer_id, modality, encoder_id, encoder_version, PROFILE_DIGEST, payload, ""
            )
        )

    def put_state(self, tenant: str, customer_id: str, name: str, payload: bytes) -> None:
        """Seals per-customer state (factor secrets, counters) under the tenant's data key."""
        blob = crypto.seal(self._data_key(tenant), payload, crypto.state_aad(tenant, customer_id, name))
        self.store.put_state(tenant, customer_id, name, blob, int(time.time() * 1000))

    def load_state(self, tenant: str, customer_id: str, name: str) -> bytes | None:
        blob = self.store.get_state(tenant, customer_id, name)
        if blob is None:
            return None
        aad = crypto.state_aad(tenant, customer_id, name)
        return crypto.open_sealed(self._data_key(tenant), blob, aad, f"{name} of {tenant}/{customer_id}")

    def load(self, tenant: str, customer_id: str, modality: str | None) -> list[Template]:
        """Decrypts the customer's templates; raises IntegrityError on any tampered row."""
        rows = self.store.templates(tenant, customer_id, modality)
        if not rows:
            return []
        key = self._data_key(tenant)
        out = []
        for r in rows:
            aad = crypto.template_aad(tenant, customer_id, r.modality, r.encoder_id, r.encoder_version)
            what = f"template of {tenant}/{customer_id} ({r.modality}, {r.encoder_id})"
            out.append(
                Template(
                    r.modality,
                    r.encoder_id,
                    r.encoder_version,
                    crypto.open_sealed(key, r.blob, aad, what),
                    r.created_ms,
                    r.label,
                )
            )
        return out
