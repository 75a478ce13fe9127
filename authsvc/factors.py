"""Second factors of one customer, persisted: TOTP, one-time codes, and the lockout counter.

Binds the pure primitives of `authsvc.stepup` to the encrypted per-customer
state in the store (secrets sealed under the tenant's data key), and to the
tenant policy (code lifetime, rate limit, lockout limits). Every attempt is
audited, never with the code itself.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from authsvc.audit import Auditor
from authsvc.errors import InvalidInput, PreconditionFailed
from authsvc.identifiers import check_id
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup import totp
from authsvc.stepup.codes import CodePolicy, CodeState, OneTimeCodes
from authsvc.stepup.lockout import Lockout, LockoutState
from authsvc.stepup.senders import CodeSender
from authsvc.templates import TemplateVault

TOTP = "totp"
ONE_TIME_CODE = "one_time_code"
_TOTP_STATE = "factor.totp"
_DESTINATION = "factor.code_destination"
_CODES = "factor.codes"
_LOCKOUT = "lockout"
CODE_PURPOSE = "step-up"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    attempts_remaining: int
    retry_after_s: float  # > 0 when this attempt left the customer locked out
    note: str


class Factors:
    def __init__(
        self,
        vault: TemplateVault,
        sender: CodeSender,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vault = vault
        self.sender = sender
        self.auditor = auditor
        self.clock = clock

    # -- enrollment -------------------------------------------------------------------------

    def enroll_totp(self, tenant: str, customer_id: str, account_name: str, issuer: str) -> str:
        """New secret, stored unconfirmed; -> provisioning URI for the authenticator app."""
        check_id(tenant, "tenant")
        check_id(customer_id, "customer_id")
        secret = totp.new_secret()
        self._put_totp(tenant, customer_id, secret, totp.TotpState())
        self.auditor.record(tenant, "factor.totp.enroll", customer_id, "pending_confirmation")
        return totp.provisioning_uri(secret, account_name or customer_id, issuer or "authsvc")

    def confirm_totp(self, tenant: str, customer_id: str, code: str) -> bool:
        secret, state = self._totp(tenant, customer_id)
        if secret is None:
            raise PreconditionFailed(
                f"customer {tenant}/{customer_id} has no TOTP secret; call EnrollTotp first"
            )
        new = state.verify(secret, code, self.clock())
        if new is not None:
            self._put_totp(tenant, customer_id, secret, new)
        self.auditor.record(tenant, "factor.totp.confirm", customer_id, "confirmed" if new else "wrong_code")
        return new is not None

    def set_destination(self, tenant: str, customer_id: str, destination: str) -> None:
        check_id(tenant, "tenant")
        check_id(customer_id, "customer_id")
        if not destination.strip() or len(destination) > 256:
            raise InvalidInput("destination", "must be a phone number or address of at most 256 characters")
        self.vault.put_state(tenant, customer_id, _DESTINATION, destination.strip().encode())
        self.auditor.record(tenant, "factor.code_destination.set", customer_id, "set")

    def active(self, tenant: str, customer_id: str) -> tuple[str, ...]:
        """Factors ready to use: a confirmed TOTP, a registered code destination."""
        names = set(self.vault.store.state_names(tenant, customer_id))
        out = []
        if _TOTP_STATE in names and self._totp(tenant, customer_id)[1].confirmed:
            out.append(TOTP)
        if _DESTINATION in names:
            out.append(ONE_TIME_CODE)
        return tuple(out)

    # -- lockout --------------------------------------------------------------------------

    @staticmethod
    def _lockout(policy: TenantPolicy) -> Lockout:
        return Lockout(max_failures=policy.lockout.max_failures, lockout_s=policy.lockout.lockout_s)

    def _lock_state(self, tenant: str, customer_id: str) -> LockoutState:
        raw = self.vault.load_state(tenant, customer_id, _LOCKOUT)
        return LockoutState.from_bytes(raw) if raw else LockoutState()

    def locked_for(self, policy: TenantPolicy, tenant: str, customer_id: str) -> float:
        """Seconds until the customer may try again (inf when disabled); 0 when not locked."""
        state = self._lock_state(tenant, customer_id)
        now = self.clock()
        if not self._lockout(policy).is_locked(state, now):
            return 0.0
        return float("inf") if state.disabled else state.locked_until - now

    def attempts_left(self, policy: TenantPolicy, tenant: str, customer_id: str) -> int:
        return self._lockout(policy).attempts_left(self._lock_state(tenant, customer_id), self.clock())

    def record_failure(self, policy: TenantPolicy, tenant: str, customer_id: str, what: str) -> Attempt:
        lockout = self._lockout(policy)
        now = self.clock()
        state = lockout.record_failure(self._lock_state(tenant, customer_id), now)
        self.vault.put_state(tenant, customer_id, _LOCKOUT, state.to_bytes())
        left = lockout.attempts_left(state, now)
        retry = self.locked_for(policy, tenant, customer_id)
        return Attempt(False, left, retry, what + (f"; locked out for {retry:.0f} s" if retry else ""))

    def _record_success(self, tenant: str, customer_id: str) -> None:
        self.vault.put_state(tenant, customer_id, _LOCKOUT, LockoutState().to_bytes())

    # -- step-up ---------------------------------------------------------------------------

    def check_code(
        self, policy: TenantPolicy, tenant: str, customer_id: str, factor: str, code: str
    ) -> Attempt:
        """One step-up attempt. Wrong answers count toward the tenant's lockout limit."""
        if factor not in policy.step_up.factors:
            raise InvalidInput("step_up.factor", f"{factor} is not a second factor this tenant accepts")
        retry = self.locked_for(policy, tenant, customer_id)
        if retry:
            self.auditor.record(tenant, "step_up", customer_id, "locked_out", factor=factor)
            return Attempt(False, 0, retry, "locked out")
        if factor == TOTP:
            secret, state = self._totp(tenant, customer_id)
            if secret is None or not state.confirmed:
                raise PreconditionFailed("the customer has no confirmed TOTP authenticator")
            new = state.verify(secret, code, self.clock())
            ok, what = new is not None, "wrong or reused TOTP code"
            if new is not None:
                self._put_totp(tenant, customer_id, secret, new)
        else:
            raw = self.vault.load_state(tenant, customer_id, _CODES)
            check = self._codes(policy, tenant).verify(
                CodeState.from_bytes(raw) if raw else None,
                code,
                tenant,
                customer_id,
                CODE_PURPOSE,
                self.clock(),
            )
            self.vault.put_state(tenant, customer_id, _CODES, check.state.to_bytes())
            ok, what = check.ok, f"one-time code {check.outcome.value.lower().replace('_', ' ')}"
        if ok:
            self._record_success(tenant, customer_id)
            self.auditor.record(tenant, "step_up", customer_id, "passed", factor=factor)
            return Attempt(True, self.attempts_left(policy, tenant, customer_id), 0.0, f"{factor} verified")
        attempt = self.record_failure(policy, tenant, customer_id, what)
        self.auditor.record(
            tenant,
            "step_up",
            customer_id,
            "locked_out" if attempt.retry_after_s else "failed",
            factor=factor,
            attempts_remaining=attempt.attempts_remaining,
        )
        return attempt

    def send_code(self, policy: TenantPolicy, tenant: str, customer_id: str) -> None:
        """Issues a one-time code and hands it to the sender. Raises RateLimited when too frequent."""
        if ONE_TIME_CODE not in policy.step_up.factors:
            raise InvalidInput("send_code", "this tenant does not accept one-time codes")
        destination = self.vault.load_state(tenant, customer_id, _DESTINATION)
        if destination is None:
            raise PreconditionFailed("the customer has no destination for one-time codes")
        raw = self.vault.load_state(tenant, customer_id, _CODES)
        code, state = self._codes(policy, tenant).issue(
            CodeState.from_bytes(raw) if raw else None, tenant, customer_id, CODE_PURPOSE, self.clock()
        )
        self.vault.put_state(tenant, customer_id, _CODES, state.to_bytes())
        self.sender.send(destination.decode(), code, CODE_PURPOSE, tenant)
        self.auditor.record(tenant, "step_up.code_sent", customer_id, "sent")

    # -- helpers ---------------------------------------------------------------------------

    def _codes(self, policy: TenantPolicy, tenant: str) -> OneTimeCodes:
        rules = policy.step_up
        code_policy = CodePolicy(
            ttl_s=rules.code_ttl_s, max_issued=rules.max_codes_per_hour, issue_window_s=3600
        )
        return OneTimeCodes(self.vault.subkey(tenant, "one-time-codes"), code_policy)

    def _totp(self, tenant: str, customer_id: str) -> tuple[bytes | None, totp.TotpState]:
        raw = self.vault.load_state(tenant, customer_id, _TOTP_STATE)
        if raw is None:
            return None, totp.TotpState()
        doc = json.loads(raw)
        return base64.b64decode(doc["secret"]), totp.TotpState.from_bytes(doc["state"].encode())

    def _put_totp(self, tenant: str, customer_id: str, secret: bytes, state: totp.TotpState) -> None:
        doc = {"secret": base64.b64encode(secret).decode(), "state": state.to_bytes().decode()}
        self.vault.put_state(tenant, customer_id, _TOTP_STATE, json.dumps(doc).encode())
