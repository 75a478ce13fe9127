"""The decision engine: evidence + tenant policy -> one decision with its reasons."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from authsvc.audio.quality import Quality
from authsvc.errors import ConfigError
from authsvc.policy.schema import TenantPolicy, VoiceRules
from authsvc.scoring.calibration import Calibration


class Outcome(enum.Enum):
    PENDING = "pending"
    AUTHENTICATED = "authenticated"
    REJECTED = "rejected"
    NOT_ENROLLED = "not_enrolled"
    STEP_UP_REQUIRED = "step_up_required"
    OPTED_OUT = "opted_out"


@dataclass(frozen=True)
class VoiceEvidence:
    score: float
    threshold: float
    target_far: float
    encoder_id: str
    encoder_version: str
    enrolled_samples: int


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    policy_id: str
    net_speech_s: float
    required_net_speech_s: float
    evidence: tuple[VoiceEvidence, ...] = ()
    quality: tuple[Quality, ...] = ()
    reason: str = ""
    final: bool = False
    sequence: int = 0


def voice_threshold(rules: VoiceRules, calibration: Calibration | None) -> tuple[float, float]:
    """-> (score threshold, target FAR it stands for; 0 when the policy fixed the threshold)."""
    if rules.threshold is not None:
        return rules.threshold, 0.0
    if calibration is None:
        raise ConfigError("voice.target_far needs a calibrated encoder; set voice.threshold instead")
    return calibration.threshold_for(rules.target_far), rules.target_far


def decide_voice(
    policy: TenantPolicy,
    net_speech_s: float,
    evidence: VoiceEvidence | None,
    quality: tuple[Quality, ...] = (),
) -> Decision:
    """Voice-only decision; `evidence` is None until there is enough speech to score."""
    rules = policy.voice
    common = dict(
        policy_id=policy.policy_id,
        net_speech_s=net_speech_s,
        required_net_speech_s=rules.min_net_speech_s,
        quality=quality,
    )
    if evidence is None:
        return Decision(
            Outcome.PENDING,
            reason=f"{net_speech_s:.2f} s of net speech, {rules.min_net_speech_s:.2f} s needed",
            **common,
        )
    if evidence.score >= evidence.threshold:
        outcome, verb = Outcome.AUTHENTICATED, "meets"
    else:
        outcome, verb = Outcome.REJECTED, "is below"
    return Decision(
        outcome,
        evidence=(evidence,),
        reason=f"voice score {evidence.score:.3f} {verb} threshold {evidence.threshold:.3f}",
        **common,
    )


def not_enrolled(policy: TenantPolicy, customer_id: str) -> Decision:
    return Decision(
        Outcome.NOT_ENROLLED,
        policy_id=policy.policy_id,
        net_speech_s=0.0,
        required_net_speech_s=policy.voice.min_net_speech_s,
        reason=f"customer {customer_id!r} has no voice template",
    )
