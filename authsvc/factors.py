"""Second factors of one customer, persisted: TOTP, one-time codes, and the lockout counter.

Binds the pure primitives of `authsvc.stepup` to the encrypted per-customer
state in the store (secrets sealed under the tenant's data key), and to the
tenant policy (code lifetime, rate limit, lockout limits). Every attempt is
audited, never with the code itself.

Each use case is one unit of work that first locks the customer: the lockout
check, the evaluation of the code, the new factor state, the failure count
and the audit row are read and written together, so concurrent guesses (on
one node or several) are evaluated one at a time and a code is accepted once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from authsvc import changes
from authsvc.attempts import BIOMETRIC_STATE
from authsvc.audit import Auditor
from authsvc.consent import require_consent
from authsvc.errors import InvalidInput, NotFound, PreconditionFailed
from authsvc.identifiers import check_id
from authsvc.metrics import Metrics
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup import totp
from authsvc.stepup.codes import CodePolicy, CodeState, OneTimeCodes
from authsvc.stepup.lockout import Lockout, LockoutState
from authsvc.stepup.senders import CodeSender
from authsvc.store.base import Transaction, within
from authsvc.templates import TemplateVault

TOTP = "totp"
ONE_TIME_CODE = "one_time_code"
_TOTP_STATE = "factor.totp"
_DESTINATION = "factor.code_destination"
_CODES = "factor.codes"
# Set with the customer's first template or factor, kept when they are removed, gone on erasure.
_ENROLLED = "enrollment.began"
_LOCKOUT = "lockout"
CODE_PURPOSE = "step-up"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    attempts_remaining: int
    retry_after_s: float  # > 0 when this attempt left the customer locked out
    note: str
    # What kind of authenticator answered: "totp", "sms" or "email" (sets the assurance level).
    kind: str = ""


def destination_kind(destination: str) -> str:
    """An address with "@" is e-mail; anything else is a phone number (SMS or voice)."""
    return "email" if "@" in destination else "sms"


class Factors:
    def __init__(
        self,
        vault: TemplateVault,
        sender: CodeSender,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.vault = vault
        self.store = vault.store
        self.sender = sender
        self.auditor = auditor
        self.clock = clock
        self.metrics = metrics

    def _count(self, factor: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.step_up(factor, result)

    # -- enrollment -------------------------------------------------------------------------

    async def enroll_totp(
        self,
        tenant: str,
        customer_id: str,
        account_name: str,
        issuer: str,
        actor: str = "service",
        change: str | None = None,
        policy: TenantPolicy | None = None,
    ) -> str:
        """New secret, stored unconfirmed; -> provisioning URI for the authenticator app.

        A confirmed secret is replaced, and a protected customer given one after their enrollment
        window (`policy`; closed when None), only with `change` (how it was authorized,
        authsvc.changes): otherwise whoever could call this would own the customer's TOTP."""
        check_id(tenant, "tenant")
        check_id(customer_id, "customer_id")
        secret = totp.new_secret()
        uri = totp.provisioning_uri(secret, account_name or customer_id, issuer or "authsvc")
        async with self.store.transaction() as tx:
            record = require_consent(await tx.lock_customer(tenant, customer_id), tenant, customer_id, "totp")
            _, old = await self._totp(tx, tenant, customer_id)
            replaces = old.confirmed
            if replaces:
                changes.require(change, "replacing a confirmed TOTP secret")
            else:
                await self.gate_addition(tx, policy, record, change, "a new TOTP secret")
            await self._put_totp(tx, tenant, customer_id, secret, totp.TotpState())
            await self.auditor.record(
                tenant,
                "factor.totp.enroll",
                customer_id,
                "pending_confirmation",
                actor,
                tx=tx,
                **({"replaces_confirmed": True} if replaces else {}),
                **({"authorized_by": change} if change else {}),
            )
        return uri

    async def protection(self, tx: Transaction, tenant: str, customer_id: str) -> str:
        """What protects, or protected, the customer ("" for nothing): templates, active factors,
        or an earlier enrollment whose protection was removed since (removing it must not open
        the customer to free additions)."""
        what = ["biometric templates"] if await tx.templates(tenant, customer_id) else []
        what += await self.active(tenant, customer_id, tx)
        if not what and _ENROLLED in await tx.state_names(tenant, customer_id):
            what = ["an earlier enrollment"]
        return ", ".join(what)

    async def gate_addition(
        self,
        tx: Transaction,
        policy: TenantPolicy | None,
        record,
        change: str | None,
        what: str,
        adds: bool = True,
    ) -> None:
        """A protected customer whose enrollment window has closed (`policy` None: closed)
        changes only with `change` (authsvc.changes). `adds`: the change adds protection, which
        is remembered for good (see `protection`)."""
        open_ = policy is not None and changes.enrollment_open(policy, record, int(time.time() * 1000))
        if not open_ and change is None:
            protected = await self.protection(tx, record.tenant, record.customer_id)
            if protected:
                raise changes.refuse(f"{what} after the enrollment window (protected by {protected})")
        if adds and _ENROLLED not in await tx.state_names(record.tenant, record.customer_id):
            await self.vault.put_state(record.tenant, record.customer_id, _ENROLLED, b"1", tx)

    async def confirm_totp(self, tenant: str, customer_id: str, code: str, actor: str = "service") -> bool:
        check_id(tenant, "tenant")
        check_id(customer_id, "customer_id")
        async with self.store.transaction() as tx:
            await tx.lock_customer(tenant, customer_id)
            secret, state = await self._totp(tx, tenant, customer_id)
            if secret is None:
                raise PreconditionFailed(
                    f"customer {tenant}/{customer_id} has no TOTP secret; call EnrollTotp first"
                )
            new = state.verify(secret, code, self.clock())
            if new is not None:
                await self._put_totp(tx, tenant, customer_id, secret, new)
            outcome = "confirmed" if new else "wrong_code"
            await self.auditor.record(tenant, "factor.totp.confirm", customer_id, outcome, actor, tx=tx)
        return new is not None

    async def set_destination(
        self,
        tenant: str,
        customer_id: str,
        destination: str,
        actor: str = "service",
        change: str | None = None,
        policy: TenantPolicy | None = None,
    ) -> None:
        """Where one-time codes go; an existing destination is replaced, and a protected customer
        given one after their enrollment window, only with `change`."""
        check_id(tenant, "tenant")
        check_id(customer_id, "customer_id")
        if not destination.strip() or len(destination) > 256:
            raise InvalidInput("destination", "must be a phone number or address of at most 256 characters")
        async with self.store.transaction() as tx:
            record = require_consent(
                await tx.lock_customer(tenant, customer_id), tenant, customer_id, "one_time_code"
            )
            replaces = _DESTINATION in await tx.state_names(tenant, customer_id)
            if replaces:
                changes.require(change, "replacing the one-time code destination")
            else:
                await self.gate_addition(tx, policy, record, change, "a one-time code destination")
            await self.vault.put_state(tenant, customer_id, _DESTINATION, destination.strip().encode(), tx)
            await self.auditor.record(
                tenant,
                "factor.code_destination.set",
                customer_id,
                "replaced" if replaces else "set",
                actor,
                tx=tx,
                **({"authorized_by": change} if change else {}),
            )

    async def active(self, tenant: str, customer_id: str, tx: Transaction | None = None) -> tuple[str, ...]:
        """Factors ready to use: a confirmed TOTP, a registered code destination."""
        async with within(self.store, tx) as t:
            names = set(await t.state_names(tenant, customer_id))
            out = []
            if _TOTP_STATE in names and (await self._totp(t, tenant, customer_id))[1].confirmed:
                out.append(TOTP)
            if _DESTINATION in names:
                out.append(ONE_TIME_CODE)
        return tuple(out)

    async def authenticators(
        self, tenant: str, customer_id: str, active: tuple[str, ...], tx: Transaction | None = None
    ) -> tuple[str, ...]:
        """Of the `active` factors, those that are authenticators (SP 800-63B rev 4): codes sent
        to an e-mail address are not, so they cannot stand in for a disabled biometric."""
        if ONE_TIME_CODE not in active:
            return active
        async with within(self.store, tx) as t:
            destination = await self.vault.load_state(tenant, customer_id, _DESTINATION, t)
        if destination is not None and destination_kind(destination.decode()) == "email":
            return tuple(f for f in active if f != ONE_TIME_CODE)
        return active

    # -- lockout --------------------------------------------------------------------------

    @staticmethod
    def _lockout(policy: TenantPolicy) -> Lockout:
        return Lockout(max_failures=policy.lockout.max_failures, lockout_s=policy.lockout.lockout_s)

    async def _lock_state(self, tx: Transaction, tenant: str, customer_id: str) -> LockoutState:
        raw = await self.vault.load_state(tenant, customer_id, _LOCKOUT, tx)
        return LockoutState.from_bytes(raw) if raw else LockoutState()

    def _retry_after(self, policy: TenantPolicy, state: LockoutState, now: float) -> float:
        if not self._lockout(policy).is_locked(state, now):
            return 0.0
        return float("inf") if state.disabled else state.locked_until - now

    async def lock_status(
        self, policy: TenantPolicy, tenant: str, customer_id: str, tx: Transaction | None = None
    ) -> tuple[float, int]:
        """-> (seconds until the customer may try again, inf when disabled, 0 when not locked;
        failures still allowed before the next lock)."""
        async with within(self.store, tx) as t:
            state = await self._lock_state(t, tenant, customer_id)
        now = self.clock()
        return self._retry_after(policy, state, now), self._lockout(policy).attempts_left(state, now)

    async def unlock(self, tenant: str, customer_id: str, actor: str) -> list[str]:
        """An administrator's reset of the customer's lockouts: second factors (a disabled one
        included) and the biometric; -> the state names cleared ("lockout", "lockout.biometric")."""
        async with self.store.transaction() as tx:
            if await tx.lock_customer(tenant, customer_id) is None:
                raise NotFound(f"customer {tenant}/{customer_id} does not exist")
            names = set(await tx.state_names(tenant, customer_id))
            cleared = [n for n in (_LOCKOUT, BIOMETRIC_STATE) if n in names]
            for name in cleared:
                await tx.delete_state(tenant, customer_id, name)
            await self.auditor.record(
                tenant,
                "lockout.reset",
                customer_id,
                "cleared" if cleared else "not_locked",
                actor,
                cleared=cleared,
                tx=tx,
            )
        return cleared

    async def _failed(
        self,
        tx: Transaction,
        policy: TenantPolicy,
        tenant: str,
        customer_id: str,
        what: str,
        state: LockoutState | None = None,
    ) -> Attempt:
        """Counts a failure; `state`: the lockout state this unit of work already read."""
        lockout = self._lockout(policy)
        now = self.clock()
        if state is None:
            state = await self._lock_state(tx, tenant, customer_id)
        was_locked = lockout.is_locked(state, now)
        state = lockout.record_failure(state, now)
        if self.metrics is not None and not was_locked and lockout.is_locked(state, now):
            self.metrics.lockout("factor_disabled" if state.disabled else "factor_locked")
        await self.vault.put_state(tenant, customer_id, _LOCKOUT, state.to_bytes(), tx)
        left = lockout.attempts_left(state, now)
        retry = self._retry_after(policy, state, now)
        return Attempt(False, left, retry, what + (f"; locked out for {retry:.0f} s" if retry else ""))

    # -- step-up ---------------------------------------------------------------------------

    async def check_code(
        self, policy: TenantPolicy, tenant: str, customer_id: str, factor: str, code: str
    ) -> Attempt:
        """One step-up attempt. Wrong answers count toward the tenant's lockout limit."""
        if factor not in policy.step_up.factors:
            raise InvalidInput("step_up.factor", f"{factor} is not a second factor this tenant accepts")
        async with self.store.transaction() as tx:
            if await tx.lock_customer(tenant, customer_id) is None:
                raise PreconditionFailed(f"customer {tenant}/{customer_id} does not exist")
            lock = await self._lock_state(tx, tenant, customer_id)
            retry = self._retry_after(policy, lock, self.clock())
            if retry:
                await self.auditor.record(tenant, "step_up", customer_id, "locked_out", factor=factor, tx=tx)
                self._count(factor, "locked_out")
                return Attempt(False, 0, retry, "locked out")
            if factor == TOTP:
                secret, state = await self._totp(tx, tenant, customer_id)
                if secret is None or not state.confirmed:
                    raise PreconditionFailed("the customer has no confirmed TOTP authenticator")
                new = state.verify(secret, code, self.clock())
                ok, what, kind = new is not None, "wrong or reused TOTP code", TOTP
                if new is not None:
                    await self._put_totp(tx, tenant, customer_id, secret, new)
            else:
                raw = await self.vault.load_state(tenant, customer_id, _CODES, tx)
                codes = await self._codes(policy, tenant, tx)
                check = codes.verify(
                    CodeState.from_bytes(raw) if raw else None,
                    code,
                    tenant,
                    customer_id,
                    CODE_PURPOSE,
                    self.clock(),
                )
                await self.vault.put_state(tenant, customer_id, _CODES, check.state.to_bytes(), tx)
                ok, what = check.ok, f"one-time code {check.outcome.value.lower().replace('_', ' ')}"
                destination = await self.vault.load_state(tenant, customer_id, _DESTINATION, tx)
                kind = destination_kind(destination.decode()) if destination else "sms"
            if ok:
                await self.vault.put_state(tenant, customer_id, _LOCKOUT, LockoutState().to_bytes(), tx)
                await self.auditor.record(tenant, "step_up", customer_id, "passed", factor=factor, tx=tx)
                self._count(factor, "passed")
                left = self._lockout(policy).attempts_left(LockoutState(), self.clock())
                return Attempt(True, left, 0.0, f"{factor} verified", kind)
            attempt = await self._failed(tx, policy, tenant, customer_id, what, lock)
            result = "locked_out" if attempt.retry_after_s else "failed"
            await self.auditor.record(
                tenant,
                "step_up",
                customer_id,
                result,
                factor=factor,
                attempts_remaining=attempt.attempts_remaining,
                tx=tx,
            )
            self._count(factor, result)
        return attempt

    async def send_code(self, policy: TenantPolicy, tenant: str, customer_id: str) -> None:
        """Issues a one-time code and hands it to the sender. Raises RateLimited when too frequent."""
        if ONE_TIME_CODE not in policy.step_up.factors:
            raise InvalidInput("send_code", "this tenant does not accept one-time codes")
        async with self.store.transaction() as tx:
            await tx.lock_customer(tenant, customer_id)
            destination = await self.vault.load_state(tenant, customer_id, _DESTINATION, tx)
            if destination is None:
                raise PreconditionFailed("the customer has no destination for one-time codes")
            raw = await self.vault.load_state(tenant, customer_id, _CODES, tx)
            codes = await self._codes(policy, tenant, tx)
            code, state = codes.issue(
                CodeState.from_bytes(raw) if raw else None, tenant, customer_id, CODE_PURPOSE, self.clock()
            )
            await self.vault.put_state(tenant, customer_id, _CODES, state.to_bytes(), tx)
        # Outside the unit of work: a slow SMS gateway must not hold the customer's lock.
        try:
            await asyncio.to_thread(self.sender.send, destination.decode(), code, CODE_PURPOSE, tenant)
        except Exception:
            self._count(ONE_TIME_CODE, "send_failed")
            await self.auditor.record(tenant, "step_up.code_sent", customer_id, "send_failed")
            raise
        self._count(ONE_TIME_CODE, "code_sent")
        await self.auditor.record(tenant, "step_up.code_sent", customer_id, "sent")

    # -- helpers ---------------------------------------------------------------------------

    async def _codes(self, policy: TenantPolicy, tenant: str, tx: Transaction) -> OneTimeCodes:
        rules = policy.step_up
        code_policy = CodePolicy(
            ttl_s=rules.code_ttl_s, max_issued=rules.max_codes_per_hour, issue_window_s=3600
        )
        return OneTimeCodes(await self.vault.subkey(tenant, "one-time-codes", tx), code_policy)

    async def _totp(
        self, tx: Transaction, tenant: str, customer_id: str
    ) -> tuple[bytes | None, totp.TotpState]:
        raw = await self.vault.load_state(tenant, customer_id, _TOTP_STATE, tx)
        if raw is None:
            return None, totp.TotpState()
        doc = json.loads(raw)
        return base64.b64decode(doc["secret"]), totp.TotpState.from_bytes(doc["state"].encode())

    async def _put_totp(
        self, tx: Transaction, tenant: str, customer_id: str, secret: bytes, state: totp.TotpState
    ) -> None:
        doc = {"secret": base64.b64encode(secret).decode(), "state": state.to_bytes().decode()}
        await self.vault.put_state(tenant, customer_id, _TOTP_STATE, json.dumps(doc).encode(), tx)
