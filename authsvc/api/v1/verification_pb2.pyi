from authsvc.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_PENDING: _ClassVar[Outcome]
    OUTCOME_AUTHENTICATED: _ClassVar[Outcome]
    OUTCOME_REJECTED: _ClassVar[Outcome]
    OUTCOME_NOT_ENROLLED: _ClassVar[Outcome]
    OUTCOME_STEP_UP_REQUIRED: _ClassVar[Outcome]
    OUTCOME_OPTED_OUT: _ClassVar[Outcome]
    OUTCOME_EXPIRED: _ClassVar[Outcome]

class RiskLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_LEVEL_UNSPECIFIED: _ClassVar[RiskLevel]
    RISK_LEVEL_LOW: _ClassVar[RiskLevel]
    RISK_LEVEL_HIGH: _ClassVar[RiskLevel]
    RISK_LEVEL_NOT_ENOUGH_AUDIO: _ClassVar[RiskLevel]
    RISK_LEVEL_UNAVAILABLE: _ClassVar[RiskLevel]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_PENDING: Outcome
OUTCOME_AUTHENTICATED: Outcome
OUTCOME_REJECTED: Outcome
OUTCOME_NOT_ENROLLED: Outcome
OUTCOME_STEP_UP_REQUIRED: Outcome
OUTCOME_OPTED_OUT: Outcome
OUTCOME_EXPIRED: Outcome
RISK_LEVEL_UNSPECIFIED: RiskLevel
RISK_LEVEL_LOW: RiskLevel
RISK_LEVEL_HIGH: RiskLevel
RISK_LEVEL_NOT_ENOUGH_AUDIO: RiskLevel
RISK_LEVEL_UNAVAILABLE: RiskLevel

