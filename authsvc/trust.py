"""Signed assertions, persisted: each tenant's Ed25519 key ring and assertion use counts.

An AUTHENTICATED decision carries an assertion; another channel of the same
tenant validates it instead of asking the customer again. Each tenant has a
key ring of its own, sealed in the store under a key derived from the tenant's
data key, so one tenant's signing key never signs for another and erasing a
tenant's data key retires its ring. A ring rotates by age: a new key signs
once the active one is older than `rotate_after_s`; old public keys verify
until their tokens have expired.

Several nodes share one ring. A rotation is a compare-and-swap on the
stored ring's version under its row lock, so two nodes rotating at once
produce one new key, never two rings that overwrite each other. Each node
re-reads a ring every `REFRESH_S`, and at once (at most once a second)
when a token names a key it does not know: another node rotated. Use
counts live in the store and are consumed by one atomic statement, so an
assertion with `max_uses = 1` is accepted once across all nodes.

Before 0.3 one ring, sealed by the master key, signed for every tenant; it is
kept to verify the tokens it signed until they expire, and signs nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.errors import ConfigError, IntegrityError
from authsvc.policy.engine import IssuedAssertion
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup import assertions as a
from authsvc.store.base import Secret, Store, Transaction

LEGACY_RING = "assertion-signing-keys"
_PURPOSE = "assertion-signing-keys/v1"
ROTATE_AFTER_S = 24 * 3600.0
# Old keys verify for this long after rotation: longer than any policy's assertion lifetime.
RETIRE_AFTER_S = 2 * 86400.0
# A node picks up another node's rotation within this long even without seeing a new key id.
REFRESH_S = 60.0
# Tokens naming unknown key ids re-read the ring at most this often (garbage must not load the store).
UNKNOWN_KEY_RELOAD_S = 1.0


def ring_name(tenant: str) -> str:
    return f"{LEGACY_RING}/{tenant}"


@dataclass
class _Loaded:
    ring: a.SigningKeyRing
    at: float


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
        self.vault = auditor.vault
        if not 1.0 <= rotate_after_s < math.inf:
            raise ConfigError(f"key rotation interval must be at least 1 s, got {rotate_after_s!r}")
        self.rotate_after_s = rotate_after_s
        self._rings: dict[str, _Loaded] = {}
        self.legacy: a.SigningKeyRing | None = None
        self._unknown_reload_at: dict[str, float] = {}

    @classmethod
    async def open(
        cls,
        store: Store,
        master: crypto.MasterKey,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
        rotate_after_s: float = ROTATE_AFTER_S,
    ) -> AssertionAuthority:
        authority = cls(store, master, auditor, clock, rotate_after_s)
        await authority._load_legacy()
        return authority

    async def _load_legacy(self) -> None:
        async with self.store.transaction() as tx:
            secret = await tx.get_secret(LEGACY_RING)
        self.legacy = open_legacy_ring(self._master, secret, self.store.description) if secret else None

    async def _ring_key(self, tenant: str, tx: Transaction) -> bytes:
        return await self.vault.subkey(tenant, _PURPOSE, tx)

    @staticmethod
    def _open(tenant: str, key: bytes, secret: Secret) -> a.SigningKeyRing:
        raw = crypto.open_sealed(
            key, secret.blob, a.keyring_aad(ring_name(tenant)), f"signing keys of {tenant!r}"
        )
        return a.SigningKeyRing.from_bytes(raw)

    @staticmethod
    def _seal(tenant: str, key: bytes, ring: a.SigningKeyRing) -> bytes:
        return crypto.seal(key, ring.to_bytes(), a.keyring_aad(ring_name(tenant)))

    def _adopt(self, tenant: str, ring: a.SigningKeyRing) -> a.SigningKeyRing:
        self._rings[tenant] = _Loaded(ring, self.clock())
        return ring

    async def _stored(
        self, tx: Transaction, tenant: str, key: bytes, for_update: bool
    ) -> tuple[a.SigningKeyRing, int]:
        """The tenant's ring and its version, created when it has none (its first assertion)."""
        name = ring_name(tenant)
        secret = await tx.get_secret(name, for_update=for_update)
        if secret is None:
            ring = a.SigningKeyRing.generate(self.clock(), retire_after_s=RETIRE_AFTER_S)
            if await tx.put_secret(name, self._seal(tenant, key, ring), expected_version=0):
                return ring, 1
            secret = await tx.get_secret(name, for_update=for_update)  # another node created it first
            if secret is None:
                raise IntegrityError(f"signing keys of {tenant!r} vanished while they were being created")
        return self._open(tenant, key, secret), secret.version

    async def reload(self, tenant: str) -> a.SigningKeyRing:
        async with self.store.transaction() as tx:
            ring, _ = await self._stored(tx, tenant, await self._ring_key(tenant, tx), for_update=False)
        return self._adopt(tenant, ring)

    async def ring_of(self, tenant: str) -> a.SigningKeyRing:
        loaded = self._rings.get(tenant)
        return loaded.ring if loaded else await self.reload(tenant)

    async def rotate(self, tenant: str, revoke: bool = False, actor: str = "operator") -> str:
        """A new active key of `tenant` for every node; -> its id. `revoke`: the old keys stop
        verifying too (on every node within `REFRESH_S`), for a key that may have leaked."""
        return await self._rotate(tenant, force=True, revoke=revoke, actor=actor)

    async def _rotate(self, tenant: str, force: bool, revoke: bool = False, actor: str = "service") -> str:
        async with self.store.transaction() as tx:
            key = await self._ring_key(tenant, tx)
            ring, version = await self._stored(tx, tenant, key, for_update=True)
            # Another node may have rotated already: then its new key is adopted, not replaced.
            if force or self.clock() - ring.active_created_at > self.rotate_after_s:
                ring.rotate(self.clock())
                if revoke:
                    ring.revoke_retired()
                if not await tx.put_secret(
                    ring_name(tenant), self._seal(tenant, key, ring), expected_version=version
                ):
                    raise IntegrityError(f"signing keys of {tenant!r} changed under their row lock")
                outcome = "revoked" if revoke else "rotated"
                await self.auditor.record(
                    tenant, "keys.rotate", "", outcome, actor, kid=ring.active_kid, tx=tx
                )
        self._adopt(tenant, ring)
        return ring.active_kid

    async def signing_ready(self, tenant: str) -> None:
        """Re-reads the tenant's ring when due and rotates it when its active key is too old, each
        in a unit of work of its own. Callers that issue inside a unit of work call this first."""
        loaded = self._rings.get(tenant)
        if loaded is None or self.clock() - loaded.at > REFRESH_S:
            loaded = _Loaded(await self.reload(tenant), self.clock())
        if self.clock() - loaded.ring.active_created_at > self.rotate_after_s:
            await self._rotate(tenant, force=False)

    async def issue(
        self,
        policy: TenantPolicy,
        customer_id: str,
        methods: tuple[str, ...],
        aal: str,
        channel: str,
        tx: Transaction | None = None,
        auth_id: str | None = None,
    ) -> IssuedAssertion:
        """A signed assertion, audited in `tx` (or a unit of work of its own). Inside a caller's
        unit of work the ring is not re-read (that would need a second one): call
        `signing_ready(tenant)` before opening it. `auth_id`: the authentication event of an
        earlier assertion of the same session (None: a new event)."""
        if tx is None:
            await self.signing_ready(policy.tenant)
        loaded = self._rings.get(policy.tenant)
        if loaded is None:
            raise RuntimeError("signing_ready(tenant) must run before issue() inside a unit of work")
        token, claims = a.issue(
            loaded.ring,
            tenant=policy.tenant,
            customer_id=customer_id,
            methods=methods,
            aal=aal,
            channel=channel,
            now=self.clock(),
            lifetime_s=math.ceil(policy.assertion.lifetime_s),
            auth_id=auth_id,
        )
        await self.auditor.record(
            policy.tenant, "assertion.issue", customer_id, "issued", id=claims.jti, channel=channel, tx=tx
        )
        return _issued(token, claims)

    async def _verifying_ring(self, tenant: str, kid: str) -> a.SigningKeyRing:
        loaded = self._rings.get(tenant)
        if loaded is None or self.clock() - loaded.at > REFRESH_S:
            ring = await self.reload(tenant)
        else:
            ring = loaded.ring
        if kid in ring.kids():
            return ring
        if self.legacy is not None and kid in self.legacy.kids():
            return self.legacy
        stale = time.monotonic() - self._unknown_reload_at.get(tenant, -math.inf) > UNKNOWN_KEY_RELOAD_S
        if kid and stale:
            self._unknown_reload_at[tenant] = time.monotonic()
            ring = await self.reload(tenant)
        return ring

    async def validate(
        self, policy: TenantPolicy, token: str, channel: str, once_per_authentication: bool = False
    ) -> IssuedAssertion:
        """The assertion if `policy.tenant` may accept it on `channel` now; raises otherwise.

        `once_per_authentication`: also use up its authentication event, so no other assertion
        of the same session is accepted for this purpose again (changes to a customer's
        protection). A refusal is audited in a unit of work of its own, so it is recorded
        although the request fails."""
        now = self.clock()
        kid = a.key_id_of(token) if isinstance(token, str) else ""
        try:
            ring = await self._verifying_ring(policy.tenant, kid)
            claims = a.check(
                ring,
                token,
                policy.tenant,
                now,
                max_lifetime_s=math.ceil(policy.assertion.lifetime_s),
                # A node signs with a superseded key until it next re-reads the ring.
                signing_grace_s=REFRESH_S + a.DEFAULT_CLOCK_SKEW_S,
            )
            max_uses = policy.assertion.max_uses
            async with self.store.transaction() as tx:
                forget_ms, now_ms = int(a.forget_at(claims) * 1000), int(now * 1000)
                counted = await tx.use_assertion(claims.jti, policy.tenant, max_uses, forget_ms, now_ms)
                if counted and once_per_authentication:
                    # The same statement, on the event's id: a second assertion of one session
                    # finds it used. Both counts roll back together when this one refuses.
                    event = f"auth:{claims.auth_id or claims.jti}"
                    if not await tx.use_assertion(event, policy.tenant, 1, forget_ms, now_ms):
                        raise a.replayed(1)
                if counted:
                    await self.auditor.record(
                        policy.tenant,
                        "assertion.validate",
                        claims.customer_id,
                        "accepted",
                        id=claims.jti,
                        channel=channel,
                        issued_on=claims.channel,
                        tx=tx,
                    )
            if not counted:
                raise a.replayed(max_uses)
        except a.AssertionRejected as exc:
            reason = exc.reason.lower()
            await self.auditor.record(policy.tenant, "assertion.validate", "", reason, channel=channel)
            raise
        return _issued(token, claims)


