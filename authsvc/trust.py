"""Signed assertions, persisted: the service's Ed25519 key ring and assertion use counts.

An AUTHENTICATED decision carries an assertion; another channel of the same
tenant validates it instead of asking the customer again. The key ring is
sealed with the master key in the store and rotates by age: a new key signs
once the active one is older than `rotate_after_s`; old public keys verify
until their tokens have expired. Use counts live in the store, so replay
limits hold across restarts (and across instances sharing a database).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.policy.engine import IssuedAssertion
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup import assertions as a
from authsvc.store.base import Store

_RING = "assertion-signing-keys"
ROTATE_AFTER_S = 24 * 3600.0
# Old keys verify for this long after rotation: longer than any policy's assertion lifetime.
RETIRE_AFTER_S = 2 * 86400.0


class _StoreReplayGuard:
    def __init__(self, store: Store, tenant: str) -> None:
        self.store, self.tenant = store, tenant

    def consume(self, key: str, max_uses: int, forget_at: float, now: float) -> bool:
        uses = self.store.use_assertion(key, self.tenant, int(forget_at * 1000), int(now * 1000))
        return uses <= max_uses


class AssertionAuthority:
    def __init__(
        self,
        store: Store,
        master: crypto.MasterKey,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
        rotate_after_s: float = ROTATE_AFTER_S,
    ) -> None:
        self.store, self._master, self.auditor, self.clock = store, master, auditor, clock
        self.rotate_after_s = rotate_after_s
        self._lock = threading.Lock()
        self._ring = self._load_or_create()

    def _load_or_create(self) -> a.SigningKeyRing:
        blob = self.store.get_secret(_RING)
        if blob is not None:
            raw = crypto.open_sealed(self._master.key, blob, a.keyring_aad(_RING), "assertion signing keys")
            return a.SigningKeyRing.from_bytes(raw)
        ring = a.SigningKeyRing.generate(self.clock(), retire_after_s=RETIRE_AFTER_S)
        self._save(ring)
        return ring

    def _save(self, ring: a.SigningKeyRing) -> None:
        self.store.put_secret(_RING, crypto.seal(self._master.key, ring.to_bytes(), a.keyring_aad(_RING)))

    def rotate(self) -> str:
        with self._lock:
            kid = self._ring.rotate(self.clock())
            self._save(self._ring)
            return kid

    def _maybe_rotate(self) -> None:
        if self.clock() - self._ring.active_created_at > self.rotate_after_s:
            self.rotate()

    def issue(
        self, policy: TenantPolicy, customer_id: str, methods: tuple[str, ...], aal: str, channel: str
    ) -> IssuedAssertion:
        self._maybe_rotate()
        with self._lock:
            token, claims = a.issue(
                self._ring,
                tenant=policy.tenant,
                customer_id=customer_id,
                methods=methods,
                aal=aal,
                channel=channel,
                now=self.clock(),
                lifetime_s=math.ceil(policy.assertion.lifetime_s),
            )
        self.auditor.record(
            policy.tenant, "assertion.issue", customer_id, "issued", id=claims.jti, channel=channel
        )
        return _issued(token, claims)

    def validate(self, policy: TenantPolicy, token: str, channel: str) -> IssuedAssertion:
        """The assertion if `policy.tenant` may accept it on `channel` now; raises otherwise."""
        try:
            claims = a.validate(
                self._ring,
                token,
                policy.tenant,
                self.clock(),
                _StoreReplayGuard(self.store, policy.tenant),
                max_uses=policy.assertion.max_uses,
            )
        except a.AssertionRejected as exc:
            self.auditor.record(policy.tenant, "assertion.validate", "", exc.reason.lower(), channel=channel)
            raise
        self.auditor.record(
            policy.tenant,
            "assertion.validate",
            claims.customer_id,
            "accepted",
            id=claims.jti,
            channel=channel,
            issued_on=claims.channel,
        )
        return _issued(token, claims)


def _issued(token: str, c: a.Assertion) -> IssuedAssertion:
    return IssuedAssertion(
        token=token,
        id=c.jti,
        tenant=c.tenant,
        customer_id=c.customer_id,
        methods=c.methods,
        assurance_level=c.aal,
        channel=c.channel,
        issued_at=float(c.issued_at),
        expires_at=float(c.expires_at),
        key_id=c.kid,
    )
