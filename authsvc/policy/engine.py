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
import math
from dataclasses import dataclass

from authsvc.audio.quality import Quality
from authsvc.errors import ConfigError
from authsvc.policy.risk import DETECTORS, NO_RISK, FraudAssessment
from authsvc.policy.schema import TenantPolicy
from authsvc.scoring.calibration import Calibration


class Outcome(enum.Enum):
    PENDING = "pending"
    AUTHENTICATED = "authenticated"
    REJECTED = "rejected"
    NOT_ENROLLED = "not_enrolled"
    STEP_UP_REQUIRED = "step_up_required"
    OPTED_OUT = "opted_out"
    EXPIRED = "expired"  # the templates expired under the tenant's retention: enroll again


#: Outcomes that say the customer has nothing to be scored against.
UNENROLLED = (Outcome.NOT_ENROLLED, Outcome.EXPIRED)


@dataclass(frozen=True)
class ModalityEvidence:
    modality: str  # "voice" | "keystroke_fixed" | "keystroke_free"
    score: float
    llr: float
    threshold: float  # in score units: the bar this modality is held to (its own, or its floor)
    threshold_llr: float
    target_far: float  # what `threshold` stands for; 0 when the policy fixed the threshold
    encoder_id: str
    encoder_version: str
    enrolled_samples: int
    profile: str = ""
    # The LLR the modality must reach whenever it is fused with another (its floor).
    floor_llr: float = -math.inf
    # False where no calibration fits the channel (DTMF keypad timing is scored with the
    # keyboard calibration): such a modality never decides alone and adds at most the cap.
    calibrated: bool = True

    @property
    def client_timed(self) -> bool:
        """Typing and DTMF timings are measured by the client, so they can be fabricated."""
        return self.modality != "voice"


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
    # Beside the outcome: what the fraud detectors said (those the policy does not ignore).
    fraud: FraudAssessment = NO_RISK


@dataclass(frozen=True)
class CustomerView:
    """What the engine needs to know of the claimed customer."""

    enrolled: frozenset[str]  # modalities with a usable template
    opted_out: bool = False
    factors: tuple[str, ...] = ()  # second factors ready to use
    expired: bool = False  # the templates expired under the tenant's retention


@dataclass(frozen=True)
class StepUpState:
    passed_factor: str | None = None
    # What the passed factor is: "totp", "sms" (a restricted authenticator) or "email".
    passed_kind: str = ""
    attempts_remaining: int = 0
    retry_after_s: float = 0.0  # > 0 while locked out
    note: str = ""
    # The biometric is disabled after repeated failures: another factor decides alone.
    biometric_off: bool = False


# NIST SP 800-63B rev 4: a biometric counts only together with a physical authenticator; an
# SMS code is a restricted out-of-band authenticator; an e-mailed code is no authenticator.
LEVEL_WITH_BIOMETRIC = {"totp": "AAL2", "sms": "AAL2", "email": ""}
LEVEL_ALONE = {"totp": "AAL1", "sms": "AAL1", "email": ""}
NO_AAL = "no AAL: a biometric alone is not an authenticator under NIST SP 800-63B"


def level_note(level: str, kind: str = "") -> str:
    if level:
        return level + (" (an SMS code is a restricted authenticator)" if kind == "sms" else "")
    if kind == "email":
        return "no AAL: an e-mailed code is not an authenticator under NIST SP 800-63B"
    return NO_AAL


def look_far(policy: TenantPolicy, target_far: float) -> float:
    """The false-accept rate each look is held to, so that a call's looks together keep the
    target (Bonferroni: the union of max_looks events has at most their summed probability)."""
    return target_far / policy.decision.max_looks


def voice_threshold(policy: TenantPolicy, calibration: Calibration | None) -> tuple[float, float]:
    """-> (score threshold of one look, the FAR it stands for; 0 when the policy fixed it)."""
    rules = policy.voice
    if rules.threshold is not None:
        return rules.threshold, 0.0
    if calibration is None:
        raise ConfigError("voice.target_far needs a calibrated encoder; set voice.threshold instead")
    far = look_far(policy, rules.target_far)
    return calibration.threshold_for(far), far


