"""Mapping between protobuf messages and domain objects; no decisions here."""

from __future__ import annotations

from authsvc.api.v1 import common_pb2, enrollment_pb2, verification_pb2
from authsvc.audio.codecs import Encoding
from authsvc.audio.quality import Quality
from authsvc.enrollment import TemplateSummary
from authsvc.policy.engine import Decision, Outcome
from authsvc.store.base import CustomerRecord

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
MODALITIES = {
    "voice": common_pb2.MODALITY_VOICE,
    "keystroke_fixed": common_pb2.MODALITY_KEYSTROKE_FIXED,
    "keystroke_free": common_pb2.MODALITY_KEYSTROKE_FREE,
}
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
}


def customer_pb(record: CustomerRecord, templates: list[TemplateSummary]) -> enrollment_pb2.Customer:
    return enrollment_pb2.Customer(
        tenant=record.tenant,
        customer_id=record.customer_id,
        created_unix_ms=record.created_ms,
        templates=[
            enrollment_pb2.TemplateSummary(
                modality=MODALITIES.get(t.modality, common_pb2.MODALITY_UNSPECIFIED),
                encoder_id=t.encoder_id,
                encoder_version=t.encoder_version,
                sample_count=t.sample_count,
                updated_unix_ms=t.updated_ms,
            )
            for t in templates
        ],
    )


def decision_pb(decision: Decision, session_id: str) -> verification_pb2.Decision:
    return verification_pb2.Decision(
        outcome=OUTCOMES[decision.outcome],
        session_id=session_id,
        sequence=decision.sequence,
        net_speech_seconds=decision.net_speech_s,
        required_net_speech_seconds=decision.required_net_speech_s,
        evidence=[
            verification_pb2.ModalityEvidence(
                modality=common_pb2.MODALITY_VOICE,
                score=e.score,
                threshold=e.threshold,
                target_far=e.target_far,
                encoder_id=e.encoder_id,
                encoder_version=e.encoder_version,
                enrolled_samples=e.enrolled_samples,
            )
            for e in decision.evidence
        ],
        quality_issues=[QUALITY[q] for q in decision.quality],
        policy_id=decision.policy_id,
        final=decision.final,
        reason=decision.reason,
    )
