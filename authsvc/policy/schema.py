"""Tenant policy: what evidence a tenant needs before each decision, validated on load.

Policies are TOML files, one per tenant (`<policy dir>/<tenant>.toml`); a
tenant without a file gets the `general` preset. A file picks a sector preset
(`general`, `finance`, `health`) and overrides single fields. Every error names
the field and the problem.

Finance and health follow NIST SP 800-63B: a biometric only ever counts
together with a possession factor (step-up is mandatory), its false-match rate
must be at most 1 in 10,000 (5.2.3), and repeated failures lock out (5.2.2,
at most 100 consecutive failures; our presets are much stricter). Every sector
counts each scored decision (a look) as an attempt, caps the looks of a call and
holds each to its share of the per-call target (DecisionRules).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from authsvc.errors import ConfigError
from authsvc.policy.risk import DETECTORS

SECTORS = ("general", "finance", "health")
# A policy may move a tenant up, or sideways between the regulated sectors, never down.
SECTOR_RANK = {"general": 0, "finance": 1, "health": 1}
FACTORS = ("totp", "one_time_code")
NIST_MAX_FMR = 1e-4
NIST_MAX_FAILURES = 100


def _limits(lo: float, hi: float) -> dict[str, Any]:
    return {"limits": (lo, hi)}


@dataclass(frozen=True)
class VoiceRules:
    # Target false-accept rate; the score threshold comes from the encoder's calibration.
    target_far: float = field(default=0.01, metadata=_limits(1e-6, 0.5))
    # A raw score threshold overriding target_far (uncalibrated encoders; general sector only).
    threshold: float | None = field(default=None, metadata=_limits(-1.0, 1.0))
    min_net_speech_s: float = field(default=3.0, metadata=_limits(0.5, 60.0))
    # Whenever voice is fused with typing, the voice alone must still reach its threshold at this
    # false-accept rate: typing can top up a near miss, never carry a voice that does not match.
    floor_far: float = field(default=0.05, metadata=_limits(1e-6, 0.5))
    # Re-decide at most once per this many seconds of new net speech.
    redecide_interval_s: float = field(default=2.0, metadata=_limits(0.5, 600.0))
    # Net speech an enrollment sample needs to be accepted.
    min_enroll_speech_s: float = field(default=1.5, metadata=_limits(0.5, 60.0))
    # Most recent speech kept per session for embedding (bounds memory and compute).
    max_window_s: float = field(default=30.0, metadata=_limits(3.0, 300.0))


@dataclass(frozen=True)
class KeystrokeRules:
    target_far: float = field(default=0.01, metadata=_limits(1e-6, 0.5))
    # Free-text samples shorter than this are not scored (too little rhythm to judge).
    min_free_text_keys: int = field(default=50, metadata=_limits(10, 10_000))
    # Key timings come from the client and can be fabricated: beside voice, typing adds at most
    # this much LLR (evidence against the claim counts in full), and must itself reach its
    # threshold at floor_far.
    max_llr: float = field(default=0.5, metadata=_limits(0.0, 10.0))
    floor_far: float = field(default=0.2, metadata=_limits(1e-6, 0.5))
    # Whether typing alone (a session without audio) may authenticate, at target_far. Otherwise a
    # typing match needs a second factor.
    alone: bool = False


@dataclass(frozen=True)
class StepUpRules:
    # Whether a biometric match alone may authenticate (False) or needs a second factor (True).
    required: bool = False
    factors: tuple[str, ...] = FACTORS
    code_ttl_s: float = field(default=300.0, metadata=_limits(30.0, 3600.0))
    max_codes_per_hour: int = field(default=5, metadata=_limits(1, 100))


@dataclass(frozen=True)
class LockoutRules:
    # Wrong second-factor answers (TOTP, one-time codes) before a timed lock of lockout_s.
    max_failures: int = field(default=10, metadata=_limits(1, NIST_MAX_FAILURES))
    lockout_s: float = field(default=300.0, metadata=_limits(1.0, 86400.0 * 7))
    # Consecutive failed biometric attempts (scored mismatches, wrong passwords or PINs) after
    # which the biometric stops deciding: NIST SP 800-63B 3.2.3 allows 5, or 10 with
    # presentation-attack detection.
    biometric_failures: int = field(default=5, metadata=_limits(1, 10))
    # Then: "step_up" disables the biometric and asks for one of the customer's other factors
    # (a success re-enables it); "delay" waits 30 s, doubling with each further failure. A
    # customer with no other factor always gets the delay.
    biometric_after_limit: str = field(default="step_up", metadata={"choices": ("step_up", "delay")})
    # Whether that other factor then authenticates on its own (AAL1). Where a tenant needs a
    # biometric and a second factor, it must not: passing it re-enables the biometric instead,
    # so failing on purpose never lowers the bar to one factor.
    other_factor_alone: bool = True
    # Failed biometric attempts one calling principal from one source address may cause per
    # hour, over all customers, before its new sessions are refused: one source cannot lock
    # out the customer base.
    source_failures_per_hour: int = field(default=300, metadata=_limits(1, 1_000_000))


@dataclass(frozen=True)
class DecisionRules:
    # Scored decisions (looks) one call may make. Each look is held to target_far / max_looks,
    # so the chance that a call with any number of looks falsely accepts stays at the target
    # whatever the dependence between its looks (Bonferroni). Later looks pool more speech.
    max_looks: int = field(default=3, metadata=_limits(1, 20))


@dataclass(frozen=True)
class AssertionRules:
    lifetime_s: float = field(default=900.0, metadata=_limits(10.0, 86400.0))
    # How many times another channel may accept one assertion.
    max_uses: int = field(default=3, metadata=_limits(1, 1000))
    # How recent an assertion must be to authorize replacing what protects a customer
    # (their templates, a confirmed TOTP secret, the code destination).
    change_window_s: float = field(default=300.0, metadata=_limits(10.0, 3600.0))


@dataclass(frozen=True)
class EnrollmentRules:
    # Whether a live call's voice may be enrolled (EnrollFromSession), once an agent verified the
    # caller by other means.
    passive: bool = True
    # Net speech a voiceprint made from calls needs before it is used (Voice ID's 30 s); until
    # then the calls' speech accumulates, and the customer's enrollment status says what is left.
    passive_min_speech_s: float = field(default=30.0, metadata=_limits(10.0, 600.0))
    # After registering, how long samples and factors may be added without authorization (the
    # operator's enrollment session); afterwards every change needs a fresh assertion or an admin.
    window_s: float = field(default=1800.0, metadata=_limits(60.0, 86400.0))


@dataclass(frozen=True)
class RetentionRules:
    # Days without an enrollment or a successful authentication after which a customer's
    # biometric templates expire and are erased (BIPA: within 3 years of the last interaction;
    # Voice ID expires speakers on the same rule).
    retention_days: int = field(default=1095, metadata=_limits(1, 3650))
    # Days an audit row is kept (a record-keeping rule of its own; 7 years by default).
    audit_days: int = field(default=2555, metadata=_limits(30, 36500))


FRAUD_ACTIONS = ("ignore", "flag", "step_up", "reject")
_ACTION = {"choices": FRAUD_ACTIONS}


@dataclass(frozen=True)
class FraudRules:
    # What a high risk of each detector does to a decision: "ignore" (not reported), "flag"
    # (reported, outcome unchanged), "step_up" (a biometric match needs a second factor),
    # "reject" (the look is a failed attempt, whatever the match).
    replay: str = field(default="step_up", metadata=_ACTION)
    synthetic: str = field(default="flag", metadata=_ACTION)
    fraudster: str = field(default="step_up", metadata=_ACTION)
    # False-match rate of one watchlist comparison (the voice calibration's threshold there): a
    # call screened against N listed voices falsely hits with a chance of about N times this.
    watchlist_far: float = field(default=1e-4, metadata=_limits(1e-6, 0.1))
    # An enrollment sample that matches a listed fraudster: "refuse" it (Voice ID's default) or
    # "flag" it (enrolled, audited as a watchlist match).
    enrollment_on_watchlist: str = field(default="refuse", metadata={"choices": ("refuse", "flag")})


@dataclass(frozen=True)
class TenantPolicy:
    tenant: str
    policy_id: str
    sector: str = "general"
    voice: VoiceRules = field(default_factory=VoiceRules)
    keystroke: KeystrokeRules = field(default_factory=KeystrokeRules)
    step_up: StepUpRules = field(default_factory=StepUpRules)
    lockout: LockoutRules = field(default_factory=LockoutRules)
    decision: DecisionRules = field(default_factory=DecisionRules)
    assertion: AssertionRules = field(default_factory=AssertionRules)
    enrollment: EnrollmentRules = field(default_factory=EnrollmentRules)
    fraud: FraudRules = field(default_factory=FraudRules)
    retention: RetentionRules = field(default_factory=RetentionRules)


SECTIONS: dict[str, type] = {
    "voice": VoiceRules,
    "keystroke": KeystrokeRules,
    "step_up": StepUpRules,
    "lockout": LockoutRules,
    "decision": DecisionRules,
    "assertion": AssertionRules,
    "enrollment": EnrollmentRules,
    "fraud": FraudRules,
    "retention": RetentionRules,
}

_REGULATED: dict[str, dict[str, Any]] = {
    "voice": {"target_far": NIST_MAX_FMR, "floor_far": 0.01},
    # Forged typing must not move a 1e-4 bar at all: in these sectors it can only count against.
    "keystroke": {"target_far": NIST_MAX_FMR, "max_llr": 0.0},
    "step_up": {"required": True},
    "lockout": {"max_failures": 5, "lockout_s": 900.0, "other_factor_alone": False},
    "assertion": {"lifetime_s": 300.0, "max_uses": 1},
    # Never authenticate on biometrics while a recording or a known fraudster is suspected.
    "fraud": {"replay": "reject", "synthetic": "reject", "fraudster": "reject"},
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"general": {}, "finance": _REGULATED, "health": _REGULATED}


def _check_value(name: str, f: Any, value: Any, origin: str) -> Any:
    kind = f.type if isinstance(f.type, str) else str(f.type)
    if "choices" in f.metadata:
        if value not in f.metadata["choices"]:
            raise ConfigError(
                f"{origin}: {name} must be one of {', '.join(f.metadata['choices'])}, got {value!r}"
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: {name} must be true or false, got {value!r}")
        return value
    if kind.startswith("tuple"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{origin}: {name} must be a list of strings")
        unknown = [v for v in value if v not in FACTORS]
        if unknown:
            raise ConfigError(
                f"{origin}: {name} has unknown factor {unknown[0]!r} (known: {', '.join(FACTORS)})"
            )
        return tuple(dict.fromkeys(value))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{origin}: {name} must be a number, got {type(value).__name__}")
    if kind == "int" and not float(value).is_integer():
        raise ConfigError(f"{origin}: {name} must be a whole number, got {value}")
    if not math.isfinite(value):
        raise ConfigError(f"{origin}: {name} must be finite, got {value}")
    lo, hi = f.metadata["limits"]
    if not lo <= value <= hi:
        raise ConfigError(f"{origin}: {name} = {value} is outside [{lo:g}, {hi:g}]")
    return int(value) if kind == "int" else float(value)


def _section(cls: type, base: Any, raw: Any, section: str, origin: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: [{section}] must be a table")
    by_name = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in by_name:
            raise ConfigError(
                f"{origin}: unknown field '{section}.{key}' (known: {', '.join(sorted(by_name))})"
            )
        values[key] = _check_value(f"{section}.{key}", by_name[key], value, origin)
    return replace(base, **values)


def _check_sector_rules(p: TenantPolicy, origin: str) -> None:
    if p.voice.max_window_s < p.voice.min_net_speech_s:
        raise ConfigError(f"{origin}: voice.max_window_s must be >= voice.min_net_speech_s")
    for modality in ("voice", "keystroke"):
        rules = getattr(p, modality)
        if rules.floor_far < rules.target_far:
            raise ConfigError(f"{origin}: {modality}.floor_far must be >= {modality}.target_far")
    if p.step_up.required and not p.step_up.factors:
        raise ConfigError(f"{origin}: step_up.factors must name at least one factor when step-up is required")
    if p.sector == "general":
        return
    why = f"sector {p.sector!r} (NIST SP 800-63B)"
    for modality in ("voice", "keystroke"):
        far = getattr(p, modality).target_far
        if far > NIST_MAX_FMR:
            raise ConfigError(
                f"{origin}: {modality}.target_far = {far:g} exceeds the false-match rate of at most "
                f"{NIST_MAX_FMR:g} that {why} allows"
            )
    if p.voice.threshold is not None:
        raise ConfigError(f"{origin}: voice.threshold is not allowed for {why}; give voice.target_far")
    if p.lockout.other_factor_alone:
        raise ConfigError(
            f"{origin}: lockout.other_factor_alone = true is not allowed for {why}: a second factor "
            "alone is one factor"
        )
    # Step-up is required anyway here, so anything short of "reject" would still authenticate
    # a suspected recording or fraudster on the biometric plus a code.
    weak = [d for d in DETECTORS if getattr(p.fraud, d) != "reject"]
    if weak:
        raise ConfigError(
            f"{origin}: fraud.{weak[0]} = {getattr(p.fraud, weak[0])!r} is not allowed for {why}: a "
            "high risk must reject"
        )
    if not p.step_up.required:
        raise ConfigError(
            f"{origin}: step_up.required = false is not allowed for {why}: a biometric counts only "
            "together with a possession factor"
        )


def build_policy(tenant: str, raw: dict[str, Any], origin: str, policy_id: str) -> TenantPolicy:
    unknown = set(raw) - {"tenant", "sector", *SECTIONS}
    if unknown:
        raise ConfigError(f"{origin}: unknown section or field {sorted(unknown)[0]!r}")
    if "tenant" in raw and raw["tenant"] != tenant:
        raise ConfigError(f"{origin}: tenant = {raw['tenant']!r} but the file is for tenant {tenant!r}")
    sector = raw.get("sector", "general")
    if sector not in SECTORS:
        raise ConfigError(f"{origin}: sector = {sector!r} is not one of {', '.join(SECTORS)}")
    policy = TenantPolicy(tenant=tenant, policy_id=policy_id, sector=sector)
    preset = PRESETS[sector]
    for name, cls in SECTIONS.items():
        section = replace(getattr(policy, name), **preset.get(name, {}))
        if name in raw:
            section = _section(cls, section, raw[name], name, origin)
        policy = replace(policy, **{name: section})
    _check_sector_rules(policy, origin)
    return policy


def parse_policy(text: str, tenant: str, origin: str) -> TenantPolicy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return build_policy(tenant, raw, origin, f"{tenant}@{digest}")


def default_policy(tenant: str) -> TenantPolicy:
    return build_policy(tenant, {}, "default policy", "default")


def check_policy_file(path: Path) -> TenantPolicy:
    """Validates a policy file on its own; its tenant is the `tenant` field or the file name."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        tenant = tomllib.loads(text).get("tenant", path.stem)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_policy(text, str(tenant), str(path))