def open_legacy_ring(master: crypto.MasterKey, secret: Secret, where: str) -> a.SigningKeyRing:
    """The pre-0.3 ring, sealed by the master key (or, during a rotation, the previous one)."""
    for key in master.ring():
        try:
            raw = crypto.open_sealed(key, secret.blob, a.keyring_aad(LEGACY_RING), "assertion signing keys")
        except IntegrityError:
            continue
        return a.SigningKeyRing.from_bytes(raw)
    raise ConfigError(
        f"the assertion signing keys in {where} do not open with master key "
        f"{master.key_id}: give this node the master key of the others (or the row was altered)"
    )


async def rotate_keys(
    store: Store, master: crypto.MasterKey, revoke: bool = False, actor: str = "operator", tenant: str = ""
) -> dict[str, str]:
    """An operator's rotation (`authsvc keys rotate [--tenant T] [--revoke]`), from outside any
    running node: every tenant's ring, or one; -> tenant -> new key id. Audited per tenant."""
    authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master))
    if tenant:
        names = [tenant]
    else:
        async with store.transaction() as tx:
            names = [t.name for t in await tx.list_tenants()]
    return {name: await authority.rotate(name, revoke=revoke, actor=actor) for name in names}


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
        auth_id=c.auth_id or c.jti,
    )
