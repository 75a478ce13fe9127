from authsvc.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpireCustomersRequest(_message.Message):
    __slots__ = ("tenant", "dry_run", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    dry_run: bool
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., dry_run: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ExpiredCustomer(_message.Message):
    __slots__ = ("customer_id", "last_active_unix_ms", "templates")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    last_active_unix_ms: int
    templates: int
    def __init__(self, customer_id: _Optional[str] = ..., last_active_unix_ms: _Optional[int] = ..., templates: _Optional[int] = ...) -> None: ...

class ExpireCustomersResponse(_message.Message):
    __slots__ = ("customers", "retention_days", "cutoff_unix_ms", "dry_run", "more")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[ExpiredCustomer]
    retention_days: int
    cutoff_unix_ms: int
    dry_run: bool
    more: bool
    def __init__(self, customers: _Optional[_Iterable[_Union[ExpiredCustomer, _Mapping]]] = ..., retention_days: _Optional[int] = ..., cutoff_unix_ms: _Optional[int] = ..., dry_run: _Optional[bool] = ..., more: _Optional[bool] = ...) -> None: ...

class EnrollFromSessionRequest(_message.Message):
    __slots__ = ("tenant", "session_id", "customer_id", "override_voice_mismatch")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_VOICE_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    session_id: str
    customer_id: str
    override_voice_mismatch: bool
    def __init__(self, tenant: _Optional[str] = ..., session_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., override_voice_mismatch: _Optional[bool] = ...) -> None: ...

class EnrollFromSessionResponse(_message.Message):
    __slots__ = ("added", "call_net_speech_seconds", "voice_enrollment", "same_voice_customers")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    CALL_NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VOICE_ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    SAME_VOICE_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    added: bool
    call_net_speech_seconds: float
    voice_enrollment: VoiceEnrollment
    same_voice_customers: int
    def __init__(self, added: _Optional[bool] = ..., call_net_speech_seconds: _Optional[float] = ..., voice_enrollment: _Optional[_Union[VoiceEnrollment, _Mapping]] = ..., same_voice_customers: _Optional[int] = ...) -> None: ...

class VoiceEnrollment(_message.Message):
    __slots__ = ("complete", "net_speech_seconds", "required_net_speech_seconds", "calls")
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    complete: bool
    net_speech_seconds: float
    required_net_speech_seconds: float
    calls: int
    def __init__(self, complete: _Optional[bool] = ..., net_speech_seconds: _Optional[float] = ..., required_net_speech_seconds: _Optional[float] = ..., calls: _Optional[int] = ...) -> None: ...

class ChangeAuthorization(_message.Message):
    __slots__ = ("assertion",)
    ASSERTION_FIELD_NUMBER: _ClassVar[int]
    assertion: str
    def __init__(self, assertion: _Optional[str] = ...) -> None: ...

class EnrollVoiceRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "format", "audio", "label", "actor", "authorization")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    format: _common_pb2.AudioFormat
    audio: bytes
    label: str
    actor: str
    authorization: ChangeAuthorization
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.AudioFormat, _Mapping]] = ..., audio: _Optional[bytes] = ..., label: _Optional[str] = ..., actor: _Optional[str] = ..., authorization: _Optional[_Union[ChangeAuthorization, _Mapping]] = ...) -> None: ...

class EnrollVoiceResponse(_message.Message):
    __slots__ = ("customer", "added", "net_speech_seconds", "quality_issues", "same_voice_customers")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_ISSUES_FIELD_NUMBER: _ClassVar[int]
    SAME_VOICE_CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    added: bool
    net_speech_seconds: float
    quality_issues: _containers.RepeatedScalarFieldContainer[_common_pb2.QualityIssue]
    same_voice_customers: int
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ..., added: _Optional[bool] = ..., net_speech_seconds: _Optional[float] = ..., quality_issues: _Optional[_Iterable[_Union[_common_pb2.QualityIssue, str]]] = ..., same_voice_customers: _Optional[int] = ...) -> None: ...

class RegisterCustomerRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "methods", "opt_out_biometrics", "consent_text_version", "actor", "confirm_template_removal", "authorization")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    OPT_OUT_BIOMETRICS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_TEMPLATE_REMOVAL_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    methods: _containers.RepeatedScalarFieldContainer[_common_pb2.AuthMethod]
    opt_out_biometrics: bool
    consent_text_version: str
    actor: str
    confirm_template_removal: bool
    authorization: ChangeAuthorization
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., methods: _Optional[_Iterable[_Union[_common_pb2.AuthMethod, str]]] = ..., opt_out_biometrics: _Optional[bool] = ..., consent_text_version: _Optional[str] = ..., actor: _Optional[str] = ..., confirm_template_removal: _Optional[bool] = ..., authorization: _Optional[_Union[ChangeAuthorization, _Mapping]] = ...) -> None: ...