class PolicyBook:
    """Looks up a tenant's policy; re-reads a file when it changes on disk (no restart).

    `on_change(tenant, old_id, new_id)` is called when a tenant's effective
    policy changes, so the change can be audited.
    """

    def __init__(
        self, directory: Path | None, on_change: Callable[[str, str, str], None] | None = None
    ) -> None:
        self.directory = directory
        self.on_change = on_change
        self._cache: dict[str, tuple[tuple[int, int, int] | None, TenantPolicy]] = {}

    def get(self, tenant: str, sector: str = "general") -> TenantPolicy:
        """The tenant's policy; `sector` is the one the tenant was provisioned with, a floor.

        A regulated tenant (finance, health) with no file, an unreadable or invalid one, or one
        of a weaker sector, fails closed: PolicyUnusable, never a weaker preset."""
        path = self.directory / f"{tenant}.toml" if self.directory else None
        stamp = None
        try:
            if path is not None and path.exists():
                st = path.stat()
                # Size and inode too: an edit within the clock's resolution, or a deploy
                # that replaces the file keeping its timestamp, must still be seen.
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._cache.get(tenant)
            if cached and cached[0] == stamp:
                policy = cached[1]
            else:
                if stamp is None:
                    policy = default_policy(tenant)
                else:
                    try:
                        text = path.read_text()
                    except (OSError, UnicodeDecodeError) as exc:
                        raise ConfigError(f"{path}: cannot read ({exc})") from exc
                    policy = parse_policy(text, tenant, str(path))
                self._cache[tenant] = (stamp, policy)
                if cached and cached[1].policy_id != policy.policy_id and self.on_change:
                    self.on_change(tenant, cached[1].policy_id, policy.policy_id)
        except ConfigError as exc:
            raise PolicyUnusable(tenant, str(exc), path) from exc
        if SECTOR_RANK[policy.sector] < SECTOR_RANK.get(sector, 1):
            where = f"{path}" if stamp is not None else f"no policy file ({path})"
            raise PolicyUnusable(
                tenant,
                f"tenant {tenant!r} was provisioned as {sector!r}, but {where} gives sector "
                f"{policy.sector!r}; a policy may not lower the sector, so the tenant fails closed",
                path,
            )
        return policy


class PolicyUnusable(ConfigError):
    """The tenant's policy cannot be used; its requests fail closed (FAILED_PRECONDITION).

    The message (with the file's path) is for the operator's log; API callers get
    `public_message`, which names the file but not where the service keeps it."""

    reason = "POLICY_UNUSABLE"

    def __init__(self, tenant: str, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.tenant = tenant
        public = message.replace(str(path.parent) + "/", "") if path is not None else message
        self.public_message = f"the tenant's policy is unusable, so its requests are refused: {public}"
