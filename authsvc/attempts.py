"""Failed biometric attempts: the customer's consecutive count, and a throttle per calling source.

Every scored decision that does not authenticate is a failed biometric attempt
(a wrong password or PIN too). `Attempts` keeps the count per customer in the
store, sealed like the other per-customer state, and applies the tenant's rule
at the limit (`authsvc.stepup.lockout.BiometricLockout`). A successful
authentication, or a tenant administrator's unlock, resets it.

A per-customer count alone lets one caller lock out many customers, five looks
each. `SourceThrottle` also counts failures per calling principal and source
address over all customers, and refuses new sessions from a source over the
tenant's hourly budget. It is kept per node, in memory: it bounds what one
source can do through one node, while the per-customer count, in the store, is
the guarantee that holds across nodes.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from authsvc.audit import Auditor
from authsvc.metrics import Metrics
from authsvc.policy.schema import TenantPolicy
from authsvc.stepup.lockout import BiometricLockout, LockoutState, RateLimited
from authsvc.store.base import Transaction
from authsvc.templates import TemplateVault

BIOMETRIC_STATE = "lockout.biometric"


@dataclass(frozen=True)
class BiometricStatus:
    failures: int = 0  # consecutive failed attempts
    attempts_left: int = 0  # before the limit applies (0 while it does)
    off: bool = False  # disabled: another factor (or an operator) is needed
    operator_only: bool = False  # off until a tenant administrator unlocks
    retry_after_s: float = 0.0  # delay mode: wait before the next attempt

    @property
    def blocked(self) -> bool:
        """Whether the biometric may not decide now."""
        return self.off or self.retry_after_s > 0


def rule(policy: TenantPolicy) -> BiometricLockout:
    return BiometricLockout(policy.lockout.biometric_failures, policy.lockout.biometric_after_limit)


class Attempts:
    def __init__(
        self,
        vault: TemplateVault,
        auditor: Auditor,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.vault = vault
        self.auditor = auditor
        self.clock = clock
        self.metrics = metrics

    async def _state(self, tx: Transaction, tenant: str, customer_id: str) -> LockoutState:
        raw = await self.vault.load_state(tenant, customer_id, BIOMETRIC_STATE, tx)
        return LockoutState.from_bytes(raw) if raw else LockoutState()

    def _status(self, policy: TenantPolicy, state: LockoutState) -> BiometricStatus:
        now = self.clock()
        lock = rule(policy)
        operator = lock.operator_only(state)
        return BiometricStatus(
            failures=state.failures,
            attempts_left=lock.attempts_left(state, now),
            off=state.disabled,
            operator_only=operator,
            retry_after_s=math.inf if operator else max(0.0, state.locked_until - now),
        )

    async def status(
        self, policy: TenantPolicy, tenant: str, customer_id: str, tx: Transaction
    ) -> BiometricStatus:
        return self._status(policy, await self._state(tx, tenant, customer_id))

    async def failed(
        self,
        policy: TenantPolicy,
        tenant: str,
        customer_id: str,
        can_step_up: bool,
        tx: Transaction,
        session: str = "",
    ) -> BiometricStatus:
        """Counts one failed attempt (the caller holds the customer's row lock in `tx`)."""
        before = await self._state(tx, tenant, customer_id)
        after = rule(policy).record_failure(before, self.clock(), can_step_up)
        if after != before:
            await self.vault.put_state(tenant, customer_id, BIOMETRIC_STATE, after.to_bytes(), tx)
        status = self._status(policy, after)
        if status.blocked and not self._status(policy, before).blocked:
            if self.metrics is not None:
                self.metrics.lockout("biometric_disabled" if status.off else "biometric_delayed")
            await self.auditor.record(
                tenant,
                "biometric.limit",
                customer_id,
                "disabled" if status.off else "delayed",
                failures=after.failures,
                session=session,
                **({} if status.off else {"retry_after_s": round(status.retry_after_s, 1)}),
                tx=tx,
            )
        return status

    async def succeeded(self, tenant: str, customer_id: str, tx: Transaction) -> None:
        """A successful biometric authentication resets the count (NIST SP 800-63B 3.2.3)."""
        if await self._state(tx, tenant, customer_id) != LockoutState():
            await tx.delete_state(tenant, customer_id, BIOMETRIC_STATE)

    async def reenabled(self, policy: TenantPolicy, tenant: str, customer_id: str, tx: Transaction) -> None:
        """Another factor succeeded: the biometric may decide again, but the run of failures
        toward NIST's 100 is kept (a second factor must not buy unlimited biometric guesses)."""
        before = await self._state(tx, tenant, customer_id)
        after = rule(policy).reenabled(before)
        if after != before:
            await self.vault.put_state(tenant, customer_id, BIOMETRIC_STATE, after.to_bytes(), tx)


class SourceThrottle:
    """Failed attempts per (tenant, principal, source address) in a sliding hour, in memory."""

    WINDOW_S = 3600.0
    MAX_SOURCES = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic, metrics: Metrics | None = None) -> None:
        self.clock = clock
        self.metrics = metrics
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _window(self, key: tuple[str, str]) -> deque[float]:
        now = self.clock()
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque()
            while len(self._failures) > self.MAX_SOURCES:
                self._failures.popitem(last=False)  # the least recently failing source
        while times and times[0] <= now - self.WINDOW_S:
            times.popleft()
        return times

    def over(self, policy: TenantPolicy, source: str) -> float:
        """Seconds until the source is back under the tenant's hourly failure budget (0: it is)."""
        if not source:
            return 0.0
        times = self._failures.get((policy.tenant, source))
        if not times:
            return 0.0
        times = self._window((policy.tenant, source))
        if len(times) < policy.lockout.source_failures_per_hour:
            return 0.0
        return max(1.0, times[0] + self.WINDOW_S - self.clock())

    def check(self, policy: TenantPolicy, source: str) -> None:
        """Raises RateLimited while the source is over the tenant's hourly failure budget."""
        wait = self.over(policy, source)
        if wait:
            raise RateLimited(
                "too many failed attempts from this caller in the last hour; new sessions are refused "
                "for now",
                wait,
            )

    def failed(self, policy: TenantPolicy, source: str) -> bool:
        """Counts a failure; -> True when this one reaches the budget (audit it once)."""
        if not source:
            return False
        key = (policy.tenant, source)
        times = self._window(key)
        times.append(self.clock())
        self._failures.move_to_end(key)
        reached = len(times) == policy.lockout.source_failures_per_hour
        if reached and self.metrics is not None:
            self.metrics.lockout("source")
        return reached