def fuse(policy: TenantPolicy, evidence: tuple[ModalityEvidence, ...]) -> tuple[float, float, str]:
    """-> (fused LLR, the LLR it must reach, why it cannot pass whatever it adds up to; "" if it can).

    Voice, where present, leads: the bar is its threshold, and a client-timed modality adds at
    most `keystroke.max_llr` (evidence against the claim counts in full). Every modality in a
    fusion must reach its own floor. Without voice, typing is held to its own per-look
    thresholds; an uncalibrated modality is held to the same bar but never decides alone
    (`decide` asks for a second factor), so relabelling a sample cannot lower the bar.
    """
    cap = policy.keystroke.max_llr
    voice = [e for e in evidence if not e.client_timed]
    fused = sum(min(e.llr, cap) if e.client_timed and voice else e.llr for e in evidence)
    needed = voice[0].threshold_llr if voice else max(e.threshold_llr for e in evidence)
    broken = [e for e in evidence if not math.isfinite(e.llr)]
    if broken or not math.isfinite(fused):
        # Fail closed: a NaN compares False both ways (a degenerate embedding gives one).
        return fused, needed, "the evidence has no finite score"
    if len(evidence) > 1:
        low = [e for e in evidence if not e.llr >= e.floor_llr]
        if low:
            return fused, needed, ", ".join(f"{e.modality} LLR {e.llr:+.2f} is below its floor" for e in low)
    return fused, needed, ""


