"""Mapping between protobuf messages and domain objects; no decisions here."""

from __future__ import annotations

import json
import math

from authsvc import keystroke
from authsvc.api.v1 import assurance_pb2, common_pb2, enrollment_pb2, verification_pb2
from authsvc.audio.codecs import Encoding
from authsvc.audio.quality import Quality
from authsvc.enrollment import CustomerSummary
from authsvc.errors import InvalidInput
from authsvc.policy import risk
from authsvc.policy.engine import Decision, IssuedAssertion, Outcome
from authsvc.store.base import AuditEvent

ENCODINGS = {
    common_pb2.AUDIO_ENCODING_PCM16_LE: Encoding.PCM16_LE,
    common_pb2.AUDIO_ENCODING_MULAW: Encoding.MULAW,
    common_pb2.AUDIO_ENCODING_ALAW: Encoding.ALAW,
}
CHANNELS = {
    common_pb2.CHANNEL_VOICE: "voice",
    common_pb2.CHANNEL_CHAT: "chat",
    common_pb2.CHANNEL_WEB: "web",
    common_pb2.CHANNEL_APP: "app",
}
CHANNEL_PB = {name: value for value, name in CHANNELS.items()}
MODALITIES = {
    "voice": common_pb2.MODALITY_VOICE,
    "keystroke_fixed": common_pb2.MODALITY_KEYSTROKE_FIXED,
    "keystroke_free": common_pb2.MODALITY_KEYSTROKE_FREE,
}
METHODS = {
    common_pb2.AUTH_METHOD_VOICE: "voice",
    common_pb2.AUTH_METHOD_TYPING: "typing",
    common_pb2.AUTH_METHOD_TOTP: "totp",
    common_pb2.AUTH_METHOD_ONE_TIME_CODE: "one_time_code",
}
METHOD_PB = {name: value for value, name in METHODS.items()}
FACTORS = {common_pb2.SECOND_FACTOR_TOTP: "totp", common_pb2.SECOND_FACTOR_ONE_TIME_CODE: "one_time_code"}
FACTOR_PB = {name: value for value, name in FACTORS.items()}
KINDS = {
    common_pb2.KEYSTROKE_KIND_FIXED_TEXT: "fixed",
    common_pb2.KEYSTROKE_KIND_FREE_TEXT: "free",
    common_pb2.KEYSTROKE_KIND_DTMF: "dtmf",
}


RISK_LEVELS = {
    risk.LOW: verification_pb2.RISK_LEVEL_LOW,
    risk.HIGH: verification_pb2.RISK_LEVEL_HIGH,
    risk.NOT_ENOUGH_AUDIO: verification_pb2.RISK_LEVEL_NOT_ENOUGH_AUDIO,
    risk.UNAVAILABLE: verification_pb2.RISK_LEVEL_UNAVAILABLE,
}


def modality_pb(modality: str) -> int:
    """Fixed-text modalities carry a profile name ("keystroke_fixed/pin")."""
    return MODALITIES.get(modality.split("/", 1)[0], common_pb2.MODALITY_UNSPECIFIED)


def methods(values, field: str) -> list[str]:
    out = []
    for v in values:
        if v not in METHODS:
            raise InvalidInput(field, f"unknown method {v}")
        out.append(METHODS[v])
    return out


def factor(value: int, field: str) -> str:
    if value not in FACTORS:
        raise InvalidInput(field, "must be TOTP or ONE_TIME_CODE")
    return FACTORS[value]


def keystroke_sample(pb: common_pb2.KeystrokeSample, field: str) -> tuple[str, keystroke.Sample]:
    """-> (profile name, validated sample); bad events raise InvalidInput naming the event."""
    kind = KINDS.get(pb.kind)
    if kind is None:
        raise InvalidInput(f"{field}.kind", "must be FIXED_TEXT, FREE_TEXT or DTMF")
    events = [keystroke.KeyEvent(e.key, e.down_s, e.up_s if e.HasField("up_s") else None) for e in pb.events]
    try:
        sample = keystroke.make_sample(events, kind, pb.text or None)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}.{exc.field}", exc.description) from None
    return pb.profile, sample


QUALITY = {
    Quality.TOO_SHORT: common_pb2.QUALITY_ISSUE_TOO_SHORT,
    Quality.CLIPPED: common_pb2.QUALITY_ISSUE_CLIPPED,
    Quality.SILENT: common_pb2.QUALITY_ISSUE_SILENT,
}
OUTCOMES = {
    Outcome.PENDING: verification_pb2.OUTCOME_PENDING,
    Outcome.AUTHENTICATED: verification_pb2.OUTCOME_AUTHENTICATED,
    Outcome.REJECTED: verification_pb2.OUTCOME_REJECTED,
    Outcome.NOT_ENROLLED: verification_pb2.OUTCOME_NOT_ENROLLED,
    Outcome.STEP_UP_REQUIRED: verification_pb2.OUTCOME_STEP_UP_REQUIRED,
    Outcome.OPTED_OUT: verification_pb2.OUTCOME_OPTED_OUT,
    Outcome.EXPIRED: verification_pb2.OUTCOME_EXPIRED,
}


