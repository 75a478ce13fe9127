"""Secrets that bridge peers sign with.

Genesys signs each AudioHook upgrade with a client secret it holds beside the API key. That
secret is derived, never stored: HMAC(tenant subkey, credential id). Only this service (holding
the tenant's data key) can compute it, it needs no table and no erasure of its own, and it dies
with its API key (a revoked or expired key is refused before any signature is checked); a new
secret means a new key. Twilio signs with the account's own auth token, which must therefore be
kept: sealed under another subkey of the tenant's data key, in the store's secrets.
"""

from __future__ import annotations

import hashlib
import hmac

from authsvc import crypto
from authsvc.errors import IntegrityError

PURPOSE = "audiohook-client-secret"


async def audiohook_client_secret(vault, tenant: str, credential_id: str) -> bytes:
    """The 32-byte client secret of API key `credential_id` (base64 it for Genesys)."""
    key = await vault.subkey(tenant, PURPOSE)
    return hmac.new(key, credential_id.encode(), hashlib.sha256).digest()


# Twilio signs each Media Streams upgrade with the account's auth token (HMAC-SHA1 of the URL),
# so the token itself must be kept: sealed under a subkey of the tenant's data key.
TWILIO_PURPOSE = "twilio-auth-token"


def _twilio_name(tenant: str) -> str:
    return f"{TWILIO_PURPOSE}/{tenant}"


async def set_twilio_auth_token(vault, store, tenant: str, token: str) -> None:
    """Stores (or replaces) tenant's Twilio auth token, sealed."""
    key = await vault.subkey(tenant, TWILIO_PURPOSE)
    blob = crypto.seal(key, token.encode(), _twilio_name(tenant).encode())
    async with store.transaction() as tx:
        current = await tx.get_secret(_twilio_name(tenant), for_update=True)
        if not await tx.put_secret(_twilio_name(tenant), blob, current.version if current else 0):
            raise IntegrityError("the Twilio auth token changed meanwhile; try again")


async def twilio_auth_token(vault, store, tenant: str) -> str | None:
    """The tenant's Twilio auth token, or None when none is set (its Twilio bridge is off)."""
    async with store.transaction() as tx:
        secret = await tx.get_secret(_twilio_name(tenant))
    if secret is None:
        return None
    key = await vault.subkey(tenant, TWILIO_PURPOSE)
    return crypto.open_sealed(
        key, secret.blob, _twilio_name(tenant).encode(), f"{tenant}'s Twilio token"
    ).decode()
