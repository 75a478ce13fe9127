"""Signed assertions, persisted: the service's Ed25519 key ring and assertion use counts.

An AUTHENTICATED decision carries an assertion; another channel of the same
tenant validates it instead of asking the customer again. The key ring is
sealed with the master key in the store and rotates by age: a new key signs
once the active one is older than `rotate_after_s`; old public keys verify
until their tokens have expired.

Several nodes share one ring. A rotation is a compare-and-swap on the
stored ring's version under its row lock, so two nodes rotating at once
produce one new key, never two rings that overwrite each other. Each node
re-reads the ring every `REFRESH_S`, and at once (at most once a second)
when a token names a key it does not know: another node rotated. Use
counts live in the store and are consumed by one atomic statement, so an
assertion with `max_uses = 1` is accepted once across all nodes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from authsvc import crypto
from authsvc.audit import Auditor
from authsvc.errors import ConfigError, IntegrityError
from authsvc.policy.engine import IssuedAssertion
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup import assertions as a
from authsvc.store.base import Secret, Store, Transaction

_RING = "assertion-signing-keys"
ROTATE_AFTER_S = 24 * 3600.0
# Old keys verify for this long after rotation: longer than any policy's assertion lifetime.
RETIRE_AFTER_S = 2 * 86400.0
# A node picks up another node's rotation within this long even without seeing a new key id.
REFRESH_S = 60.0
# Tokens naming unknown key ids re-read the ring at most this often (garbage must not load the store).
UNKNOWN_KEY_RELOAD_S = 1.0


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
        if not 1.0 <= rotate_after_s < math.inf:
            raise ConfigError(f"key rotation interval must be at least 1 s, got {rotate_after_s!r}")
        self.rotate_after_s = rotate_after_s
        self._ring: a.SigningKeyRing | None = None
        self._loaded_at = -math.inf
        self._unknown_reload_at = -math.inf

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
        await authority.reload()
        return authority

    @property
    def ring(self) -> a.SigningKeyRing:
        assert self._ring is not None, "AssertionAuthority.open() loads the ring"
        return self._ring

    def _open(self, secret: Secret) -> a.SigningKeyRing:
        try:
            raw = crypto.open_sealed(
                self._master.key, secret.blob, a.keyring_aad(_RING), "assertion signing keys"
            )
        except IntegrityError:
            raise ConfigError(
                f"the assertion signing keys in {self.store.description} do not open with master key "
                f"{self._master.key_id}: give this node the master key of the others (or the row was altered)"
            ) from None
        return a.SigningKeyRing.from_bytes(raw)

    def _seal(self, ring: a.SigningKeyRing) -> bytes:
        return crypto.seal(self._master.key, ring.to_bytes(), a.keyring_aad(_RING))

    def _adopt(self, ring: a.SigningKeyRing) -> None:
        self._ring, self._loaded_at = ring, self.clock()

    async def reload(self) -> None:
        """Reads the stored ring, creating it when there is none (the first node to start)."""
        async with self.store.transaction() as tx:
            secret = await tx.get_secret(_RING)
            if secret is None:
                ring = a.SigningKeyRing.generate(self.clock(), retire_after_s=RETIRE_AFTER_S)
                if await tx.put_secret(_RING, self._seal(ring), expected_version=0):
                    self._adopt(ring)
                    return
                secret = await tx.get_secret(_RING)  # another node created it first
                if secret is None:
                    raise IntegrityError("assertion key ring vanished while it was being created")
        self._adopt(self._open(secret))

    async def rotate(self, revoke: bool = False, actor: str = "operator") -> str:
        """A new active key for every node; -> its id. `revoke`: the old keys stop verifying too
        (on every node within `REFRESH_S`), for a key that may have leaked."""
        return await self._rotate(force=True, revoke=revoke, actor=actor)

    async def _rotate(self, force: bool, revoke: bool = False, actor: str = "service") -> str:
        async with self.store.transaction() as tx:
            secret = await tx.get_secret(_RING, for_update=True)
            if secret is None:
                raise IntegrityError("assertion key ring is missing from the store")
            ring = self._open(secret)
            # Another node may have rotated already: then its new key is adopted, not replaced.
            if force or self.clock() - ring.active_created_at > self.rotate_after_s:
                ring.rotate(self.clock())
                if revoke:
                    ring.revoke_retired()
                if not await tx.put_secret(_RING, self._seal(ring), expected_version=secret.version):
                    raise IntegrityError("assertion key ring changed under its row lock")
                # Platform-wide (tenant ""), in the rotation's own unit of work.
                outcome = "revoked" if revoke else "rotated"
                await self.auditor.record("", "keys.rotate", "", outcome, actor, kid=ring.active_kid, tx=tx)
        self._adopt(ring)
        return ring.active_kid

    async def signing_ready(self) -> None:
        """Re-reads the ring when due and rotates it when its active key is too old, each in a
        unit of work of its own. Callers that issue inside a unit of work call this first."""
        if self.clock() - self._loaded_at > REFRESH_S:
            await self.reload()
        if self.clock() - self.ring.active_created_at > self.rotate_after_s:
            await self._rotate(force=False)

    async def issue(
        self,
        policy: TenantPolicy,
        customer_id: str,
        methods: tuple[str, ...],
        aal: str,
        channel: str,
        tx: Transaction | None = None,
    ) -> IssuedAssertion:
        """A signed assertion, audited in `tx` (or a unit of work of its own). Inside a caller's
        unit of work the ring is not re-read (that would need a second one): call
        `signing_ready()` before opening it."""
        if tx is None:
            await self.signing_ready()
        ring = self.ring
        token, claims = a.issue(
            ring,
            tenant=policy.tenant,
            customer_id=customer_id,
            methods=methods,
            aal=aal,
            channel=channel,
            now=self.clock(),
            lifetime_s=math.ceil(policy.assertion.lifetime_s),
        )
        await self.auditor.record(
            policy.tenant, "assertion.issue", customer_id, "issued", id=claims.jti, channel=channel, tx=tx
        )
        return _issued(token, claims)

    async def validate(self, policy: TenantPolicy, token: str, channel: str) -> IssuedAssertion:
        """The assertion if `policy.tenant` may accept it on `channel` now; raises otherwise.

        A refusal is audited in a unit of work of its own, so it is recorded although the
        request fails."""
        now = self.clock()
        kid = a.key_id_of(token) if isinstance(token, str) else ""
        stale = time.monotonic() - self._unknown_reload_at > UNKNOWN_KEY_RELOAD_S
        if kid and kid not in self.ring.kids() and stale:
            self._unknown_reload_at = time.monotonic()
            await self.reload()
        try:
            claims = a.check(
                self.ring,
                token,
                policy.tenant,
                now,
                max_lifetime_s=math.ceil(policy.assertion.lifetime_s),
                # A node signs with a superseded key until it next re-reads the ring.
                signing_grace_s=REFRESH_S + a.DEFAULT_CLOCK_SKEW_S,
            )
            max_uses = policy.assertion.max_uses
            async with self.store.transaction() as tx:
                counted = await tx.use_assertion(
                    claims.jti, policy.tenant, max_uses, int(a.forget_at(claims) * 1000), int(now * 1000)
                )
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


async def rotate_keys(
    store: Store, master: crypto.MasterKey, revoke: bool = False, actor: str = "operator"
) -> str:
    """An operator's rotation (`authsvc keys rotate [--revoke]`), from outside any running node;
    -> the new key id. Audited platform-wide (tenant "")."""
    authority = await AssertionAuthority.open(store, master, Auditor.with_master(store, master))
    return await authority.rotate(revoke=revoke, actor=actor)


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