def decide(
    policy: TenantPolicy,
    customer: CustomerView,
    evidence: tuple[ModalityEvidence, ...],
    step: StepUpState,
    net_speech_s: float = 0.0,
    quality: tuple[Quality, ...] = (),
    voice_required: bool = False,
    fraud: FraudAssessment = NO_RISK,
) -> Decision:
    """`voice_required`: the call carries audio, so only a voice match can authenticate it.
    `fraud`: the detectors' risks; `policy.fraud` says what a high one does to a match."""
    actions = {d: getattr(policy.fraud, d) for d in DETECTORS}
    fraud = FraudAssessment(tuple(r for r in fraud.risks if actions.get(r.detector) != "ignore"))
    base = {
        "policy_id": policy.policy_id,
        "net_speech_s": net_speech_s,
        "required_net_speech_s": policy.voice.min_net_speech_s,
        "quality": quality,
        "evidence": evidence,
        "fraud": fraud,
    }
    if customer.opted_out:
        return Decision(Outcome.OPTED_OUT, reason="the customer opted out of biometrics", **base)
    if step.retry_after_s > 0:
        wait = (
            "until a tenant administrator unlocks"
            if math.isinf(step.retry_after_s)
            else (f"retry in {step.retry_after_s:.0f} s")
        )
        return Decision(
            Outcome.REJECTED,
            reason=f"locked out after repeated failures; {wait}",
            retry_after_s=step.retry_after_s,
            **base,
        )
    if step.biometric_off:
        return _other_factor(policy, customer, step, base)
    if customer.expired and (not customer.enrolled or (voice_required and "voice" not in customer.enrolled)):
        return Decision(
            Outcome.EXPIRED,
            reason="the customer's biometric templates expired under the tenant's retention; enroll again",
            **base,
        )
    if not customer.enrolled:
        return Decision(Outcome.NOT_ENROLLED, reason="the customer has no usable biometric template", **base)
    if voice_required and "voice" not in customer.enrolled:
        return Decision(
            Outcome.NOT_ENROLLED, reason="the customer has no voiceprint, and a voice call needs one", **base
        )
    pending = f"{net_speech_s:.2f} s of net speech, {policy.voice.min_net_speech_s:.2f} s needed"
    if not evidence:
        return Decision(Outcome.PENDING, reason=pending, **base)
    fused, needed, floor = fuse(policy, evidence)
    has_voice = any(not e.client_timed for e in evidence)
    fusion = {"fused_llr": fused, "fused_threshold_llr": needed}
    methods = tuple(dict.fromkeys("voice" if e.modality == "voice" else "typing" for e in evidence))
    detail = ", ".join(f"{e.modality} LLR {e.llr:+.2f}" for e in evidence)
    if floor or not fused >= needed:
        why = floor or f"fused LLR {fused:+.2f} is below {needed:+.2f}"
        return Decision(
            Outcome.REJECTED,
            reason=f"{why} ({detail})",
            summary="the biometric evidence does not match the claimed customer",
            **fusion,
            **base,
        )
    if voice_required and not has_voice:
        return Decision(
            Outcome.PENDING,
            reason=f"typing matches, but a voice call is decided by voice: {pending}",
            summary="waiting for the caller's voice",
            **fusion,
            **base,
        )
    matched = f"biometric match: fused LLR {fused:+.2f} >= {needed:+.2f} ({detail})"
    # Keypad timing has no calibration of its own: alone, it can only ask for a second factor.
    uncalibrated = not has_voice and not all(e.calibrated for e in evidence)
    typing_only = not has_voice and (not policy.keystroke.alone or uncalibrated)
    if uncalibrated:
        matched = f"{matched}; keypad timing has no calibration of its own, so it never decides alone"
    risky = fraud.high()
    rejecting = [r for r in risky if actions[r.detector] == "reject"]
    if rejecting:
        # A suspected recording or fraudster is a failed attempt however well it matches.
        risks = ", ".join(f"{r.detector} risk high ({r.reason})" for r in rejecting)
        return Decision(
            Outcome.REJECTED,
            reason=f"{matched}, but {risks}; the tenant's policy rejects it",
            summary=f"rejected: {', '.join(f'{r.detector} risk high' for r in rejecting)}",
            **fusion,
            **base,
        )
    stepping = [r for r in risky if actions[r.detector] == "step_up"]
    if stepping:
        matched = f"{matched}, but {', '.join(f'{r.detector} risk high' for r in stepping)}"
    if not policy.step_up.required and not typing_only and not stepping:
        return Decision(
            Outcome.AUTHENTICATED,
            reason=f"{matched}; {NO_AAL}",
            summary=f"biometric match; {NO_AAL}",
            methods=methods,
            assurance_level="",
            **fusion,
            **base,
        )
    if step.passed_factor:
        level = LEVEL_WITH_BIOMETRIC.get(step.passed_kind, "")
        verified = f"second factor {step.passed_factor} verified; {level_note(level, step.passed_kind)}"
        return Decision(
            Outcome.AUTHENTICATED,
            reason=f"{matched}; {verified}",
            summary=f"biometric match; {verified}",
            methods=(*methods, step.passed_factor),
            assurance_level=level,
            **fusion,
            **base,
        )
    usable = tuple(f for f in policy.step_up.factors if f in customer.factors)
    required = (
        "typing alone does not authenticate under the tenant's policy"
        if typing_only
        else "the tenant's policy requires a second factor"
        if policy.step_up.required or not stepping
        else "the tenant's policy asks for a second factor at that risk"
    )
    why = step.note or (
        f"{required}; a second factor is needed"
        if usable
        else f"{required}, but the customer has none of the allowed second factors set up"
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


def _other_factor(policy: TenantPolicy, customer: CustomerView, step: StepUpState, base: dict) -> Decision:
    """The biometric is disabled after repeated failures: a second factor decides on its own."""
    off = "the biometric is disabled after repeated failed attempts"
    if step.passed_factor and step.passed_kind == "email":
        # An e-mailed code is no authenticator (SP 800-63B rev 4): on its own it lets no one in.
        return Decision(
            Outcome.STEP_UP_REQUIRED,
            reason=f"{off}; an e-mailed code alone does not authenticate: another factor is required",
            step_up_factors=tuple(
                f for f in policy.step_up.factors if f in customer.factors and f != "one_time_code"
            ),
            attempts_remaining=step.attempts_remaining,
            **base,
        )
    if step.passed_factor:
        level = LEVEL_ALONE.get(step.passed_kind, "")
        verified = f"{off}; {step.passed_factor} verified on its own; {level_note(level, step.passed_kind)}"
        return Decision(
            Outcome.AUTHENTICATED,
            reason=verified,
            methods=(step.passed_factor,),
            assurance_level=level,
            **base,
        )
    usable = tuple(f for f in policy.step_up.factors if f in customer.factors)
    if not usable:
        return Decision(
            Outcome.REJECTED,
            reason=f"{off}, and the customer has no other factor; a tenant administrator must unlock",
            retry_after_s=math.inf,
            **base,
        )
    return Decision(
        Outcome.STEP_UP_REQUIRED,
        reason=step.note or f"{off}; another factor is required",
        step_up_factors=usable,
        attempts_remaining=step.attempts_remaining,
        **base,
    )
