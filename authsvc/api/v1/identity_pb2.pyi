from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tenant(_message.Message):
    __slots__ = ("name", "sector", "created_unix_ms", "created_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    sector: str
    created_unix_ms: int
    created_by: str
    def __init__(self, name: _Optional[str] = ..., sector: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., created_by: _Optional[str] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "sector")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SECTOR_FIELD_NUMBER: _ClassVar[int]
    name: str
    sector: str
    def __init__(self, name: _Optional[str] = ..., sector: _Optional[str] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class Credential(_message.Message):
    __slots__ = ("id", "tenant", "kind", "roles", "subject", "description", "created_unix_ms", "created_by", "expires_unix_ms", "revoked_unix_ms", "last_used_unix_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REVOKED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    kind: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    description: str
    created_unix_ms: int
    created_by: str
    expires_unix_ms: int
    revoked_unix_ms: int
    last_used_unix_ms: int
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., kind: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., created_by: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ..., revoked_unix_ms: _Optional[int] = ..., last_used_unix_ms: _Optional[int] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant", "roles", "description", "expires_unix_ms", "audiohook_client_secret")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    AUDIOHOOK_CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    description: str
    expires_unix_ms: int
    audiohook_client_secret: bool
    def __init__(self, tenant: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ..., audiohook_client_secret: _Optional[bool] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("credential", "api_key", "audiohook_client_secret")
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    AUDIOHOOK_CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    credential: Credential
    api_key: str
    audiohook_client_secret: str
    def __init__(self, credential: _Optional[_Union[Credential, _Mapping]] = ..., api_key: _Optional[str] = ..., audiohook_client_secret: _Optional[str] = ...) -> None: ...

class MapCertificateRequest(_message.Message):
    __slots__ = ("tenant", "subject", "roles", "description", "expires_unix_ms")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    subject: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    description: str
    expires_unix_ms: int
    def __init__(self, tenant: _Optional[str] = ..., subject: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., expires_unix_ms: _Optional[int] = ...) -> None: ...

class ListCredentialsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListCredentialsResponse(_message.Message):
    __slots__ = ("credentials",)
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[Credential]
    def __init__(self, credentials: _Optional[_Iterable[_Union[Credential, _Mapping]]] = ...) -> None: ...

class RevokeCredentialRequest(_message.Message):
    __slots__ = ("tenant", "credential_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    credential_id: str
    def __init__(self, tenant: _Optional[str] = ..., credential_id: _Optional[str] = ...) -> None: ...

class SetTwilioAuthTokenRequest(_message.Message):
    __slots__ = ("tenant", "auth_token")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    auth_token: str
    def __init__(self, tenant: _Optional[str] = ..., auth_token: _Optional[str] = ...) -> None: ...

class SetTwilioAuthTokenResponse(_message.Message):
    __slots__ = ("stream_path",)
    STREAM_PATH_FIELD_NUMBER: _ClassVar[int]
    stream_path: str
    def __init__(self, stream_path: _Optional[str] = ...) -> None: ...
