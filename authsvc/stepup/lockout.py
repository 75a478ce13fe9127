"""Consecutive-failure lockout for one (tenant, customer, factor), and the throttling errors.

NIST SP 800-63B 5.2.2 asks verifiers to limit consecutive failed attempts on
an account to no more than 100. Two limits implement that:

* every `max_failures` consecutive failures (default 5) lock the factor for
  `lockout_s` seconds (default 15 minutes), after which a fresh round starts;
* `max_consecutive` failures without a success (default 100, never more)
  disable the factor until an operator resets it (`Lockout.reset()`), so a
  patient attacker cannot keep guessing round after round.

A success resets both counters. The state is a frozen dataclass; every call
returns the next state for the caller to store.
"""

from __future__ import annotations

from dataclasses import dataclass

from authsvc.errors import AuthsvcError, ConfigError, IntegrityError
from authsvc.stepup import as_count, as_flag, as_time, dump_state, load_state

NIST_MAX_CONSECUTIVE = 100


class LockedOut(AuthsvcError):
    """Too many failures: the factor refuses attempts until `retry_after_s` has passed.

    `retry_after_s` is None when the factor is disabled until an operator resets it.
    """

    reason = "LOCKED_OUT"

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(AuthsvcError):
    """Too many requests (e.g. codes issued) in a window; retry after `retry_after_s` seconds."""

    reason = "RATE_LIMITED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LockoutState:
    """`failures`: in the current round; `consecutive`: since the last success;
    `locked_until`: epoch seconds (0 when not locked); `disabled`: needs an operator reset."""

    failures: int = 0
    consecutive: int = 0
    locked_until: float = 0.0
    disabled: bool = False

    def to_bytes(self) -> bytes:
        return dump_state(
            "lockout",
            {
                "failures": self.failures,
                "consecutive": self.consecutive,
                "locked_until": self.locked_until,
                "disabled": self.disabled,
            },
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LockoutState:
        doc = load_state(data, "lockout")
        try:
            state = cls(
                failures=as_count(doc["failures"]),
                consecutive=as_count(doc["consecutive"]),
                locked_until=as_time(doc["locked_until"]),
                disabled=as_flag(doc["disabled"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"lockout state: corrupt ({exc})") from None
        return state


@dataclass(frozen=True)
class Lockout:
    """The lockout rules of one factor, as a tenant policy sets them."""

    max_failures: int = 5
    lockout_s: float = 900.0
    max_consecutive: int = NIST_MAX_CONSECUTIVE

    def __post_init__(self) -> None:
        if not 1 <= self.max_failures <= NIST_MAX_CONSECUTIVE:
            raise ConfigError(f"max_failures must be 1..{NIST_MAX_CONSECUTIVE}, got {self.max_failures}")
        if not self.lockout_s > 0:
            raise ConfigError(f"lockout_s must be positive, got {self.lockout_s}")
        if not self.max_failures <= self.max_consecutive <= NIST_MAX_CONSECUTIVE:
            raise ConfigError(
                f"max_consecutive must be max_failures..{NIST_MAX_CONSECUTIVE} (NIST SP 800-63B 5.2.2), "
                f"got {self.max_consecutive}"
            )

    def check(self, state: LockoutState, now: float) -> None:
        """Raise `LockedOut` if an attempt may not be made now; call before evaluating a code."""
        if state.disabled:
            raise LockedOut(
                f"{state.consecutive} consecutive failures; the factor is disabled until an operator "
                "resets it",
                None,
            )
        if state.locked_until > now:
            raise LockedOut(
                f"too many failed attempts; try again in {state.locked_until - now:.0f} s",
                state.locked_until - now,
            )

    def is_locked(self, state: LockoutState, now: float) -> bool:
        return state.disabled or state.locked_until > now

    def record_failure(self, state: LockoutState, now: float) -> LockoutState:
        """The next state after a failed attempt; locks (or disables) once a limit is reached.

        A failure recorded while already locked changes nothing: the attempt should not have
        been evaluated (call `check` first), and it must not extend the lock indefinitely.
        """
        if self.is_locked(state, now):
            return state
        failures, consecutive = state.failures + 1, state.consecutive + 1
        if consecutive >= self.max_consecutive:
            return LockoutState(0, consecutive, 0.0, True)
        if failures >= self.max_failures:
            return LockoutState(0, consecutive, now + self.lockout_s, False)
        return LockoutState(failures, consecutive, state.locked_until, False)

    def record_success(self, state: LockoutState) -> LockoutState:
        return LockoutState()

    def reset(self) -> LockoutState:
        """An operator's unlock (including of a disabled factor)."""
        return LockoutState()

    def attempts_left(self, state: LockoutState, now: float) -> int:
        """Failures still allowed before the next lock (0 while locked)."""
        if self.is_locked(state, now):
            return 0
        return min(self.max_failures - state.failures, self.max_consecutive - state.consecutive)


# Delay mode: the first delay, doubled with each further failure, and its ceiling.
BIOMETRIC_DELAY_S = 30.0
MAX_BIOMETRIC_DELAY_S = 86400.0


@dataclass(frozen=True)
class BiometricLockout:
    """Consecutive failed biometric attempts (NIST SP 800-63B 3.2.3).

    At `limit` failures the biometric stops deciding: with mode "step_up" (and another factor
    to offer) it is disabled until that factor or an operator succeeds; otherwise each further
    attempt waits 30 s, doubling per failure (at most a day). State: `LockoutState`, where
    `failures` counts since the biometric was last (re-)enabled and `consecutive` since its last
    success: another factor re-enables it but does not clear `consecutive`, so NIST's 100 in a
    row still disable it until an operator resets it, however often a second factor is used.
    """

    limit: int = 5
    mode: str = "step_up"

    def record_failure(self, state: LockoutState, now: float, can_step_up: bool) -> LockoutState:
        """The next state after a failed attempt; unchanged while the biometric is off or waiting
        (that attempt should not have been scored)."""
        if state.disabled or state.locked_until > now:
            return state
        failures, consecutive = state.failures + 1, state.consecutive + 1
        if consecutive >= NIST_MAX_CONSECUTIVE or (failures >= self.limit and self.steps_up(can_step_up)):
            return LockoutState(failures, consecutive, 0.0, True)
        if failures >= self.limit:
            delay = min(BIOMETRIC_DELAY_S * 2.0 ** (failures - self.limit), MAX_BIOMETRIC_DELAY_S)
            return LockoutState(failures, consecutive, now + delay, False)
        return LockoutState(failures, consecutive, 0.0, False)

    def reenabled(self, state: LockoutState) -> LockoutState:
        """After another factor succeeded: a fresh round, the run toward NIST's cap kept."""
        if state.consecutive >= NIST_MAX_CONSECUTIVE:
            return state  # only an operator lifts that
        return LockoutState(0, state.consecutive, 0.0, False)

    def steps_up(self, can_step_up: bool) -> bool:
        return self.mode == "step_up" and can_step_up

    def operator_only(self, state: LockoutState) -> bool:
        return state.disabled and (state.consecutive >= NIST_MAX_CONSECUTIVE or self.mode != "step_up")

    def attempts_left(self, state: LockoutState, now: float) -> int:
        if state.disabled or state.locked_until > now:
            return 0
        return max(0, min(self.limit - state.failures, NIST_MAX_CONSECUTIVE - state.consecutive))
