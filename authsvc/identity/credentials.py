"""API keys and client-certificate identities, and turning either into a principal.

An API key is `ask_<id>_<secret>`: 64 random bits name the credential (so a
lookup is one primary-key read), 256 random bits are the secret. Only the
SHA-256 of the whole key is stored; the key is shown once, at creation. A key
this strong needs no slow password hash: nothing short of the key matches.
Every request reads the credential afresh, so a revocation or an expiry holds
from the next request on, on every node.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import replace

from authsvc.audit import Auditor
from authsvc.errors import AlreadyExists, InvalidInput, NotFound, Unauthenticated
from authsvc.identifiers import check_id, is_id
from authsvc.identity.principal import Principal
from authsvc.identity.roles import PLATFORM_ADMIN, check_roles
from authsvc.store.base import CredentialRecord, Store, Transaction

API_KEY = "api_key"
CERTIFICATE = "certificate"
# Every API key starts so: scanners (and the access log, which never repeats one) recognise it.
KEY_PREFIX = "ask_"
_KEY = re.compile(rf"^{KEY_PREFIX}([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
# last_used_ms is written at most this often per credential: a write per request would make
# every call a write transaction.
TOUCH_EVERY_MS = 60_000
MAX_DESCRIPTION = 200
# A certificate identity: a SAN URI (spiffe://…, urn:…) or a DNS name.
_SUBJECT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[!-~]{1,500}$|^[A-Za-z0-9*][A-Za-z0-9.-]{0,252}$")


def recordable_id(value: str) -> bool:
    """Whether a caller-chosen id (a tenant, customer or call id) may be repeated in a log or
    the audit trail: a well-formed identifier (so bounded), and not an API key pasted into the
    wrong field (a key's characters are an identifier's)."""
    return bool(value) and is_id(value) and not value.startswith(KEY_PREFIX)


def key_id(key: str) -> str:
    """The credential id an API key names ("key_<16 hex>"; "" when it is no authsvc key): its
    public half, safe to log; the secret half never is."""
    match = _KEY.fullmatch(key)
    return f"key_{match.group(1)}" if match else ""


def _hash(key: str) -> str:
    return hashlib.sha256(b"authsvc-api-key-v1:" + key.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """-> (credential id, the key to hand to the caller once)."""
    ident = secrets.token_hex(8)
    return f"key_{ident}", f"{KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _check_description(text: str) -> str:
    if len(text) > MAX_DESCRIPTION or not text.isprintable():
        raise InvalidInput("description", f"at most {MAX_DESCRIPTION} printable characters")
    return text


def _check_expiry(expires_ms: int, now_ms: int) -> int:
    if expires_ms and expires_ms <= now_ms:
        raise InvalidInput("expires_unix_ms", "is in the past")
    return expires_ms


class Credentials:
    def __init__(self, store: Store, auditor: Auditor) -> None:
        self.store = store
        self.auditor = auditor

    async def _require_tenant(self, tx: Transaction, tenant: str) -> None:
        if tenant:
            check_id(tenant, "tenant")
            if await tx.get_tenant(tenant) is None:
                raise NotFound(f"tenant {tenant!r} is not provisioned (authsvc tenants create)")

    async def create_api_key(
        self,
        tenant: str,
        roles: list[str] | tuple[str, ...],
        description: str = "",
        expires_ms: int = 0,
        actor: str = "service",
    ) -> tuple[CredentialRecord, str]:
        now = _now_ms()
        ident, key = new_api_key()
        record = CredentialRecord(
            id=ident,
            tenant=tenant,
            kind=API_KEY,
            roles=check_roles(list(roles), tenant),
            created_ms=now,
            created_by=actor,
            secret_hash=_hash(key),
            description=_check_description(description),
            expires_ms=_check_expiry(expires_ms, now),
        )
        await self._insert(record)
        return record, key

    async def map_certificate(
        self,
        tenant: str,
        subject: str,
        roles: list[str] | tuple[str, ...],
        description: str = "",
        expires_ms: int = 0,
        actor: str = "service",
    ) -> CredentialRecord:
        if not _SUBJECT.fullmatch(subject):
            raise InvalidInput("subject", "must be a certificate SAN: a URI (spiffe://…) or a DNS name")
        now = _now_ms()
        record = CredentialRecord(
            id=f"cert_{secrets.token_hex(8)}",
            tenant=tenant,
            kind=CERTIFICATE,
            roles=check_roles(list(roles), tenant),
            created_ms=now,
            created_by=actor,
            subject=subject,
            description=_check_description(description),
            expires_ms=_check_expiry(expires_ms, now),
        )
        await self._insert(record)
        return record

    async def _insert(self, record: CredentialRecord) -> None:
        """Stores a new credential of a provisioned tenant, with its audit row."""
        async with self.store.transaction() as tx:
            await self._require_tenant(tx, record.tenant)
            if record.subject and await tx.credentials_by_subject([record.subject]):
                raise AlreadyExists(
                    f"certificate identity {record.subject!r} is already mapped; revoke it first"
                )
            await tx.put_credential(record)
            await self._audit(tx, record, "credential.create", record.created_by)

    async def _audit(self, tx: Transaction, record: CredentialRecord, action: str, actor: str) -> None:
        await self.auditor.record(
            record.tenant,
            action,
            "",
            "ok",
            actor,
            tx=tx,
            credential=record.id,
            kind=record.kind,
            roles=list(record.roles),
        )

    async def list(self, tenant: str) -> list[CredentialRecord]:
        async with self.store.transaction() as tx:
            await self._require_tenant(tx, tenant)
            return await tx.list_credentials(tenant)

    async def revoke(self, tenant: str, credential_id: str, actor: str = "service") -> CredentialRecord:
        async with self.store.transaction() as tx:
            record = await tx.get_credential(credential_id)
            # Another tenant's credential is "not found" here: its existence is not disclosed.
            if record is None or record.tenant != tenant:
                raise NotFound(f"no credential {credential_id!r} in tenant {tenant or '(platform)'!r}")
            if not record.revoked_ms:
                await tx.revoke_credential(credential_id, _now_ms())
                await self._audit(tx, record, "credential.revoke", actor)
            revoked = await tx.get_credential(credential_id)
        assert revoked is not None
        return revoked

    async def authenticate_key(self, key: str, source: str) -> Principal:
        ident = key_id(key)
        if not ident:
            raise Unauthenticated("CREDENTIAL_INVALID", "the bearer credential is not an authsvc API key")
        async with self.store.transaction() as tx:
            record = await tx.get_credential(ident)
            # compare_digest: the time taken does not tell how much of a guessed hash matched.
            if record is None or not hmac.compare_digest(record.secret_hash, _hash(key)):
                raise Unauthenticated("CREDENTIAL_INVALID", "the API key is not valid")
            return await self._principal(tx, record, source)

    async def authenticate_certificate(self, subjects: list[str], source: str) -> Principal:
        async with self.store.transaction() as tx:
            found = await tx.credentials_by_subject(subjects)
            if not found:
                raise Unauthenticated(
                    "CERTIFICATE_NOT_MAPPED",
                    "the client certificate's identity is not mapped to a principal",
                )
            if len({r.id for r in found}) > 1:
                raise Unauthenticated(
                    "CERTIFICATE_AMBIGUOUS",
                    "the client certificate names several mapped identities; map exactly one",
                )
            return await self._principal(tx, found[0], source)

    async def _principal(self, tx: Transaction, record: CredentialRecord, source: str) -> Principal:
        now = _now_ms()
        if record.revoked_ms:
            raise Unauthenticated("CREDENTIAL_REVOKED", "the credential has been revoked")
        if record.expires_ms and record.expires_ms <= now:
            raise Unauthenticated("CREDENTIAL_EXPIRED", "the credential has expired")
        if now - record.last_used_ms >= TOUCH_EVERY_MS:
            await tx.touch_credential(record.id, now)
        return Principal(record.id, record.tenant, frozenset(record.roles), source, record.kind)

    async def bootstrap(self, actor: str = "first-start") -> tuple[CredentialRecord, str] | None:
        """A platform-admin API key when the store has no live platform credential (first start);
        -> (its record, the key), or None when one exists."""
        async with self.store.transaction() as tx:
            live = [r for r in await tx.list_credentials("") if not r.revoked_ms]
        if live:
            return None
        return await self.create_api_key("", [PLATFORM_ADMIN], "created at first start", actor=actor)


def redacted(record: CredentialRecord) -> CredentialRecord:
    """The record as shown to callers: never the hash of a key."""
    return replace(record, secret_hash="")
