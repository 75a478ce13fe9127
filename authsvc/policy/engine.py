"""The decision engine: evidence + customer + tenant policy -> one decision with its reasons.

Fusion: each modality's calibrated score is a natural-log likelihood ratio
(LLR); modalities are treated as independent, so their LLRs add. The fused LLR
must reach the strictest threshold among the modalities present, each
threshold being the LLR at that modality's target false-accept rate. With one
modality this is exactly that modality's FAR threshold; a second modality can
only help when its own evidence favours the claimed customer.
"""

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
class ModalityEvidence:
    modality: str  # "voice" | "keystroke_fixed" | "keystroke_free"
    score: float
    llr: float
    threshold: float  # in score units
    threshold_llr: float
    target_far: float  # 0 when the policy fixed the threshold
    encoder_id: str
    encoder_version: str
    enrolled_samples: int
    profile: str = ""


@dataclass(frozen=True)
class IssuedAssertion:
    token: str
    id: str
    tenant: str
    customer_id: str
    methods: tuple[str, ...]
    assurance_level: str
    channel: str
    issued_at: float
    expires_at: float
    key_id: str
    # The authentication event (shared by the assertions one session issues).
    auth_id: str = ""


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    policy_id: str
    net_speech_s: float = 0.0
    required_net_speech_s: float = 0.0
    evidence: tuple[ModalityEvidence, ...] = ()
    quality: tuple[Quality, ...] = ()
    reason: str = ""
    # The reason without scores or thresholds, for principals not granted evidence ("" = reason).
    summary: str = ""
    final: bool = False
    sequence: int = 0
    step_up_factors: tuple[str, ...] = ()
    fused_llr: float = 0.0
    fused_threshold_llr: float = 0.0
    methods: tuple[str, ...] = ()
    assurance_level: str = ""
    assertion: IssuedAssertion | None = None
    attempts_remaining: int = 0
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class CustomerView:
    """What the engine needs to know of the claimed customer."""

    enrolled: frozenset[str]  # modalities with a usable template
    opted_out: bool = False
    factors: tuple[str, ...] = ()  # second factors ready to use


@dataclass(frozen=True)
class StepUpState:
    passed_factor: str | None = None
    attempts_remaining: int = 0
    retry_after_s: float = 0.0  # > 0 while locked out
    note: str = ""


def voice_threshold(rules: VoiceRules, calibration: Calibration | None) -> tuple[float, float]:
    """-> (score threshold, target FAR it stands for; 0 when the policy fixed the threshold)."""
    if rules.threshold is not None:
        return rules.threshold, 0.0
    if calibration is None:
        raise ConfigError("voice.target_far needs a calibrated encoder; set voice.threshold instead")
    return calibration.threshold_for(rules.target_far), rules.target_far


def decide(
    policy: TenantPolicy,
    customer: CustomerView,
    evidence: tuple[ModalityEvidence, ...],
    step: StepUpState,
    net_speech_s: float = 0.0,
    quality: tuple[Quality, ...] = (),
) -> Decision:
    base = {
        "policy_id": policy.policy_id,
        "net_speech_s": net_speech_s,
        "required_net_speech_s": policy.voice.min_net_speech_s,
        "quality": quality,
        "evidence": evidence,
    }
    if customer.opted_out:
        return Decision(Outcome.OPTED_OUT, reason="the customer opted out of biometrics", **base)
    if step.retry_after_s > 0:
        return Decision(
            Outcome.REJECTED,
            reason=f"locked out after repeated failures; retry in {step.retry_after_s:.0f} s",
            retry_after_s=step.retry_after_s,
            **base,
        )
    if not customer.enrolled:
        return Decision(Outcome.NOT_ENROLLED, reason="the customer has no usable biometric template", **base)
    if not evidence:
        return Decision(
            Outcome.PENDING,
            reason=f"{net_speech_s:.2f} s of net speech, {policy.voice.min_net_speech_s:.2f} s needed",
            **base,
        )
    fused = sum(e.llr for e in evidence)
    needed = max(e.threshold_llr for e in evidence)
    fusion = {"fused_llr": fused, "fused_threshold_llr": needed}
    methods = tuple(dict.fromkeys("voice" if e.modality == "voice" else "typing" for e in evidence))
    detail = ", ".join(f"{e.modality} LLR {e.llr:+.2f}" for e in evidence)
    if fused < needed:
        return Decision(
            Outcome.REJECTED,
            reason=f"fused LLR {fused:+.2f} is below {needed:+.2f} ({detail})",
            summary="the biometric evidence does not match the claimed customer",
            **fusion,
            **base,
        )
    matched = f"biometric match: fused LLR {fused:+.2f} >= {needed:+.2f} ({detail})"
    if not policy.step_up.required:
        return Decision(
            Outcome.AUTHENTICATED,
            reason=matched,
            summary="biometric match",
            methods=methods,
            assurance_level="AAL1",
            **fusion,
            **base,
        )
    if step.passed_factor:
        return Decision(
            Outcome.AUTHENTICATED,
            reason=f"{matched}; second factor {step.passed_factor} verified",
            summary=f"biometric match; second factor {step.passed_factor} verified",
            methods=(*methods, step.passed_factor),
            assurance_level="AAL2",
            **fusion,
            **base,
        )
    usable = tuple(f for f in policy.step_up.factors if f in customer.factors)
    why = step.note or (
        "a second factor is required by the tenant's policy"
        if usable
        else "a second factor is required, but the customer has none of the allowed factors set up"
    )
    return Decision(
        Outcome.STEP_UP_REQUIRED,
        reason=f"{matched}; {why}",
        summary=f"biometric match; {why}",
        step_up_factors=usable,
        attempts_remaining=step.attempts_remaining,
        methods=methods,
        **fusion,
        **base,
    )