class VerifyRequest(_message.Message):
    __slots__ = ("start", "audio", "keystrokes", "step_up", "send_code", "claim")
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    KEYSTROKES_FIELD_NUMBER: _ClassVar[int]
    STEP_UP_FIELD_NUMBER: _ClassVar[int]
    SEND_CODE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    start: SessionStart
    audio: AudioChunk
    keystrokes: _common_pb2.KeystrokeSample
    step_up: StepUpAnswer
    send_code: OneTimeCodeRequest
    claim: Claim
    def __init__(self, start: _Optional[_Union[SessionStart, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., keystrokes: _Optional[_Union[_common_pb2.KeystrokeSample, _Mapping]] = ..., step_up: _Optional[_Union[StepUpAnswer, _Mapping]] = ..., send_code: _Optional[_Union[OneTimeCodeRequest, _Mapping]] = ..., claim: _Optional[_Union[Claim, _Mapping]] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class ClaimIdentityRequest(_message.Message):
    __slots__ = ("tenant", "session_id", "customer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    customer_id: str
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ClaimIdentityResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class WatchSessionRequest(_message.Message):
    __slots__ = ("tenant", "session_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class StepUpAnswer(_message.Message):
    __slots__ = ("factor", "code")
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    factor: _common_pb2.SecondFactor
    code: str
    def __init__(self, factor: _Optional[_Union[_common_pb2.SecondFactor, str]] = ..., code: _Optional[str] = ...) -> None: ...

class OneTimeCodeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionStart(_message.Message):
    __slots__ = ("tenant", "customer_id", "channel", "audio_format", "session_id", "assertion")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    ASSERTION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    channel: _common_pb2.Channel
    audio_format: _common_pb2.AudioFormat
    session_id: str
    assertion: str
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., audio_format: _Optional[_Union[_common_pb2.AudioFormat, _Mapping]] = ..., session_id: _Optional[str] = ..., assertion: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ModalityEvidence(_message.Message):
    __slots__ = ("modality", "score", "threshold", "target_far", "encoder_id", "encoder_version", "enrolled_samples", "llr", "profile", "calibrated", "floor_llr")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_FAR_FIELD_NUMBER: _ClassVar[int]
    ENCODER_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LLR_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    FLOOR_LLR_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    score: float
    threshold: float
    target_far: float
    encoder_id: str
    encoder_version: str
    enrolled_samples: int
    llr: float
    profile: str
    calibrated: bool
    floor_llr: float
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., target_far: _Optional[float] = ..., encoder_id: _Optional[str] = ..., encoder_version: _Optional[str] = ..., enrolled_samples: _Optional[int] = ..., llr: _Optional[float] = ..., profile: _Optional[str] = ..., calibrated: _Optional[bool] = ..., floor_llr: _Optional[float] = ...) -> None: ...

class Assertion(_message.Message):
    __slots__ = ("token", "id", "tenant", "customer_id", "methods", "assurance_level", "channel", "issued_unix_ms", "expires_unix_ms", "key_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    ASSURANCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    id: str
    tenant: str
    customer_id: str
    methods: _containers.RepeatedScalarFieldContainer[_common_pb2.AuthMethod]
    assurance_level: str
    channel: _common_pb2.Channel
    issued_unix_ms: int
    expires_unix_ms: int
    key_id: str
    def __init__(self, token: _Optional[str] = ..., id: _Optional[str] = ..., tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[_common_pb2.AuthMethod, str]]] = ..., assurance_level: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., issued_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., key_id: _Optional[str] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("outcome", "session_id", "sequence", "net_speech_seconds", "required_net_speech_seconds", "evidence", "quality_issues", "policy_id", "final", "reason", "step_up_factors", "fused_llr", "fused_threshold_llr", "assertion", "attempts_remaining", "retry_after_seconds", "fraud")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_ISSUES_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STEP_UP_FACTORS_FIELD_NUMBER: _ClassVar[int]
    FUSED_LLR_FIELD_NUMBER: _ClassVar[int]
    FUSED_THRESHOLD_LLR_FIELD_NUMBER: _ClassVar[int]
    ASSERTION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAUD_FIELD_NUMBER: _ClassVar[int]
    outcome: Outcome
    session_id: str
    sequence: int
    net_speech_seconds: float
    required_net_speech_seconds: float
    evidence: _containers.RepeatedCompositeFieldContainer[ModalityEvidence]
    quality_issues: _containers.RepeatedScalarFieldContainer[_common_pb2.QualityIssue]
    policy_id: str
    final: bool
    reason: str
    step_up_factors: _containers.RepeatedScalarFieldContainer[_common_pb2.SecondFactor]
    fused_llr: float
    fused_threshold_llr: float
    assertion: Assertion
    attempts_remaining: int
    retry_after_seconds: float
    fraud: FraudAssessment
    def __init__(self, outcome: _Optional[_Union[Outcome, str]] = ..., session_id: _Optional[str] = ..., sequence: _Optional[int] = ..., net_speech_seconds: _Optional[float] = ..., required_net_speech_seconds: _Optional[float] = ..., evidence: _Optional[_Iterable[_Union[ModalityEvidence, _Mapping]]] = ..., quality_issues: _Optional[_Iterable[_Union[_common_pb2.QualityIssue, str]]] = ..., policy_id: _Optional[str] = ..., final: _Optional[bool] = ..., reason: _Optional[str] = ..., step_up_factors: _Optional[_Iterable[_Union[_common_pb2.SecondFactor, str]]] = ..., fused_llr: _Optional[float] = ..., fused_threshold_llr: _Optional[float] = ..., assertion: _Optional[_Union[Assertion, _Mapping]] = ..., attempts_remaining: _Optional[int] = ..., retry_after_seconds: _Optional[float] = ..., fraud: _Optional[_Union[FraudAssessment, _Mapping]] = ...) -> None: ...

class FraudAssessment(_message.Message):
    __slots__ = ("risks",)
    RISKS_FIELD_NUMBER: _ClassVar[int]
    risks: _containers.RepeatedCompositeFieldContainer[DetectorRisk]
    def __init__(self, risks: _Optional[_Iterable[_Union[DetectorRisk, _Mapping]]] = ...) -> None: ...

class DetectorRisk(_message.Message):
    __slots__ = ("detector", "level", "reason", "version", "score", "threshold")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    detector: str
    level: RiskLevel
    reason: str
    version: str
    score: float
    threshold: float
    def __init__(self, detector: _Optional[str] = ..., level: _Optional[_Union[RiskLevel, str]] = ..., reason: _Optional[str] = ..., version: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...
