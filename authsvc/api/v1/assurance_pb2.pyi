from authsvc.api.v1 import common_pb2 as _common_pb2
from authsvc.api.v1 import enrollment_pb2 as _enrollment_pb2
from authsvc.api.v1 import verification_pb2 as _verification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollTotpRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "account_name", "issuer", "authorization")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_NAME_FIELD_NUMBER: _ClassVar[int]
    ISSUER_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    account_name: str
    issuer: str
    authorization: _enrollment_pb2.ChangeAuthorization
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., account_name: _Optional[str] = ..., issuer: _Optional[str] = ..., authorization: _Optional[_Union[_enrollment_pb2.ChangeAuthorization, _Mapping]] = ...) -> None: ...

class EnrollTotpResponse(_message.Message):
    __slots__ = ("provisioning_uri",)
    PROVISIONING_URI_FIELD_NUMBER: _ClassVar[int]
    provisioning_uri: str
    def __init__(self, provisioning_uri: _Optional[str] = ...) -> None: ...

class ConfirmTotpRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "code")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    code: str
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class ConfirmTotpResponse(_message.Message):
    __slots__ = ("confirmed",)
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    confirmed: bool
    def __init__(self, confirmed: _Optional[bool] = ...) -> None: ...

class SetCodeDestinationRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "destination", "authorization")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    destination: str
    authorization: _enrollment_pb2.ChangeAuthorization
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., destination: _Optional[str] = ..., authorization: _Optional[_Union[_enrollment_pb2.ChangeAuthorization, _Mapping]] = ...) -> None: ...

class SetCodeDestinationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ValidateAssertionRequest(_message.Message):
    __slots__ = ("tenant", "token", "channel")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    token: str
    channel: _common_pb2.Channel
    def __init__(self, tenant: _Optional[str] = ..., token: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ...) -> None: ...

class ValidateAssertionResponse(_message.Message):
    __slots__ = ("assertion",)
    ASSERTION_FIELD_NUMBER: _ClassVar[int]
    assertion: _verification_pb2.Assertion
    def __init__(self, assertion: _Optional[_Union[_verification_pb2.Assertion, _Mapping]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("tenant", "customer_id", "page_size", "page_token", "action", "outcome", "since_unix_ms", "until_unix_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    customer_id: str
    page_size: int
    page_token: str
    action: str
    outcome: str
    since_unix_ms: int
    until_unix_ms: int
    def __init__(self, tenant: _Optional[str] = ..., customer_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., action: _Optional[str] = ..., outcome: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "time_unix_ms", "tenant", "actor", "action", "customer_id", "outcome", "details")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: int
    time_unix_ms: int
    tenant: str
    actor: str
    action: str
    customer_id: str
    outcome: str
    details: str
    def __init__(self, id: _Optional[int] = ..., time_unix_ms: _Optional[int] = ..., tenant: _Optional[str] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., customer_id: _Optional[str] = ..., outcome: _Optional[str] = ..., details: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerifyAuditChainRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class VerifyAuditChainResponse(_message.Message):
    __slots__ = ("intact", "rows_checked", "first_bad_id", "problem", "head_hash", "unchained_rows")
    INTACT_FIELD_NUMBER: _ClassVar[int]
    ROWS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    FIRST_BAD_ID_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    UNCHAINED_ROWS_FIELD_NUMBER: _ClassVar[int]
    intact: bool
    rows_checked: int
    first_bad_id: int
    problem: str
    head_hash: str
    unchained_rows: int
    def __init__(self, intact: _Optional[bool] = ..., rows_checked: _Optional[int] = ..., first_bad_id: _Optional[int] = ..., problem: _Optional[str] = ..., head_hash: _Optional[str] = ..., unchained_rows: _Optional[int] = ...) -> None: ...
