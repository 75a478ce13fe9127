"""Secrets that bridge peers sign with: derived, never stored.

Genesys signs each AudioHook upgrade with a client secret it holds beside the API key. The
secret is HMAC(tenant subkey, credential id): only this service (holding the tenant's data
key) can compute it, it needs no table and no erasure of its own, and it dies with its API
key (a revoked or expired key is refused before any signature is checked). A new secret
means a new key.
"""

from __future__ import annotations

import hashlib
import hmac

PURPOSE = "audiohook-client-secret"


async def audiohook_client_secret(vault, tenant: str, credential_id: str) -> bytes:
    """The 32-byte client secret of API key `credential_id` (base64 it for Genesys)."""
    key = await vault.subkey(tenant, PURPOSE)
    return hmac.new(key, credential_id.encode(), hashlib.sha256).digest()
