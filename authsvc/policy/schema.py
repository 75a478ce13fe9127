"""Tenant policy: what evidence a tenant needs before a decision, as a validated dataclass.

Policies are TOML files, one per tenant (`<data dir>/policies/<tenant>.toml`);
a tenant without a file gets the embedded default. Every field error names the
field and the problem.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from authsvc.errors import ConfigError


@dataclass(frozen=True)
class VoiceRules:
    # Target false-accept rate; the threshold comes from the encoder's calibration.
    target_far: float = 0.01
    # Optional raw score threshold that overrides target_far (for uncalibrated encoders).
    threshold: float | None = None
    min_net_speech_s: float = 3.0
    # Re-decide at most once per this many seconds of new net speech.
    redecide_interval_s: float = 2.0
    # Net speech an enrollment sample needs to be accepted.
    min_enroll_speech_s: float = 1.5
    # Most recent speech kept per session for embedding (bounds memory and compute).
    max_window_s: float = 30.0


@dataclass(frozen=True)
class TenantPolicy:
    tenant: str
    policy_id: str
    voice: VoiceRules = field(default_factory=VoiceRules)


_LIMITS: dict[str, tuple[float, float]] = {
    "target_far": (1e-6, 0.5),
    "threshold": (-1.0, 1.0),
    "min_net_speech_s": (0.5, 60.0),
    "redecide_interval_s": (0.5, 600.0),
    "min_enroll_speech_s": (0.5, 60.0),
    "max_window_s": (3.0, 300.0),
}


def _voice_rules(raw: dict[str, Any], origin: str) -> VoiceRules:
    known = {f.name for f in fields(VoiceRules)}
    for key, value in raw.items():
        name = f"voice.{key}"
        if key not in known:
            raise ConfigError(f"{origin}: unknown field {name!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{origin}: {name} must be a number, got {type(value).__name__}")
        lo, hi = _LIMITS[key]
        if not lo <= value <= hi:
            raise ConfigError(f"{origin}: {name} = {value} is outside [{lo:g}, {hi:g}]")
    rules = VoiceRules(**{k: float(v) for k, v in raw.items()})
    if rules.max_window_s < rules.min_net_speech_s:
        raise ConfigError(f"{origin}: voice.max_window_s must be >= voice.min_net_speech_s")
    return rules


def parse_policy(text: str, tenant: str, origin: str) -> TenantPolicy:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from exc
    unknown = set(raw) - {"tenant", "voice"}
    if unknown:
        raise ConfigError(f"{origin}: unknown section or field {sorted(unknown)[0]!r}")
    if "tenant" in raw and raw["tenant"] != tenant:
        raise ConfigError(f"{origin}: tenant = {raw['tenant']!r} but the file is for tenant {tenant!r}")
    voice = raw.get("voice", {})
    if not isinstance(voice, dict):
        raise ConfigError(f"{origin}: [voice] must be a table")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return TenantPolicy(tenant=tenant, policy_id=f"{tenant}@{digest}", voice=_voice_rules(voice, origin))


class PolicyBook:
    """Looks up a tenant's policy; re-reads a file when it changes on disk."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._cache: dict[str, tuple[float, TenantPolicy]] = {}

    def get(self, tenant: str) -> TenantPolicy:
        path = self.directory / f"{tenant}.toml" if self.directory else None
        if path is None or not path.exists():
            return TenantPolicy(tenant=tenant, policy_id="default")
        mtime = path.stat().st_mtime
        cached = self._cache.get(tenant)
        if cached and cached[0] == mtime:
            return cached[1]
        policy = parse_policy(path.read_text(), tenant, str(path))
        self._cache[tenant] = (mtime, policy)
        return policy