class RegisterCustomerResponse(_message.Message):
    __slots__ = ("customer", "templates_removed")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    templates_removed: int
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ..., templates_removed: _Optional[int] = ...) -> None: ...

class EnrollKeystrokesRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "samples", "authorization")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    samples: _containers.RepeatedCompositeFieldContainer[_common_pb2.KeystrokeSample]
    authorization: ChangeAuthorization
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[_common_pb2.KeystrokeSample, _Mapping]]] = ..., authorization: _Optional[_Union[ChangeAuthorization, _Mapping]] = ...) -> None: ...

class EnrollKeystrokesResponse(_message.Message):
    __slots__ = ("customer", "samples_added", "samples_already_enrolled")
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ADDED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ALREADY_ENROLLED_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    samples_added: int
    samples_already_enrolled: int
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ..., samples_added: _Optional[int] = ..., samples_already_enrolled: _Optional[int] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("text_version", "recorded_unix_ms", "biometrics_allowed")
    TEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BIOMETRICS_ALLOWED_FIELD_NUMBER: _ClassVar[int]
    text_version: str
    recorded_unix_ms: int
    biometrics_allowed: bool
    def __init__(self, text_version: _Optional[str] = ..., recorded_unix_ms: _Optional[int] = ..., biometrics_allowed: _Optional[bool] = ...) -> None: ...

class TemplateSummary(_message.Message):
    __slots__ = ("modality", "encoder_id", "encoder_version", "sample_count", "updated_unix_ms")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    ENCODER_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    modality: _common_pb2.Modality
    encoder_id: str
    encoder_version: str
    sample_count: int
    updated_unix_ms: int
    def __init__(self, modality: _Optional[_Union[_common_pb2.Modality, str]] = ..., encoder_id: _Optional[str] = ..., encoder_version: _Optional[str] = ..., sample_count: _Optional[int] = ..., updated_unix_ms: _Optional[int] = ...) -> None: ...

class Customer(_message.Message):
    __slots__ = ("tenant", "customer_id", "created_unix_ms", "templates", "methods", "opted_out", "consent", "factors", "voice_enrollment", "last_active_unix_ms", "expired_unix_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    OPTED_OUT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    VOICE_ENROLLMENT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    created_unix_ms: int
    templates: _containers.RepeatedCompositeFieldContainer[TemplateSummary]
    methods: _containers.RepeatedScalarFieldContainer[_common_pb2.AuthMethod]
    opted_out: bool
    consent: Consent
    factors: _containers.RepeatedScalarFieldContainer[_common_pb2.SecondFactor]
    voice_enrollment: VoiceEnrollment
    last_active_unix_ms: int
    expired_unix_ms: int
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., templates: _Optional[_Iterable[_Union[TemplateSummary, _Mapping]]] = ..., methods: _Optional[_Iterable[_Union[_common_pb2.AuthMethod, str]]] = ..., opted_out: _Optional[bool] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ..., factors: _Optional[_Iterable[_Union[_common_pb2.SecondFactor, str]]] = ..., voice_enrollment: _Optional[_Union[VoiceEnrollment, _Mapping]] = ..., last_active_unix_ms: _Optional[int] = ..., expired_unix_ms: _Optional[int] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("tenant", "customer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ListCustomersRequest(_message.Message):
    __slots__ = ("tenant", "page_size", "page_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    page_size: int
    page_token: str
    def __init__(self, tenant: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCustomersResponse(_message.Message):
    __slots__ = ("customers", "next_page_token")
    CUSTOMERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customers: _containers.RepeatedCompositeFieldContainer[Customer]
    next_page_token: str
    def __init__(self, customers: _Optional[_Iterable[_Union[Customer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCustomerRequest(_message.Message):
    __slots__ = ("tenant", "customer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class DeleteCustomerResponse(_message.Message):
    __slots__ = ("templates_deleted", "secrets_deleted")
    TEMPLATES_DELETED_FIELD_NUMBER: _ClassVar[int]
    SECRETS_DELETED_FIELD_NUMBER: _ClassVar[int]
    templates_deleted: int
    secrets_deleted: int
    def __init__(self, templates_deleted: _Optional[int] = ..., secrets_deleted: _Optional[int] = ...) -> None: ...

class UnlockCustomerRequest(_message.Message):
    __slots__ = ("tenant", "customer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class UnlockCustomerResponse(_message.Message):
    __slots__ = ("factors",)
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    factors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, factors: _Optional[_Iterable[str]] = ...) -> None: ...