def customer_pb(summary: CustomerSummary, passive_min_s: float = 0.0) -> enrollment_pb2.Customer:
    """`passive_min_s`: the tenant policy's net speech for a voiceprint from calls."""
    record, templates = summary.record, summary.templates
    return enrollment_pb2.Customer(
        voice_enrollment=enrollment_pb2.VoiceEnrollment(
            complete=summary.has_voiceprint,
            net_speech_seconds=summary.pending_voice_s,
            required_net_speech_seconds=passive_min_s,
            calls=summary.pending_calls,
        ),
        tenant=record.tenant,
        customer_id=record.customer_id,
        created_unix_ms=record.created_ms,
        last_active_unix_ms=record.last_active_ms,
        expired_unix_ms=record.expired_ms,
        methods=[METHOD_PB[m] for m in record.methods if m in METHOD_PB],
        opted_out=record.opted_out,
        consent=enrollment_pb2.Consent(
            text_version=record.consent_version,
            recorded_unix_ms=record.consent_ms,
            biometrics_allowed=record.registered and not record.opted_out,
        )
        if record.registered
        else None,
        factors=[FACTOR_PB[f] for f in summary.factors],
        templates=[
            enrollment_pb2.TemplateSummary(
                modality=modality_pb(t.modality),
                encoder_id=t.encoder_id,
                encoder_version=t.encoder_version,
                sample_count=t.sample_count,
                updated_unix_ms=t.updated_ms,
            )
            for t in templates
        ],
    )


def decision_pb(
    decision: Decision, session_id: str, evidence: bool = False, token: bool = True
) -> verification_pb2.Decision:
    """`evidence`: the principal may see scores, LLRs and thresholds; without it the decision
    carries the outcome, net speech, quality, factors and attempts, and no scoring oracle.
    `token`: the assertion's bearer token goes along (the call's own stream, a telephony
    system watching it); else only the assertion's id and claims."""
    out = verification_pb2.Decision(
        outcome=OUTCOMES[decision.outcome],
        session_id=session_id,
        sequence=decision.sequence,
        net_speech_seconds=decision.net_speech_s,
        required_net_speech_seconds=decision.required_net_speech_s,
        step_up_factors=[FACTOR_PB[f] for f in decision.step_up_factors],
        assertion=assertion_pb(decision.assertion, token) if decision.assertion else None,
        attempts_remaining=decision.attempts_remaining,
        retry_after_seconds=min(decision.retry_after_s, 1e9),
        quality_issues=[QUALITY[q] for q in decision.quality],
        policy_id=decision.policy_id,
        final=decision.final,
        reason=decision.reason if evidence else decision.summary or decision.reason,
        fraud=verification_pb2.FraudAssessment(
            risks=[
                verification_pb2.DetectorRisk(
                    detector=r.detector,
                    level=RISK_LEVELS[r.level],
                    reason=r.reason if evidence else r.summary or r.reason,
                    version=r.version,
                    score=r.score if evidence else 0.0,
                    threshold=r.threshold if evidence else 0.0,
                )
                for r in decision.fraud.risks
            ]
        ),
    )
    if evidence:
        out.fused_llr = decision.fused_llr
        out.fused_threshold_llr = decision.fused_threshold_llr
        out.evidence.extend(
            verification_pb2.ModalityEvidence(
                modality=modality_pb(e.modality),
                score=e.score,
                threshold=e.threshold,
                target_far=e.target_far,
                encoder_id=e.encoder_id,
                encoder_version=e.encoder_version,
                enrolled_samples=e.enrolled_samples,
                llr=e.llr,
                profile=e.profile,
                calibrated=e.calibrated,
                # A lone modality has no floor (-inf); the wire carries a finite number.
                floor_llr=e.floor_llr if math.isfinite(e.floor_llr) else 0.0,
            )
            for e in decision.evidence
        )
    return out


def assertion_pb(a: IssuedAssertion, token: bool = True) -> verification_pb2.Assertion:
    return verification_pb2.Assertion(
        token=a.token if token else "",
        id=a.id,
        tenant=a.tenant,
        customer_id=a.customer_id,
        methods=[METHOD_PB[m] for m in a.methods if m in METHOD_PB],
        assurance_level=a.assurance_level,
        channel=CHANNEL_PB.get(a.channel, common_pb2.CHANNEL_UNSPECIFIED),
        issued_unix_ms=int(a.issued_at * 1000),
        expires_unix_ms=int(a.expires_at * 1000),
        key_id=a.key_id,
    )


def audit_pb(e: AuditEvent) -> assurance_pb2.AuditEvent:
    return assurance_pb2.AuditEvent(
        id=e.id,
        time_unix_ms=e.time_ms,
        tenant=e.tenant,
        actor=e.actor,
        action=e.action,
        customer_id=e.customer_id,
        outcome=e.outcome,
        details=json.dumps(e.details, sort_keys=True),
    )
