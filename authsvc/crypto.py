"""Envelope encryption of biometric templates with AES-256-GCM (`cryptography`).

A master key (a key file created on first start with mode 0600, a key file
mounted from elsewhere, the AUTHSVC_MASTER_KEY environment variable, or a
`python:` provider that asks a KMS) wraps one random data key per tenant;
data keys encrypt templates. Associated data binds each ciphertext to its
tenant, customer, modality and encoder, so a ciphertext copied onto another
record fails authentication instead of silently scoring someone else.
Erasing a tenant's data key crypto-shreds every template of that tenant.
The master key wraps nothing but data keys, so rotating it re-wraps those
rows and re-encrypts no template.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authsvc.errors import ConfigError, IntegrityError
from authsvc.files import write_private

MASTER_KEY_ENV = "AUTHSVC_MASTER_KEY"
MASTER_KEY_FILE_ENV = "AUTHSVC_MASTER_KEY_FILE"
MASTER_KEY_PROVIDER_ENV = "AUTHSVC_MASTER_KEY_PROVIDER"
# The key being rotated away from (`authsvc keys rotate-master`): still opens what it wrapped.
PREVIOUS_MASTER_KEY_ENV = "AUTHSVC_PREVIOUS_MASTER_KEY"
KEY_FILE_NAME = "master.key"
NONCE_BYTES = 12  # 96-bit nonces, fresh from os.urandom for every message
_FORMAT = b"\x01"  # blob layout version: 0x01 || nonce || ciphertext+tag


def key_id_of(key: bytes) -> str:
    """Public fingerprint, stored beside wrapped keys so a wrong master key is named, not guessed."""
    return hashlib.sha256(b"authsvc-master-key-id" + key).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKey:
    """The master key that wraps new data keys, and during a rotation the previous ones, which
    still open the data keys they wrapped until `authsvc keys rotate-master` re-wraps them."""

    key: bytes
    previous: tuple[bytes, ...] = ()

    @property
    def key_id(self) -> str:
        return key_id_of(self.key)

    def ids(self) -> set[str]:
        return {key_id_of(k) for k in (self.key, *self.previous)}

    def by_id(self, key_id: str) -> bytes | None:
        return next((k for k in (self.key, *self.previous) if key_id_of(k) == key_id), None)

    def ring(self) -> tuple[bytes, ...]:
        return (self.key, *self.previous)


class MasterKeyProvider(Protocol):
    """A `python:package.module:ClassName` plug-in that fetches the master key, e.g. by asking a
    KMS or HSM to unwrap it (docs/keys.md). Instantiated without arguments."""

    def load(self) -> bytes:
        """The 32-byte master key."""
        ...


@dataclass(frozen=True)
class KeySource:
    """Where a node's master key comes from; the first one set wins, in this order."""

    provider: str | None = None  # "python:package.module:ClassName"
    key_file: Path | None = None  # a file outside the data directory (a mounted secret)
    previous_file: Path | None = None  # the key being rotated away from

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> KeySource:
        env = os.environ if env is None else env
        provider = given.get("provider") or env.get(MASTER_KEY_PROVIDER_ENV) or None
        key_file = given.get("key_file") or env.get(MASTER_KEY_FILE_ENV) or None
        return cls(provider, Path(key_file) if key_file else None, given.get("previous_file"))


def _decode_key(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{origin}: master key is not valid base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{origin}: master key must be 32 bytes (AES-256), got {len(key)}")
    return key


def read_key_file(path: Path) -> bytes:
    """A base64 key from a file only its owner can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the master key ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigError(f"{path}: key file is readable by group or others (mode {mode:o}); run chmod 600")
    return _decode_key(text, str(path))


def new_key_file(path: Path) -> bytes:
    """Creates `path` (0600) holding a new random key; refuses to overwrite one."""
    try:
        write_private(path, base64.b64encode(AESGCM.generate_key(bit_length=256)).decode())
    except FileExistsError:
        raise ConfigError(f"{path} exists; a key file is never overwritten") from None
    return read_key_file(path)


def _from_provider(spec: str) -> bytes:
    from authsvc.plugins import instantiate

    scheme, _, target = spec.partition(":")
    if scheme != "python":
        raise ConfigError(f"master key provider {spec!r}: expected 'python:package.module:ClassName'")
    provider = instantiate(spec, target, "master key provider", "load")
    try:
        key = provider.load()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"master key provider {spec!r}: load() failed: {exc}") from exc
    if not isinstance(key, bytes | bytearray) or len(key) != 32:
        raise ConfigError(f"master key provider {spec!r}: load() must return 32 bytes")
    return bytes(key)


def load_master_key(
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    sealed: bool = False,
    sealed_by: set[str] | None = None,
    where: str = "",
    source: KeySource | None = None,
) -> MasterKey:
    """The node's master key: a `python:` provider, a key file, $AUTHSVC_MASTER_KEY, else
    `data_dir/master.key`, created once.

    `sealed`: the store `where` already holds data sealed by a master key; `sealed_by`: the ids
    of those keys, where recorded. A key is created only when the store holds nothing sealed
    (a missing key file is never replaced by a new key over existing data), and a node whose
    keys do not include every key that sealed the data is refused at start, not at the first
    request."""
    env = os.environ if env is None else env
    source = source or KeySource.from_env(env)
    previous: tuple[bytes, ...] = ()
    if source.previous_file:
        previous = (read_key_file(source.previous_file),)
    elif env.get(PREVIOUS_MASTER_KEY_ENV):
        previous = (_decode_key(env[PREVIOUS_MASTER_KEY_ENV], PREVIOUS_MASTER_KEY_ENV),)
    if source.provider:
        key = _from_provider(source.provider)
    elif source.key_file is None and env.get(MASTER_KEY_ENV):
        key = _decode_key(env[MASTER_KEY_ENV], MASTER_KEY_ENV)
    else:
        path = source.key_file or data_dir / KEY_FILE_NAME
        if path.exists():
            key = read_key_file(path)
        elif sealed or sealed_by:
            ids = f" {', '.join(sorted(sealed_by))}" if sealed_by else ""
            raise ConfigError(
                f"{path} is missing, but {where or 'the store'} holds data sealed by master key{ids}; "
                f"restore the key file from its backup (mode 0600) or set {MASTER_KEY_ENV}. "
                "A new key would not open that data, so none is created."
            )
        else:
            key = new_key_file(path)
    return _check_sealed_by(MasterKey(key, previous), sealed_by, where)


def _check_sealed_by(key: MasterKey, sealed_by: set[str] | None, where: str) -> MasterKey:
    missing = sorted((sealed_by or set()) - key.ids())
    if missing:
        during = " (and, during a rotation, the previous one)" if len(sealed_by or ()) > 1 else ""
        raise ConfigError(
            f"master key {key.key_id} is not the key that sealed the data in {where or 'the store'} "
            f"({', '.join(missing)}); give this node the same master key as the others{during}"
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


def fraudster_aad(
    tenant: str, watchlist: str, fraudster_id: str, encoder_id: str, encoder_version: str
) -> bytes:
    return _aad("authsvc/fraudster/v1", tenant, watchlist, fraudster_id, encoder_id, encoder_version)


def label_aad(tenant: str, customer_id: str, modality: str) -> bytes:
    return _aad("authsvc/label/v1", tenant, customer_id, modality)


def service_secret_aad(name: str) -> bytes:
    return _aad("authsvc/service-secret/v1", name)


def state_aad(tenant: str, customer_id: str, name: str) -> bytes:
    return _aad("authsvc/state/v1", tenant, customer_id, name)


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)
