"""Envelope encryption of biometric templates with AES-256-GCM (`cryptography`).

A master key (key file created on first start with mode 0600, or the
AUTHSVC_MASTER_KEY environment variable) wraps one random data key per tenant;
data keys encrypt templates. Associated data binds each ciphertext to its
tenant, customer, modality and encoder, so a ciphertext copied onto another
record fails authentication instead of silently scoring someone else.
Erasing a tenant's data key crypto-shreds every template of that tenant.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.errors import ConfigError, IntegrityError

MASTER_KEY_ENV = "AUTHSVC_MASTER_KEY"
KEY_FILE_NAME = "master.key"
NONCE_BYTES = 12  # 96-bit nonces, fresh from os.urandom for every message
_FORMAT = b"\x01"  # blob layout version: 0x01 || nonce || ciphertext+tag


@dataclass(frozen=True)
class MasterKey:
    key: bytes

    @property
    def key_id(self) -> str:
        """Public fingerprint, stored beside wrapped keys so a wrong master key is named, not guessed."""
        return hashlib.sha256(b"authsvc-master-key-id" + self.key).hexdigest()[:16]


def _decode_key(text: str, origin: str) -> MasterKey:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{origin}: master key is not valid base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{origin}: master key must be 32 bytes (AES-256), got {len(key)}")
    return MasterKey(key)


def load_master_key(
    data_dir: Path,
    env: dict[str, str] | None = None,
    sealed: bool = False,
    sealed_by: set[str] | None = None,
    where: str = "",
) -> MasterKey:
    """The environment variable wins; otherwise read `data_dir/master.key`, creating it once.

    `sealed`: the store `where` already holds data sealed by a master key; `sealed_by`: the ids
    of those keys, where recorded. A key is created only when the store holds nothing sealed
    (a missing key file is never replaced by a new key over existing data), and a key that is
    not the one that sealed the data is refused at start, not at the first request."""
    env = os.environ if env is None else env
    if env.get(MASTER_KEY_ENV):
        return _check_sealed_by(_decode_key(env[MASTER_KEY_ENV], MASTER_KEY_ENV), sealed_by, where)
    path = data_dir / KEY_FILE_NAME
    if (sealed or sealed_by) and not path.exists():
        ids = f" {', '.join(sorted(sealed_by))}" if sealed_by else ""
        raise ConfigError(
            f"{path} is missing, but {where or 'the store'} holds data sealed by master key{ids}; "
            f"restore the key file from its backup (mode 0600) or set {MASTER_KEY_ENV}. "
            "A new key would not open that data, so none is created."
        )
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path}: key file is readable by group or others (mode {mode:o}); run chmod 600"
            ) from None
        return _check_sealed_by(_decode_key(path.read_text(), str(path)), sealed_by, where)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")
    return _decode_key(path.read_text(), str(path))


def _check_sealed_by(key: MasterKey, sealed_by: set[str] | None, where: str) -> MasterKey:
    if sealed_by and key.key_id not in sealed_by:
        raise ConfigError(
            f"master key {key.key_id} is not the key that sealed the data in {where or 'the store'} "
            f"({', '.join(sorted(sealed_by))}); give this node the same master key as the others"
        )
    return key


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return _FORMAT + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    if blob[:1] != _FORMAT or len(blob) < 1 + NONCE_BYTES + 16:
        raise IntegrityError(f"{what}: unknown ciphertext format")
    try:
        return AESGCM(key).decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise IntegrityError(
            f"{what}: ciphertext failed authentication (tampered, moved to another record, or wrong key)"
        ) from None


def _aad(*parts: str) -> bytes:
    # Length-prefixed so ("ab", "c") and ("a", "bc") never collide.
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def data_key_aad(tenant: str) -> bytes:
    return _aad("authsvc/data-key/v1", tenant)


def template_aad(
    tenant: str, customer_id: str, modality: str, encoder_id: str, encoder_version: str
) -> bytes:
    return _aad("authsvc/template/v1", tenant, customer_id, modality, encoder_id, encoder_version)


def label_aad(tenant: str, customer_id: str, modality: str) -> bytes:
    return _aad("authsvc/label/v1", tenant, customer_id, modality)


def state_aad(tenant: str, customer_id: str, name: str) -> bytes:
    return _aad("authsvc/state/v1", tenant, customer_id, name)


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
